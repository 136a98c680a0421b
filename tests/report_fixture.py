"""Report test helpers: a fake but complete run directory, and a headless-Chromium check of a report."""

from __future__ import annotations

import json
import math
import os
import random
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

ARTIFACTS = Path(os.environ.get("PRIMER_TEST_ARTIFACTS", Path(__file__).resolve().parent / "artifacts"))


def make_run_dir(rd: Path, stages: tuple[str, ...] = ("synth", "curate", "tokenize", "train", "eval", "audit", "export",
                                                      "tune"),
                 failed: str | None = None) -> Path:
    rng = random.Random(0)
    rd.mkdir(parents=True, exist_ok=True)
    no_bad = {"count": 0, "examples": []}
    summaries = {
        "synth": {
            "teacher": "bundled:SmolLM2-135M-Instruct", "documents": 120, "tokens": 48_000, "tokens_per_s": 161.2,
            "rejects": {"too_short": 4, "repetitive": 2, "truncated": 7},
            "by_format": {"textbook": 40, "exercises": 30, "story": 30, "dialogue": 20},
            "by_audience": {"young children": 30, "middle school": 50, "college": 40},
            "verification": {"exercises": {"verified": 30, "failed": 41, "unverifiable": 12, "timeout": 1}},
            "near_dup_rate": 0.004, "distinct_ngram_ratio": 0.71,
            "samples": [{"title": "Photosynthesis", "format": "textbook", "audience": "middle school",
                         "text": "Plants make food from light. <script>alert(1)</script> " * 5}],
            "data": ["synth/data-00000.jsonl"], "bad_input": no_bad,
        },
        "curate": {
            "web_input": "c4_sample", "sources": {"synth": {"read": 120, "kept": 101}, "web": {"read": 300, "kept": 140}},
            "documents_in": 420, "documents_kept": 241,
            "rejects": {"min_words": 20, "edu_score<3": 130, "near_duplicate": 15, "decontaminated": 4,
                        "symbol_ratio": 10},
            "edu_scores": [min(5, max(0, rng.gauss(2.6, 1.1))) for _ in range(420)], "edu_threshold": 3.0,
            "dedup": {"exact": 5, "near": 10}, "dedup_settings": "MinHash 5-word shingles, 25 bands x 4 rows",
            "decontam": {"dropped": 4, "matches": {"gsm8k": 3, "hellaswag": 1}, "items": 4,
                         "n": {"gsm8k": 13, "hellaswag": 13, "piqa": 8}, "unchecked": {"piqa": 151}},
            "samples": [{"title": "web-17", "id": "web-17", "source": "web", "edu_score": 3.4,
                         "text": "The water cycle ..."}],
            "data": ["curate/data/synth-00000.jsonl.gz"],
            "quality": {"model": "bundled", "window_tokens": 256, "language": "en",
                        "limits": {"nll": {"max": 5.2}, "nll_low": {"min": 1.0}, "caps": {"max": 0.3}}},
            "quality_nll": {"1.8": 3, "2.1": 40, "2.4": 61, "2.9": 12, "5.6": 2},
            "bad_input": {"count": 2, "examples": ["curate/input/web/000-c4.jsonl:7: malformed JSON (Expecting "
                                                   "value at column 1)", "curate/input/web/000-c4.jsonl:9: missing "
                                                   "field 'text'"]},
        },
        "tokenize": {"tokenizer": "bpe", "vocab_size": 4096, "train_documents": 230, "train_tokens": 210_000,
                     "val_documents": 11, "val_tokens": 11_000, "tokenizer_hash": "ab" * 32, "bad_input": no_bad},
        "train": {
            "shape": "tiny-8m", "params": 3_100_000, "steps": 300, "tokens": 2_400_000, "tokens_per_s": 9100.0,
            "mfu": 0.01, "final_train_loss": 3.1, "final_val_loss": 3.3,
            "curve": {"step": list(range(0, 300, 5)), "loss": [8 * math.exp(-s / 80) + 3 for s in range(0, 300, 5)]},
            "val_curve": {"step": [100, 200, 300], "loss": [4.5, 3.6, 3.3]},
            "checkpoint": "train/ckpt", "samples": ["Once upon a time"],
        },
        "eval": {
            "skipped": None, "model": "our model", "teacher": "SmolLM2-135M-Instruct",
            "tasks": {"piqa": {"metric": "acc_norm", "n": 100, "shots": 0, "model": 0.55, "model_stderr": 0.05,
                               "teacher": 0.66, "teacher_stderr": 0.047, "published": 66.3, "chance": 0.5},
                      "arc_easy": {"metric": "acc_norm", "n": 100, "shots": 0, "model": 0.31, "model_stderr": 0.046,
                                   "teacher": 0.52, "teacher_stderr": 0.05, "chance": 0.25}},
            "generations": [{"prompt": "Photosynthesis is", "model": "a process <b>that</b> ...",
                             "teacher": "the process by which plants ..."}],
        },
        "audit": {
            "skipped": None, "task": "gsm8k", "items": 50, "metric": "exact_match,flexible-extract",
            "baselines": {"original": {"n": 50, "acc": 0.2, "ci": [0.1, 0.32], "at_chance": False}},
            "gaps": [{"task": "gsm8k", "suite": "numbers", "description": "new numbers", "baseline": "original",
                      "n": 50, "original": 0.2, "perturbed": 0.1, "drop": 0.1, "ci_low": 0.02, "ci_high": 0.18,
                      "significant": True},
                     {"task": "arc_easy", "suite": "shuffle options", "description": "options reordered",
                      "baseline": "mcf", "n": 100, "original": 0.31, "perturbed": 0.3, "drop": 0.01, "ci_low": -0.05,
                      "ci_high": 0.07, "significant": False}],
            "contamination": [{"task": "gsm8k", "signal": "ngram", "value": "no evidence",
                               "verdict": "no evidence: 0 corpus documents were read"}],
            "bad_input": no_bad,
        },
        "tune": {"skipped": None, "model": "bundled", "conversations": 24, "pairs": 7,
                 "sft_curve": {"step": [1, 2, 3], "loss": [1.84, 1.5, 1.17]},
                 "dpo_curve": {"step": [1, 2, 3], "loss": [0.69, 0.6, 0.5]},
                 "dpo_margin": {"step": [1, 2, 3], "loss": [0.0, 0.4, 1.3]},
                 "rows": [{"task": "ifeval", "metric": "prompt_level_loose_acc", "n": 16, "before": 0.188,
                           "after": 0.313, "diff_ci": [0.0, 0.313]},
                          {"task": "xstest", "metric": "compliance_rate,unsafe", "n": 200, "before": 0.92,
                           "after": 0.95, "before_ci": [0.876, 0.95], "after_ci": [0.91, 0.973],
                           "diff_ci": [0.0, 0.065]}],
                 "checkpoint": "tune/dpo/checkpoints/step_0000012",
                 "seconds": {"data": 400.0, "tune": 200.0, "eval": 180.0}},
        "export": {"path": "runs/fixture/export/model-q4_0.gguf", "format": "gguf", "arch": "llama", "quant": "q4_0",
                   "bytes": 2_345_678, "chat": "primer chat --model runs/fixture/export/model-q4_0.gguf"},
    }
    run_stages = []
    for name in stages:
        d = rd / name
        d.mkdir(exist_ok=True)
        status = "failed" if name == failed else "done"
        rec = {"name": name, "fingerprint": f"{name}0123456789", "status": status, "seconds": rng.uniform(1, 200),
               "finished": "2025-01-01T00:00:00+00:00", "config": {}}
        if status == "done":
            rec["summary"] = summaries[name]
        else:
            rec["error"] = "PrimerError: something broke"
        (d / "stage.json").write_text(json.dumps(rec))
        run_stages.append({"name": name, "status": status, "seconds": rec["seconds"], "fingerprint": rec["fingerprint"]})
        if failed == name:
            break
    run = {"primer_version": "0.1.0", "recipe_path": "recipes/default.toml", "command": "primer run",
           "recipe": {"run": {"name": "fixture"}, "train": {"shape": "tiny-8m", "lr": 0.001}},
           "git_sha": "abc", "packages": {"torch": "2.13.0"}, "hardware": {"cpu_count": 2},
           "started": "2025-01-01T00:00:00+00:00", "finished": "2025-01-01T00:10:00+00:00",
           "status": "failed" if failed else "done", "stages": run_stages}
    if failed:
        run["failed_stage"] = failed
    (rd / "run.json").write_text(json.dumps(run))
    return rd


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def chromium() -> str:
    path = chromium_path()
    if path:
        return path
    pytest.skip("headless Chromium not installed (Debian: apt-get install chromium); report rendering not checked")


