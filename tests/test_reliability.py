"""The bad inputs, faults and interruptions of issue 13, each tried as a user would: every expected
failure ends in one line naming what is wrong (exit 2, no traceback), two writers never share an output,
a bad recipe value stops the run before its first stage, and a reply cut by the context says so.

(The sandbox probes are in test_sandbox.py, the torn metrics line in test_stage_bad_input.py, the moved
run directory in test_run.py.) Most probes call the CLI in-process, where a traceback would fail the
test as an exception; the ones that need a second process or a read-only directory run `primer`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from lock_helpers import held_elsewhere

from primer.cli import main

STORY = ("The little fox found a red apple under the old tree. She shared it with her friend the rabbit, and "
         "they laughed until the sun went down behind the hills.")


def _cli(capsys, *args: str) -> tuple[int, str]:
    rc = main(list(args))
    err = capsys.readouterr().err
    return rc, err


def _one_line(rc: int, err: str, *needles: str) -> None:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert rc == 2, err
    assert "Traceback" not in err and lines and lines[-1].startswith("primer "), err
    assert len([ln for ln in lines if ": error: " in ln]) == 1, err
    for n in needles:
        assert n in lines[-1], lines[-1]


def _primer(*args: str, cwd: Path, prefix: list[str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*(prefix or []), sys.executable, "-m", "primer", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "PYTHONUNBUFFERED": "1"})


@pytest.fixture
def docs(tmp_path) -> Path:
    p = tmp_path / "docs.jsonl"
    p.write_text("".join(json.dumps({"id": f"d{i}", "text": f"{STORY} Day {i}."}) + "\n" for i in range(40)))
    return p


# -- one writer per output ----------------------------------------------------------------------------


def test_a_second_train_on_one_out_dir_is_refused_naming_the_first(tmp_path):
    from test_train import make_token_dir

    tokens = make_token_dir(tmp_path / "tokens", n_train=40, n_val=8)
    out = tmp_path / "train"
    args = ["train", "--data", str(tokens), "--out-dir", str(out), "--model", "debug", "--seq-len", "16",
            "--batch-size", "2", "--max-steps", "100000", "--eval-every", "0", "--save-every", "0", "--threads", "1",
            "--no-progress"]
    first = subprocess.Popen([sys.executable, "-m", "primer", *args], cwd=tmp_path, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        end = time.monotonic() + 120
        while not (out / "metrics.jsonl").is_file() and time.monotonic() < end:  # the first is training
            assert first.poll() is None, "the first run ended early"
            time.sleep(0.2)
        second = _primer(*args, cwd=tmp_path)
        _one_line(second.returncode, second.stderr, f"{out} is in use by another primer train (pid {first.pid}",
                  "primer train --data")
        assert first.poll() is None  # the first one goes on
    finally:
        first.kill()
        first.wait()


def test_a_second_curate_run_on_one_out_is_refused(tmp_path, docs, capsys):
    out = tmp_path / "curated"
    with held_elsewhere(out) as pid:
        rc, err = _cli(capsys, "curate", "run", str(docs), "--out", str(out), "--workers", "1")
    _one_line(rc, err, f"{out} is in use by another primer curate (pid {pid}")
    assert _cli(capsys, "curate", "run", str(docs), "--out", str(out), "--workers", "1", "--no-dedup")[0] == 0


@pytest.mark.parametrize("verb", ["tokenize", "synth", "topics", "eval", "audit"])
def test_every_verb_claims_its_output(tmp_path, docs, capsys, verb):
    out = tmp_path / "out"
    args = {
        "tokenize": (["tokenize", str(docs), "--out", str(out)], False),
        "synth": (["synth", "--out", str(out), "--n", "1"], False),
        "topics": (["topics", "--expand", str(out), "--limit", "1"], True),
        "eval": (["eval", "bundled", "--tasks", "piqa", "--output", str(out)], True),
        "audit": (["audit", "bundled", "--out", str(out)], False),
    }
    argv, is_file = args[verb]
    with held_elsewhere(out, file=is_file) as pid:
        rc, err = _cli(capsys, *argv)
    _one_line(rc, err, f"{out} is in use by another primer {verb}", f"(pid {pid}")


# -- one line, exit 2, for every expected failure -----------------------------------------------------


def test_non_utf8_and_binary_inputs_name_the_file(tmp_path, capsys):
    latin = tmp_path / "latin.txt"
    latin.write_bytes("Caf\u00e9 au lait, cr\u00e8me br\u00fbl\u00e9e.\n".encode("latin-1"))
    binary = tmp_path / "blob.jsonl"
    binary.write_bytes(bytes(range(256)) * 8)
    for f, where in ((latin, f"{latin}:1: invalid UTF-8"), (binary, f"{binary}: nothing readable")):
        _one_line(*_cli(capsys, "tokenize", str(f), "--out", str(tmp_path / f"t-{f.stem}")), where, "iconv")


def test_invalid_utf8_in_documents_is_counted_per_policy(tmp_path, docs):
    from primer.curate.pipeline import CurateConfig, curate
    from primer.tokens.shards import TokenizeConfig, tokenize_corpus

    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "good.txt").write_text(STORY)
    (mixed / "bad.txt").write_bytes(STORY.encode() + b"\nOne more line with a stray \xff byte.\n")
    for policy, kept in (("drop", 1), ("replace", 2)):
        r = curate(CurateConfig(input=str(mixed), out=str(tmp_path / f"c-{policy}"), workers=1, heuristics=False,
                                dedup=False, invalid_utf8=policy), quiet=True)
        assert r.documents_kept == kept
        assert (r.bad_input.count, r.bad_input.replaced) == ((1, 0) if policy == "drop" else (0, 1))
        assert f"{mixed / 'bad.txt'}:2: invalid UTF-8 at byte 27" in r.bad_input.examples[0]
    meta = tokenize_corpus(TokenizeConfig(inputs=[str(docs), str(mixed / "bad.txt")], out=str(tmp_path / "tok"),
                                          vocab_size=300, invalid_utf8="replace"), progress=False)
    assert meta.bad_input.replaced == 1 and meta.split("train").documents + meta.split("val").documents == 41


@pytest.mark.parametrize("verb", ["curate", "tokenize", "train", "synth", "audit"])
def test_an_out_that_is_a_file_is_one_line(tmp_path, docs, capsys, verb):
    taken = tmp_path / "taken"
    taken.write_text("not a directory")
    argv = {"curate": ["curate", "run", str(docs), "--out", str(taken)],
            "tokenize": ["tokenize", str(docs), "--out", str(taken)],
            "train": ["train", "--out-dir", str(taken)],
            "synth": ["synth", "--out", str(taken), "--n", "1"],
            "audit": ["audit", "bundled", "--out", str(taken)]}[verb]
    _one_line(*_cli(capsys, *argv), f"{taken} is a file, not a directory")
    argv = [a if a != str(taken) else str(taken / "sub") for a in argv]
    _one_line(*_cli(capsys, *argv), f"{taken} is a file, not a directory")


def _readonly(path: Path) -> list[str]:
    """A command prefix under which `path` is read-only, also for root (a read-only bind mount)."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        path.chmod(0o555)
        return []
    if not shutil.which("bwrap"):
        pytest.skip("as root a read-only directory needs a read-only bind mount (bwrap)")
    return ["bwrap", "--dev-bind", "/", "/", "--ro-bind", str(path), str(path)]


