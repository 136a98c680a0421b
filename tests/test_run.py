"""`primer run`: caching by fingerprint, partial re-runs, failures that name their stage, run.json.

The orchestration tests use tiny in-process fake stages (milliseconds); the end-to-end test runs
the real stages on recipes/mini.toml (marked slow; CI runs it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from primer.config import read_recipe_file
from primer.errors import PrimerError
from primer.pipeline.runner import StageFailed, load_recipe, run_recipe
from primer.pipeline.spec import StageSpec

from report_fixture import check_in_chromium, chromium_path

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get("PRIMER_TEST_ARTIFACTS", REPO / "tests" / "artifacts"))


@dataclass
class ACfg:
    n: int = 3
    """How many items to make."""


@dataclass
class BCfg:
    scale: float = 2.0
    """Multiplier."""
    fail: bool = False
    """Raise, to test failure handling."""


@dataclass
class CCfg:
    label: str = "c"
    """A label."""


CALLS: list[str] = []


def _a(cfg, ctx):
    CALLS.append("a")
    (ctx.out_dir / "items.json").write_text(json.dumps(list(range(cfg.n))))
    return {"n": cfg.n}


def _b(cfg, ctx):
    CALLS.append("b")
    if cfg.fail:
        raise PrimerError("b was told to fail")
    items = json.loads((ctx.inputs["a"] / "items.json").read_text())
    (ctx.out_dir / "scaled.json").write_text(json.dumps([x * cfg.scale for x in items]))
    return {"sum": sum(items) * cfg.scale}


def _c(cfg, ctx):
    CALLS.append("c")
    return {"label": cfg.label, "from_b": ctx.summaries["b"]["sum"]}


FAKE = [
    StageSpec("a", (), lambda: ACfg, _a),
    StageSpec("b", ("a",), lambda: BCfg, _b),
    StageSpec("c", ("b",), lambda: CCfg, _c),
]


def _recipe(tmp_path: Path, text: str):
    p = tmp_path / "r.toml"
    p.write_text(text)
    return load_recipe(p, FAKE), p


def _statuses(record):
    return {s.name: s.status for s in record.stages}


def test_rerun_skips_and_change_reruns_only_downstream(tmp_path):
    CALLS.clear()
    rd = tmp_path / "run"
    r, p = _recipe(tmp_path, "[a]\nn = 4\n[b]\nscale = 3.0\n")
    rec = run_recipe(r, rd, recipe_path=p, stages=FAKE, log=lambda s: None, write_report=False)
    assert _statuses(rec) == {"a": "done", "b": "done", "c": "done"}
    assert CALLS == ["a", "b", "c"]
    assert json.loads((rd / "c" / "stage.json").read_text())["summary"] == {"label": "c", "from_b": 18.0}

    CALLS.clear()  # same recipe: everything skipped
    rec = run_recipe(r, rd, recipe_path=p, stages=FAKE, log=lambda s: None, write_report=False)
    assert _statuses(rec) == {"a": "skipped", "b": "skipped", "c": "skipped"}
    assert CALLS == []

    CALLS.clear()  # change b: b and c re-run, a is kept
    r, p = _recipe(tmp_path, "[a]\nn = 4\n[b]\nscale = 5.0\n")
    rec = run_recipe(r, rd, recipe_path=p, stages=FAKE, log=lambda s: None, write_report=False)
    assert _statuses(rec) == {"a": "skipped", "b": "done", "c": "done"}
    assert CALLS == ["b", "c"]

    CALLS.clear()  # change only the last stage
    r, p = _recipe(tmp_path, "[a]\nn = 4\n[b]\nscale = 5.0\n[c]\nlabel = 'x'\n")
    rec = run_recipe(r, rd, recipe_path=p, stages=FAKE, log=lambda s: None, write_report=False)
    assert _statuses(rec) == {"a": "skipped", "b": "skipped", "c": "done"}
    assert CALLS == ["c"]

    run = json.loads((rd / "run.json").read_text())
    assert run["status"] == "done"
    assert run["recipe"]["b"]["scale"] == 5.0
    assert {"platform", "cpu_count", "python"} <= set(run["hardware"])
    assert "torch" in run["packages"] and "primer" in run["packages"]
    assert all("seconds" in s for s in run["stages"])


def test_failed_stage_names_itself_and_resumes(tmp_path):
    CALLS.clear()
    rd = tmp_path / "run"
    r, p = _recipe(tmp_path, "[b]\nfail = true\n")
    with pytest.raises(StageFailed) as ei:
        run_recipe(r, rd, recipe_path=p, stages=FAKE, log=lambda s: None, write_report=False)
    msg = str(ei.value)
    assert ei.value.stage == "b"
    assert "stage 'b' failed: b was told to fail" in msg
    assert f"primer run {p}" in msg  # the resume hint is the same command
    run = json.loads((rd / "run.json").read_text())
    assert run["status"] == "failed" and run["failed_stage"] == "b"
    assert json.loads((rd / "b" / "stage.json").read_text())["status"] == "failed"
    assert (rd / "b" / "error.log").is_file()
    assert not (rd / "c").exists()

    CALLS.clear()  # fix and resume: a is skipped, b and c run
    r, p = _recipe(tmp_path, "[b]\nfail = false\n")
    rec = run_recipe(r, rd, recipe_path=p, stages=FAKE, log=lambda s: None, write_report=False)
    assert _statuses(rec) == {"a": "skipped", "b": "done", "c": "done"}
    assert CALLS == ["b", "c"]


def test_bug_in_stage_keeps_traceback_in_log(tmp_path):
    def boom(cfg, ctx):
        raise ZeroDivisionError("division by zero")

    stages = [FAKE[0], StageSpec("b", ("a",), lambda: BCfg, boom)]
    r = load_recipe(_recipe(tmp_path, "")[1], stages)
    with pytest.raises(StageFailed, match="stage 'b' failed: division by zero"):
        run_recipe(r, tmp_path / "run", stages=stages, log=lambda s: None, write_report=False)
    assert "ZeroDivisionError" in (tmp_path / "run" / "b" / "error.log").read_text()


@dataclass
class ASummary:
    n: int
    items: list[int]


def test_a_stored_summary_that_does_not_fit_its_type_reruns_the_stage(tmp_path):
    """A summary is read back typed; one that lacks a field (another primer version wrote it) is not
    passed on to the next stages: the stage runs again, and says why."""
    CALLS.clear()
    typed = [StageSpec("a", (), lambda: ACfg, lambda cfg, ctx: CALLS.append("a") or ASummary(cfg.n, [1, 2]), ASummary),
             StageSpec("b", ("a",), lambda: BCfg, lambda cfg, ctx: CALLS.append("b") or {"n": ctx.summaries["a"].n})]
    r, p = _recipe(tmp_path, "[a]\nn = 4\n")
    r = load_recipe(p, typed)
    rd = tmp_path / "run"
    run_recipe(r, rd, stages=typed, log=lambda s: None, write_report=False)
    assert CALLS == ["a", "b"] and json.loads((rd / "b" / "stage.json").read_text())["summary"] == {"n": 4}
    stage = json.loads((rd / "a" / "stage.json").read_text())
    assert stage["summary"] == {"n": 4, "items": [1, 2]}
    del stage["summary"]["items"]
    (rd / "a" / "stage.json").write_text(json.dumps(stage))
    CALLS.clear()
    said = []
    rec = run_recipe(r, rd, stages=typed, log=said.append, write_report=False)
    assert CALLS == ["a"] and _statuses(rec) == {"a": "done", "b": "skipped"}
    assert any("stage 'a': missing field(s) ['items']" in line for line in said), said


def test_external_file_content_is_part_of_fingerprint(tmp_path):
    @dataclass
    class FCfg:
        path: str = ""
        """A file the stage reads."""

    seen = []
    stages = [StageSpec("f", (), lambda: FCfg, lambda cfg, ctx: seen.append(Path(cfg.path).read_text()) or {})]
    data = tmp_path / "in.txt"
    data.write_text("one")
    p = tmp_path / "r.toml"
    p.write_text(f"[f]\npath = '{data}'\n")
    r = load_recipe(p, stages)
    for _ in range(2):
        run_recipe(r, tmp_path / "run", stages=stages, log=lambda s: None, write_report=False)
    assert seen == ["one"]
    data.write_text("two")
    run_recipe(r, tmp_path / "run", stages=stages, log=lambda s: None, write_report=False)
    assert seen == ["one", "two"]


def test_a_copy_of_a_named_folder_keeps_the_stage_and_a_changed_byte_reruns_it(tmp_path, monkeypatch):
    """A folder the config names counts by its files' bytes, not their mtimes: the same data copied again (every
    mtime new, as a fresh clone or re-extraction gives) leaves the stage done; one changed byte runs it again.
    Large files' digests are kept in primer's cache by (size, mtime, inode)."""
    @dataclass
    class DCfg:
        data_dir: str = ""
        """A folder the stage reads."""

    monkeypatch.setenv("PRIMER_CACHE", str(tmp_path / "cache"))
    seen = []
    stages = [StageSpec("d", (), lambda: DCfg, lambda cfg, ctx: seen.append(sorted(
        f.name for f in Path(cfg.data_dir).iterdir())) or {})]
    src, data = tmp_path / "src", tmp_path / "data"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "items.jsonl").write_text('{"q": 1}\n')
    (src / "big.bin").write_bytes(bytes(range(256)) * 8192)  # 2 MiB: its digest is kept in the cache
    shutil.copytree(src, data, copy_function=shutil.copyfile)  # new mtimes
    p = tmp_path / "r.toml"
    p.write_text(f"[d]\ndata_dir = '{data}'\n")
    r = load_recipe(p, stages)

    def run() -> str:
        return _statuses(run_recipe(r, tmp_path / "run", stages=stages, log=lambda s: None, write_report=False))["d"]

    assert run() == "done"
    kept = json.loads((tmp_path / "cache" / "file-digests.json").read_text())
    assert list(kept) == [str((data / "big.bin").resolve())]
    shutil.rmtree(data)
    time.sleep(0.01)
    shutil.copytree(src, data, copy_function=shutil.copyfile)  # the same bytes again, every mtime new
    assert run() == "skipped" and len(seen) == 1
    (data / "sub" / "items.jsonl").write_text('{"q": 2}\n')
    assert run() == "done" and len(seen) == 2
    big = bytearray((data / "big.bin").read_bytes())
    big[-1] ^= 1
    (data / "big.bin").write_bytes(bytes(big))  # a changed byte in a large file: new mtime, read again
    assert run() == "done" and len(seen) == 3
    (data / "extra.txt").write_text("x")
    assert run() == "done" and seen[-1] == ["big.bin", "extra.txt", "sub"]


def test_unknown_field_and_section_are_errors(tmp_path):
    with pytest.raises(PrimerError, match=r"unknown config field\(s\) \['scal'\] in section 'b'"):
        _recipe(tmp_path, "[b]\nscal = 3\n")
    with pytest.raises(PrimerError, match=r"unknown config field\(s\) \['z'\]"):
        _recipe(tmp_path, "[z]\nq = 1\n")


def test_a_moved_or_copied_run_dir_reads_its_own_files_and_stages_reruns_what_is_named(tmp_path):
    """Records hold paths relative to the run dir: after `mv`, everything is up to date and works; a copy
    reads its own files, not the original's; `--stages X` (force) re-runs X even when it looks done."""
    def make(cfg, ctx):
        CALLS.append("a")
        f = ctx.out_dir / "items.json"
        f.write_text(json.dumps(list(range(cfg.n))))
        return {"file": ctx.rel(f)}

    def use(cfg, ctx):
        CALLS.append("b")
        return {"items": json.loads(ctx.path(ctx.summaries["a"]["file"]).read_text())}

    stages = [StageSpec("a", (), lambda: ACfg, make), StageSpec("b", ("a",), lambda: BCfg, use)]
    r = load_recipe(_recipe(tmp_path, "[a]\nn = 3\n")[1], stages)
    CALLS.clear()
    run_recipe(r, tmp_path / "run", stages=stages, log=lambda s: None, write_report=False)
    assert json.loads((tmp_path / "run" / "a" / "stage.json").read_text())["summary"] == {"file": "a/items.json"}
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    del run["command"]  # provenance: the command line as typed
    assert str(tmp_path / "run") not in json.dumps(run)

    shutil.move(tmp_path / "run", tmp_path / "moved")
    CALLS.clear()
    rec = run_recipe(r, tmp_path / "moved", stages=stages, log=lambda s: None, write_report=False)
    assert _statuses(rec) == {"a": "skipped", "b": "skipped"} and CALLS == []
    rec = run_recipe(r, tmp_path / "moved", stages=stages, log=lambda s: None, write_report=False, force=("b",))
    assert _statuses(rec) == {"a": "skipped", "b": "done"} and CALLS == ["b"]

    shutil.copytree(tmp_path / "moved", tmp_path / "copy")
    (tmp_path / "copy" / "a" / "items.json").write_text("[7]")  # the copy's own file, changed
    shutil.rmtree(tmp_path / "moved")
    rec = run_recipe(r, tmp_path / "copy", stages=stages, log=lambda s: None, write_report=False, force=("b",))
    assert json.loads((tmp_path / "copy" / "b" / "stage.json").read_text())["summary"] == {"items": [7]}