def _chrome(exe: str, *args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
             f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", *args],
            capture_output=True, text=True, timeout=timeout,
        )


def check_in_chromium(report: Path, name: str) -> Path:
    """Screenshot `report` into the artifacts dir and check that every <img> decoded and nothing was blocked."""
    exe = chromium()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / f"{name}.png"
    shot.unlink(missing_ok=True)
    r = _chrome(exe, f"--screenshot={shot}", "--window-size=1280,4000", "--hide-scrollbars", report.resolve().as_uri())
    assert shot.is_file() and shot.stat().st_size > 20_000, r.stderr[-3000:]
    console = [line for line in r.stderr.splitlines() if "CONSOLE" in line or "Refused" in line
               or "net::ERR" in line]
    assert not console, console

    # The report itself has no script (its CSP forbids any); a probe copy adds one that counts images
    # whose bitmap decoded (naturalWidth > 0) and writes the result into the DOM for --dump-dom.
    html = report.read_text()
    n_img = html.count("<img ")
    probe = report.with_name(report.stem + ".probe.html")
    script = ("<script>window.addEventListener('load',()=>{const im=[...document.images];"
              "const ok=im.filter(i=>i.complete&&i.naturalWidth>0&&i.naturalHeight>0).length;"
              "const p=document.createElement('p');p.id='probe';p.textContent='IMAGES '+ok+'/'+im.length;"
              "document.body.appendChild(p);});</script>")
    probe.write_text(re.sub(r"<meta http-equiv=\"Content-Security-Policy\"[^>]*>", "", html)
                     .replace("</body>", script + "</body>"))
    r = _chrome(exe, "--dump-dom", "--virtual-time-budget=10000", probe.resolve().as_uri())
    m = re.search(r"IMAGES (\d+)/(\d+)", r.stdout)
    assert m, r.stderr[-3000:]
    assert int(m.group(2)) == n_img and int(m.group(1)) == n_img, m.group(0)
    return shot