def test_a_read_only_out_dir_is_one_line_before_any_work(tmp_path, docs):
    ro = tmp_path / "ro"
    prefix = _readonly(ro)
    for argv in (["curate", "run", str(docs), "--out", str(ro)], ["tokenize", str(docs), "--out", str(ro)],
                 ["synth", "--out", str(ro), "--n", "1"], ["tokenize", str(docs), "--out", str(ro / "sub")]):
        r = _primer(*argv, cwd=tmp_path, prefix=prefix)
        _one_line(r.returncode, r.stderr, str(ro))
        assert "read-only file system" in r.stderr or "permission denied" in r.stderr
    # tokenize checks its output before it trains the tokenizer (it used to train for minutes, then fail unnamed)
    code = ("import sys, primer.tokens.bpe as b\n"
            "def trained(*a, **k):\n    raise SystemExit('trained the tokenizer before checking --out')\n"
            "b.train_bpe = trained\n"
            "from primer.cli import main\n"
            f"sys.exit(main(['tokenize', {str(docs)!r}, '--out', {str(ro)!r}]))\n")
    r = subprocess.run([*prefix, sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    _one_line(r.returncode, r.stderr, str(ro))


@pytest.mark.parametrize("argv, needle", [
    (["generate", "hi", "--temperature", "nan"], "temperature must be a finite number >= 0"),
    (["generate", "hi", "--temperature", "-1"], "temperature must be a finite number >= 0"),
    (["generate", "hi", "--top-k", "-3"], "top_k must be >= 0"),
    (["generate", "hi", "--top-p", "0"], "top_p must be in (0, 1]"),
    (["chat", "--temperature", "nan"], "temperature must be a finite number >= 0"),
    (["eval", "bundled", "--tasks", "piqa", "--temperature", "nan"], "'temperature' must be a finite number"),
    (["synth", "--temperature", "inf", "--n", "1"], "'temperature' must be a finite number"),
    (["synth", "--n", "-3"], "'n' must be at least 0, got -3"),
    (["train", "--max-steps", "0"], "'max_steps' must be at least 1"),
    (["train", "--model", "nope"], "unknown model shape 'nope'"),
    (["train", "--model-overrides", "n_head=0"], "'n_head' must be at least 1"),
    (["audit", "bundled", "--limit", "0"], "'limit' must be at least 1"),
])
def test_values_that_cannot_mean_what_was_asked_are_refused(capsys, argv, needle):
    _one_line(*_cli(capsys, *argv), needle)


@pytest.mark.parametrize("section, problem", [
    ("[synth]\nn = -3\n", "'n' in [synth] must be at least 0, got -3"),
    ("[train]\nmax_steps = true\n", "'max_steps' in [train] expects int, got True"),
    ("[train]\nmodel = 'phi-2'\n", "unknown model shape 'phi-2'"),
    ("[train]\nmodel_overrides = {n_heads = 2}\n", "unknown model override(s) ['n_heads']"),
    ("[eval]\ntemperature = -1.0\n", "'temperature' in [eval] must be at least 0"),
    ("[synth]\ntop_p = 1.5\n", "'top_p' in [synth] must be at most 1"),
])
def test_a_bad_recipe_value_stops_the_run_before_any_stage(tmp_path, capsys, section, problem):
    """`[synth] n = -3` used to wipe the synth documents and exit 0 after training on web data only."""
    rd = tmp_path / "run"
    (rd / "synth").mkdir(parents=True)
    kept = rd / "synth" / "data-00000.jsonl"
    kept.write_text(json.dumps({"text": STORY}) + "\n")
    recipe = tmp_path / "r.toml"
    recipe.write_text("[run]\nname = 'probe'\n" + section)
    _one_line(*_cli(capsys, "run", str(recipe), "--run-dir", str(rd)), str(recipe), problem)
    assert kept.read_text() == json.dumps({"text": STORY}) + "\n"
    assert sorted(p.name for p in rd.iterdir()) == ["synth"]  # no stage ran, no run.json


# -- a reply cut by the context says so ---------------------------------------------------------------


@pytest.fixture(scope="module")
def small_context_model(tmp_path_factory) -> Path:
    """A random debug-shape checkpoint (128-token context) with the byte tokenizer."""
    from primer.model.transformer import ModelConfig, Transformer
    from primer.tokens.bpe import byte_tokenizer
    from primer.weights.checkpoint import save_checkpoint

    torch.manual_seed(0)
    return save_checkpoint(tmp_path_factory.mktemp("ctx") / "ckpt",
                           Transformer(ModelConfig.from_name("debug", vocab_size=320)), tokenizer=byte_tokenizer())


def test_a_prompt_near_the_context_limit_reports_finish_reason_length(small_context_model, capsys):
    prompt = "x" * 120  # 120 of the 128 positions
    assert main(["generate", prompt, "--model", str(small_context_model), "--max-tokens", "50", "--exact"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("[finish_reason=length: the context is full: 120 prompt + 8 new tokens = "
                                      "the model's 128"), err
    assert main(["generate", "x" * 10, "--model", str(small_context_model), "--max-tokens", "5", "--exact"]) == 0
    assert capsys.readouterr().err.strip().endswith("[finish_reason=length: stopped at --max-tokens (5 new tokens)]")


def test_synth_says_how_many_teacher_replies_were_cut(tmp_path):
    """The teacher's side of the same: completions that ended on length are counted in synth's summary."""
    from synth_helpers import FakeTeacher

    from primer.synth.run import SynthConfig, format_summary, synth
    from primer.teachers.base import Completion

    class CutTeacher(FakeTeacher):  # the fake teacher of the synth tests, every other reply cut at max_tokens
        def _complete_batch(self, prompts, samplings):
            outs = super()._complete_batch(prompts, samplings)
            return [Completion(c.text, "length" if i % 2 else c.finish_reason, c.prompt_tokens, c.completion_tokens)
                    for i, c in enumerate(outs)]

    s = synth(SynthConfig(out=tmp_path / "out", n=4, progress=False, min_words=20), teacher=CutTeacher())
    line = next(ln for ln in format_summary(s).splitlines() if "finish_reason=length" in ln)
    assert f"{s.this_run.finish_reasons['length']} of 4 completions" in line and s.this_run.finish_reasons["length"] == 2