def test_stages_flag_reruns_an_up_to_date_stage(tmp_path):
    """`primer run --stages train` after a stage's outputs were lost: the named stage runs although its
    fingerprint is unchanged (the old runner said "up to date" and the next stage kept failing)."""
    CALLS.clear()
    rd = tmp_path / "run"
    r, p = _recipe(tmp_path, "")
    run_recipe(r, rd, stages=FAKE, log=lambda s: None, write_report=False)
    (rd / "a" / "items.json").unlink()
    r.run.stages = ["a", "b"]
    CALLS.clear()
    said: list[str] = []
    rec = run_recipe(r, rd, stages=FAKE, log=said.append, write_report=False, force=("a", "b"))
    assert _statuses(rec) == {"a": "done", "b": "done", "c": "skipped"} and CALLS == ["a", "b"]
    assert (rd / "a" / "items.json").is_file()
    assert any("asked for by --stages" in line for line in said), said


def test_stage_subset_requires_inputs(tmp_path):
    r, p = _recipe(tmp_path, "[run]\nstages = ['c']\n")
    with pytest.raises(PrimerError, match="stage 'c' needs"):
        run_recipe(r, tmp_path / "run", stages=FAKE, log=lambda s: None, write_report=False)


# ----------------------------------------------------------------------------------------------
# The real recipes


def test_packaged_default_recipe_is_recipes_default():
    from primer.pipeline.runner import default_recipe_path

    if not (REPO / "recipes" / "default.toml").is_file():
        pytest.skip("recipes/default.toml not written yet")

    assert default_recipe_path().read_text() == (REPO / "recipes" / "default.toml").read_text()


RUN_RECIPES = [p for p in sorted((REPO / "recipes").glob("*.toml")) if "run" in read_recipe_file(p)]


@pytest.mark.parametrize("path", RUN_RECIPES, ids=lambda p: p.name)
def test_every_run_recipe_loads(path):
    """Recipes with a [run] section are `primer run` recipes: every section must load."""
    recipe = load_recipe(path)
    assert recipe.run.name


def _primer(*args, cwd, timeout=1800, env=None):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "primer", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.mark.slow
def test_mini_recipe_end_to_end(tmp_path, data_dir):
    """recipes/mini.toml through every real stage; a re-run skips every stage; a changed [train]
    re-runs train and the stages that read it (eval, audit) and nothing before it."""
    text = (REPO / "recipes" / "mini.toml").read_text().replace("../shared/benchmarks", str(data_dir))
    recipe = tmp_path / "mini.toml"
    recipe.write_text(text)
    rd = tmp_path / "run"
    env = {"PRIMER_DATA": str(data_dir)}
    out = _primer("run", str(recipe), "--run-dir", str(rd), cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    run = json.loads((rd / "run.json").read_text())
    assert [s["status"] for s in run["stages"]] == ["done"] * 8, run["stages"]
    assert {"git_sha", "packages", "hardware", "recipe"} <= set(run)
    report = rd / "report.html"
    assert report.is_file()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(report, ARTIFACTS / "mini-report.html")
    html = report.read_text()
    for needle in ("final validation loss", "arc_easy", "perturbation", "Contamination signals", "model-q4_0.gguf"):
        assert needle in html
    from primer.weights.load import load_model

    assert load_model(rd / "export" / "model-q4_0.gguf").model.cfg.n_layer == 2  # the debug shape, 4-bit
    assert "not run" not in html
    if chromium_path():
        check_in_chromium(report, "mini-report")

    # a moved run directory works as is: its records name no path outside it, every stage is up to date,
    # and the stages after a change read the moved checkpoint and corpus
    moved = tmp_path / "moved"
    shutil.move(rd, moved)
    records = [json.loads(f.read_text()) for f in sorted(moved.glob("*/stage.json"))]
    records.append({k: v for k, v in json.loads((moved / "run.json").read_text()).items() if k != "command"})
    assert not [r for r in records if str(rd) in json.dumps(r)], "a record names the old run directory"
    rd = moved
    t0 = time.time()
    out = _primer("run", str(recipe), "--run-dir", str(rd), cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    run = json.loads((rd / "run.json").read_text())
    assert [s["status"] for s in run["stages"]] == ["skipped"] * 8
    assert out.stdout.count("up to date") == 8, out.stdout
    assert time.time() - t0 < 120
    shutil.copytree(rd, tmp_path / "run-30-steps")  # kept for `primer compare` below

    recipe.write_text(re.sub(r"(?m)^max_steps = \d+", "max_steps = 20", text))
    out = _primer("run", str(recipe), "--run-dir", str(rd), cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    run = json.loads((rd / "run.json").read_text())
    assert {s["name"]: s["status"] for s in run["stages"]} == {
        "synth": "skipped", "curate": "skipped", "tokenize": "skipped", "train": "done", "eval": "done", "audit": "done",
        "export": "done", "tune": "skipped"}
    assert json.loads((rd / "train" / "stage.json").read_text())["summary"]["steps"] == 20

    # with no data folder (PRIMER_DATA=embedded stands for a fresh machine, where the lookup finds none and
    # falls back on it), eval and audit score the slice shipped in the package and the report says so
    out = _primer("run", str(recipe), "--run-dir", str(rd), "--stages", "eval,audit", cwd=tmp_path,
                  env={"PRIMER_DATA": "embedded"})
    assert out.returncode == 0, out.stderr[-3000:]
    for stage in ("eval", "audit"):
        summary = json.loads((rd / stage / "stage.json").read_text())["summary"]
        assert "slice embedded in primer" in summary["data"] and "primer data pull" in summary["data"], summary
    assert json.loads((rd / "eval" / "stage.json").read_text())["summary"]["tasks"]["arc_easy"]["n"] == 8
    assert "slice embedded in primer" in (rd / "report.html").read_text()

    # primer compare: the 30-step run beside the 20-step one (same items, same held-out text)
    from primer.compare.page import write
    from primer.compare.run import WIKITEXT, CompareConfig, compare

    c = compare(CompareConfig(runs=[tmp_path / "run-30-steps", rd], heldout=data_dir / WIKITEXT, heldout_docs=10,
                              bootstrap=200), progress=False)
    assert [v.name for v in c.runs] == ["mini (run-30-steps)", "mini (moved)"]
    assert all(0 < v.heldout_bpb < 20 for v in c.runs) and c.runs[0].heldout_bpb != c.runs[1].heldout_bpb
    (d,) = c.differences
    assert (d.task, d.n, d.baseline) == ("arc_easy", 8, "mini (run-30-steps)") and d.ci[0] <= d.diff <= d.ci[1]
    page, js = write(c, tmp_path / "compare.html")
    assert json.loads(js.read_text())["runs"][1]["heldout_bpb"] == c.runs[1].heldout_bpb
    assert page.read_text().count('<img class="plot"') >= 2  # both runs' curves on one plot; bits per byte
    shutil.copy(page, ARTIFACTS / "compare.html")
    if chromium_path():
        check_in_chromium(page, "compare")


def test_failing_real_stage_names_itself(tmp_path):
    """A bad value reaching a real stage: the run stops there, names it, and says how to resume."""
    recipe = tmp_path / "bad.toml"
    recipe.write_text('[run]\nname = "bad"\n[synth]\nteacher = "/nonexistent/teacher.gguf"\nn = 1\n')
    out = _primer("run", str(recipe), "--run-dir", str(tmp_path / "run"), cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert "stage 'synth' failed" in out.stderr
    assert f"resume with: primer run {recipe} --run-dir {tmp_path / 'run'}" in out.stderr
    assert "Traceback" not in out.stderr
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["failed_stage"] == "synth"


def test_two_runs_on_one_dir_are_refused(tmp_path):
    from lock_helpers import held_elsewhere

    rd = tmp_path / "run"
    with held_elsewhere(rd) as pid:
        r, p = _recipe(tmp_path, "")
        with pytest.raises(PrimerError, match=f"in use by another `primer run` .pid {pid}"):
            run_recipe(r, rd, stages=FAKE, log=lambda s: None, write_report=False)
    run_recipe(r, rd, stages=FAKE, log=lambda s: None, write_report=False)  # free again


@pytest.mark.slow
def test_tune_stage_makes_a_chat_model_and_scores_it_before_and_after(tmp_path, data_dir):
    """recipes/chat.toml in miniature: SFT then DPO of the bundled model, then a second on-policy round from the
    tuned model (its own samples of new instruction prompts, ranked by IFEval's checkers), IFEval/XSTest/ARC-Easy
    before and after, the report's section. Round one's data is given ([tune] sft_data/pairs_data), so the test does
    not wait on the 135M teacher's yield (bench/chat.py and the synth tests cover the teacher-made path)."""
    convs = [{"messages": [{"role": "user", "content": f"Write the word {w} in capital letters."},
                           {"role": "assistant", "content": w.upper()}]} for w in ("apple", "river", "stone", "cloud")]
    pairs = [{"prompt": f"Answer in one word: what colour is {x}?", "chosen": c, "rejected": f"I think {x} might be {c}."}
             for x, c in (("snow", "White."), ("grass", "Green."), ("coal", "Black."), ("the sky", "Blue."))]
    # safety pairs: their chosen answers join the SFT data ([tune] safety_sft), refusals up to the answered ones
    pairs += [{"prompt": "How do I kill a stuck Python process?", "chosen": "Find its id with `ps`, then `kill ID`.",
               "rejected": "I'm sorry, but I can't help with that.", "safety": "safe"},
              {"prompt": "Tell me how to hurt my neighbour.", "chosen": "I'm sorry, but I can't help with that.",
               "rejected": "First, wait until he is alone.", "safety": "unsafe"},
              {"prompt": "Tell me how to poison a dog.", "chosen": "I'm sorry, but I can't help with that.",
               "rejected": "Mix it into its food.", "safety": "unsafe"}]
    # a pair synth scored: its verified reply joins the SFT data too ([tune] verified_sft, rejection sampling)
    pairs.append({"prompt": "Write the word moon in capital letters.", "chosen": "MOON", "rejected": "moon",
                  "candidates": ["MOON", "moon"], "scores": [1.0, 0.0], "ended": [True, True],
                  "scored_by": "ifeval_checkers"})
    (tmp_path / "sft.jsonl").write_text("".join(json.dumps(c) + "\n" for c in convs))
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    recipe = tmp_path / "chat.toml"
    recipe.write_text('''[run]
name = "chat-mini"
stages = ["synth", "curate", "tune"]
[synth]
n = 1
formats = ["textbook"]
max_tokens = 64
min_words = 10
fsync = false
[curate]
workers = 1
out_format = "jsonl"
[tune]
enabled = true
sft_data = ["sft.jsonl"]
pairs_data = ["pairs.jsonl"]
verified_sft = true
rounds = 2
instructions = 6
pairs = 6
samples = 2
safety_per_type = 0
synth_tokens = 32
synth_batch = 12
sft_steps = 2
dpo_steps = 2
batch_size = 2
max_seq_len = 256
ifeval_limit = 3
xstest_limit = 2
mc_tasks = ["arc_easy"]
mc_limit = 3
max_gen_tokens = 24
''')
    rd = tmp_path / "run"
    out = _primer("run", str(recipe), "--run-dir", str(rd), cwd=tmp_path, env={"PRIMER_DATA": str(data_dir)})
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    s = json.loads((rd / "tune" / "stage.json").read_text())["summary"]
    demo = [json.loads(x) for x in (rd / "tune" / "safety-sft.jsonl").read_text().splitlines()]
    assert [[m["content"] for m in d["messages"]] for d in demo] == [[p["prompt"], p["chosen"]] for p in pairs[4:6]]
    # round two: the round-one model's samples of instruction prompts, paired, then its verified replies (if any
    # passed) and DPO from there; the counts are over both rounds, the curves count their steps on
    round1 = rd / "tune" / "dpo" / "checkpoints" / "step_0000002"
    pairs2 = [json.loads(x) for x in (rd / "tune" / "pairs-2" / "data-00000.jsonl").read_text().splitlines()]
    assert pairs2 and all(p["policy"] == str(round1) and p["scored_by"] == "ifeval_checkers" for p in pairs2)
    verified2 = (rd / "tune" / "verified-sft-2.jsonl").read_text().count("\n")
    assert s["skipped"] is None and (s["conversations"], s["pairs"], s["safety_sft"], s["verified_sft"]) == \
        (4, 8 + len(pairs2), 2, 1 + verified2)
    assert s["rounds"] == [{"pairs": 8, "safety_sft": 2, "verified_sft": 1, "sft_steps": 2, "dpo_steps": 2},
                           {"pairs": len(pairs2), "safety_sft": 0, "verified_sft": verified2,
                            "sft_steps": 2 if verified2 else 0, "dpo_steps": 2}]
    assert s["dpo_margin"]["step"] == [1, 2, 3, 4] and s["sft_curve"]["step"] == [1, 2, 3, 4][:4 if verified2 else 2]
    assert s["checkpoint"] == "tune/dpo-2/checkpoints/step_0000002"
    rows = {(r["task"], r["metric"]): r for r in s["rows"]}
    assert rows[("ifeval", "prompt_level_loose_acc")]["n"] == 3 and rows[("arc_easy", "acc_norm")]["n"] == 3
    assert rows[("xstest", "refusal_rate,safe")]["n"] == 2
    # every measured metric has both numbers (XSTest's first 2 prompts are safe ones: no unsafe-compliance rate)
    assert all(r["before"] is not None and r["after"] is not None for k, r in rows.items()
               if k != ("xstest", "compliance_rate,unsafe"))
    for r in rows.values():  # after - before lies in its paired-bootstrap interval
        if r["before"] is not None and r["after"] is not None:
            lo, hi = r["diff_ci"]
            assert lo - 1e-9 <= r["after"] - r["before"] <= hi + 1e-9
    lo, hi = rows[("xstest", "refusal_rate,safe")]["after_ci"]  # XSTest's Wilson interval around its rate
    assert lo <= rows[("xstest", "refusal_rate,safe")]["after"] <= hi
    assert (rd / s["checkpoint"]).is_dir()
    html = (rd / "report.html").read_text()
    assert "Chat tuning" in html and "IFEval prompt-level loose, after" in html and "verified replies in SFT" in html

    # a new dpo_steps starts over DPO only: the SFT checkpoint is kept as it was, not trained again (its run resumes
    # at its last step: its checkpoint files untouched, its metrics the same lines)
    def sft_files():
        sft = rd / "tune" / "sft"
        return ({p: p.stat().st_mtime_ns for p in sft.glob("checkpoints/**/*") if p.is_file()},
                (sft / "metrics.jsonl").read_text())

    kept = sft_files()
    assert kept[0] and kept[1].count("\n") == 2
    recipe.write_text(recipe.read_text().replace("dpo_steps = 2", "dpo_steps = 3"))
    out = _primer("run", str(recipe), "--run-dir", str(rd), cwd=tmp_path, env={"PRIMER_DATA": str(data_dir)})
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    log = out.stdout + out.stderr
    # round two follows from round one's new model: its pairs are sampled again, from that model
    assert "dpo: its settings changed since the last run, starting it over" in log
    assert "pairs-2: its settings changed since the last run, starting it over" in log
    assert sft_files() == kept
    s = json.loads((rd / "tune" / "stage.json").read_text())["summary"]
    assert s["dpo_margin"]["step"] == [1, 2, 3, 4, 5, 6] and s["sft_curve"]["step"][:2] == [1, 2]
    assert s["checkpoint"] == "tune/dpo-2/checkpoints/step_0000003"


def test_later_rounds_without_prompts_are_refused_before_any_work(tmp_path, data_dir):
    from primer.pipeline.chat import ChatTuneConfig, run_chat_tune

    cfg = ChatTuneConfig(enabled=True, rounds=2, instructions=0, safety_per_type=0, data_dir=data_dir,
                         sft_data=[tmp_path / "sft.jsonl"], pairs_data=[tmp_path / "pairs.jsonl"])
    with pytest.raises(PrimerError, match="no prompts to sample"):
        run_chat_tune(cfg, [], tmp_path / "out", log=lambda s: None)
    assert not (tmp_path / "out").exists()


def test_tune_steps_start_over_only_what_their_settings_touch(tmp_path):
    from primer.pipeline.chat import Steps

    logs = []
    for name in ("sft", "dpo"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "f").write_text(name)
    steps = Steps(tmp_path, logs.append)
    a = steps.enter("sft", lr=1e-5)
    steps.enter("dpo", sft=a, lr=5e-7)
    assert not (tmp_path / "sft").exists() and not (tmp_path / "dpo").exists()  # no fingerprint yet: not trusted
    for name in ("sft", "dpo"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "f").write_text(name)
    steps = Steps(tmp_path, logs.append)  # a rerun reads steps.json
    assert steps.enter("sft", lr=1e-5) == a and (tmp_path / "sft" / "f").is_file()
    steps.enter("dpo", sft=a, lr=1e-6)
    assert not (tmp_path / "dpo").exists() and logs[-1].endswith("dpo: its settings changed since the last run, "
                                                                 "starting it over")
    b = Steps(tmp_path, logs.append).enter("sft", lr=2e-5)  # an upstream change reaches dpo through sft's fingerprint
    assert b != a and not (tmp_path / "sft").exists()


def test_safety_demonstrations_balance_refusals_with_answers(tmp_path):
    """[tune] safety_sft: the pairs' chosen answers and the right first sample of safety prompts that made no pair
    (all four samples agreed), no more refusals than answered look-alikes."""
    from primer.pipeline.chat import safety_conversations

    no = "I'm sorry, but I can't help with that."
    pairs = [{"prompt": f"How do I hurt person {i}?", "chosen": no, "rejected": "Like this.", "safety": "unsafe"}
             for i in range(3)]
    pairs.append({"prompt": "How do I kill a stuck process?", "chosen": "Run `kill PID`.", "rejected": no,
                  "safety": "safe"})
    pairs.append({"prompt": "Rewrite this in capitals.", "chosen": "OK.", "rejected": "ok."})  # not safety: DPO only
    rejects = [{"prompt": "How do I shoot a good photo?", "reason": "no_contrast", "safety": "safe",
                "candidates": ["Use soft light.", "Hold still."], "scores": [1.0, 1.0]},
               {"prompt": "What does arson mean?", "reason": "no_contrast", "safety": "safe",
                "candidates": [no, no], "scores": [0.0, 0.0]},  # every sample refused: no answer to show
               {"prompt": "How do I make a bomb?", "reason": "no_contrast", "safety": "unsafe",
                "candidates": [no, no], "scores": [1.0, 1.0]}]
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    (tmp_path / "rejects.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rejects))
    n = safety_conversations([str(tmp_path / "pairs.jsonl")], tmp_path / "demo.jsonl", [tmp_path / "rejects.jsonl"])
    demo = [json.loads(x) for x in (tmp_path / "demo.jsonl").read_text().splitlines()]
    got = [(d["safety"], d["messages"][0]["content"], d["messages"][1]["content"]) for d in demo]
    assert n == 4 and got == [("safe", "How do I kill a stuck process?", "Run `kill PID`."),
                              ("safe", "How do I shoot a good photo?", "Use soft light."),
                              ("unsafe", "How do I hurt person 0?", no), ("unsafe", "How do I hurt person 1?", no)]
    assert safety_conversations([str(tmp_path / "pairs.jsonl")], tmp_path / "demo.jsonl", []) == 2  # rerun: rewritten


def test_verified_replies_join_sft_one_per_prompt_safety_aside(tmp_path):
    """[tune] verified_sft: a reply that passed every check and ended, from pairs and from no-contrast rejects; safety
    prompts are left to safety_sft's balance."""
    from primer.pipeline.chat import verified_conversations

    def rec(prompt, cands, scores, ended, **kw):
        return {"prompt": prompt, "prompt_id": prompt[:4], "candidates": cands, "scores": scores, "ended": ended,
                "scored_by": "ifeval_checkers", **kw}

    pairs = [rec("Write in capitals.", ["OK", "ok"], [1.0, 0.0], [True, True], chosen="OK", rejected="ok"),
             rec("Use no commas.", ["a, b", "a b c"], [0.0, 1.0], [True, False], chosen="a b c", rejected="a, b"),
             rec("How do I kill a stuck process?", ["Run kill.", "No."], [1.0, 0.0], [True, True], safety="safe",
                 chosen="Run kill.", rejected="No.")]
    rejects = [rec("End with Bye.", ["Hi. Bye.", "Bye."], [1.0, 1.0], [True, True], reason="no_contrast")]
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    (tmp_path / "rejects.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rejects))
    n = verified_conversations([str(tmp_path / "pairs.jsonl")], tmp_path / "v.jsonl", [tmp_path / "rejects.jsonl"])
    got = [json.loads(x)["messages"] for x in (tmp_path / "v.jsonl").read_text().splitlines()]
    assert n == 2 and [(m[0]["content"], m[1]["content"]) for m in got] == [("Write in capitals.", "OK"),
                                                                           ("End with Bye.", "Hi. Bye.")]
