"""The synth runner: documents and their fields, rejects, resume after Ctrl-C / kill -9, torn lines."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from lock_helpers import held_elsewhere
from synth_helpers import FakeTeacher

from primer.common.files import DirLock
from primer.common.jsonl import read_jsonl, repair_jsonl
from primer.errors import PrimerError
from primer.synth.run import SynthConfig, build_plan, synth

FIELDS = {"text", "prompt_id", "prompt", "topic", "subject", "format", "audience", "style", "teacher", "sampling",
          "prompt_tokens", "completion_tokens", "finish_reason", "created"}


def cfg(tmp_path, **kw):
    return SynthConfig(out=tmp_path / "out", progress=False, min_words=20, **kw)


def ids(out, name="data-*.jsonl"):
    got = []
    for f in sorted(out.glob(name)):
        got += [r["prompt_id"] for r in read_jsonl(f)]
    return got


def assert_prefix_of_plan(c, n):
    """Exactly n documents, every prompt id once, and done = a prefix of the plan (nothing skipped)."""
    docs, rejects = ids(c.out), ids(c.out, "rejects.jsonl")
    assert len(docs) == n and len(set(docs)) == n
    done = docs + rejects
    assert len(set(done)) == len(done)
    plan = [p.id for _, p in zip(range(len(done)), build_plan(c))]
    assert set(done) == set(plan)


def test_writes_documents_with_provenance_and_summary(tmp_path):
    c = cfg(tmp_path, n=12, seed=1)
    s = synth(c, teacher=FakeTeacher())
    assert s.documents == 12 and s.documents_this_run == 12
    docs = list(read_jsonl(c.out / "data-00000.jsonl"))
    assert len(docs) == 12 and all(FIELDS <= set(d) for d in docs)
    d = docs[0]
    assert d["teacher"] == "fake" and d["sampling"]["seed"] is not None and d["sampling"]["max_tokens"] == 512
    assert d["prompt"] in d["text"] and d["topic"] in d["prompt"]
    assert len({d["topic"] for d in docs}) == 12
    saved = json.loads((c.out / "summary.json").read_text())
    assert saved["documents"] == 12 and saved["near_dup_rate"] == 0 and 0 < saved["distinct_3gram_ratio"] <= 1
    assert saved["this_run"]["tokens_per_s"] > 0
    assert_prefix_of_plan(c, 12)
    # rerun: nothing to do, the teacher is not asked
    t = FakeTeacher()
    assert synth(c, teacher=t).documents_this_run == 0 and t.calls == 0


def test_rejects_are_counted_written_and_replaced(tmp_path):
    c = cfg(tmp_path, n=15, formats=["textbook", "story", "dialogue"])  # checked formats: test_synth_verify.py
    bad = {"short story": "I'm sorry, but I cannot write that.", "conversation": "Too short."}
    s = synth(c, teacher=FakeTeacher(bad=bad))
    rej = list(read_jsonl(c.out / "rejects.jsonl"))
    assert s.documents == 15 and rej
    assert {r["reason"] for r in rej} <= {"refusal", "too_short"}
    assert sum(s.rejects_total.values()) == len(rej)
    assert all(r["format"] in ("story", "dialogue") for r in rej)
    assert_prefix_of_plan(c, 15)


def test_n_is_the_total_and_grows(tmp_path):
    c = cfg(tmp_path, n=5)
    synth(c, teacher=FakeTeacher())
    first = ids(c.out)
    c.n = 9
    assert synth(c, teacher=FakeTeacher()).documents_this_run == 4
    assert ids(c.out)[:5] == first
    assert_prefix_of_plan(c, 9)


class Interrupting(FakeTeacher):
    def __init__(self, after):
        super().__init__(batch_size=2)
        self.after = after

    def _complete_batch(self, prompts, samplings):
        if self.calls >= self.after:
            raise KeyboardInterrupt
        return super()._complete_batch(prompts, samplings)


def test_ctrl_c_then_rerun_finishes_without_duplicates(tmp_path):
    c = cfg(tmp_path, n=10)
    with pytest.raises(KeyboardInterrupt):
        synth(c, teacher=Interrupting(after=2))
    assert len(ids(c.out)) == 4
    synth(c, teacher=FakeTeacher())
    assert_prefix_of_plan(c, 10)


def test_torn_last_line_is_cut_and_redone(tmp_path):
    c = cfg(tmp_path, n=6, shard_docs=4)
    synth(c, teacher=FakeTeacher())
    assert sorted(p.name for p in c.out.glob("data-*.jsonl")) == ["data-00000.jsonl", "data-00001.jsonl"]
    last = c.out / "data-00001.jsonl"
    lines = last.read_bytes().splitlines(keepends=True)
    last.write_bytes(lines[0] + lines[1][:40])  # a kill in the middle of writing the 6th document
    assert repair_jsonl(last) == 40 and last.read_bytes() == lines[0]
    last.write_bytes(lines[0] + lines[1][:40])
    s = synth(c, teacher=FakeTeacher())
    assert s.documents_this_run == 1
    assert_prefix_of_plan(c, 6)


def test_one_writer_per_directory(tmp_path):
    c = cfg(tmp_path, n=2)
    with held_elsewhere(c.out) as pid, pytest.raises(PrimerError, match=f"in use by another primer synth .pid {pid}"):
        synth(c, teacher=FakeTeacher())
    with DirLock(c.out, "primer synth"):  # the same process may hold it already (primer run around a stage)
        assert synth(c, teacher=FakeTeacher()).documents == 2


@pytest.mark.slow
def test_bundled_cli_kill9_then_rerun(tmp_path):
    """`primer synth --n 20` with the bundled teacher, offline: kill -9 half-way, rerun, 20 documents."""
    out = tmp_path / "out"
    args = [sys.executable, "-m", "primer", "synth", "--n", "20", "--out", str(out), "--max-tokens", "8",
            "--min-words", "1", "--no-progress"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 300
    while time.time() < deadline and len(ids(out)) < 8 and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, proc.stdout.read().decode()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = len(ids(out))
    assert 8 <= killed_at < 20
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "documents: 20 / 20" in done.stdout
    c = SynthConfig(out=out, n=20, max_tokens=8, min_words=1)
    assert_prefix_of_plan(c, 20)
    docs = [d for f in sorted(out.glob("data-*.jsonl")) for d in read_jsonl(f)]
    assert all(FIELDS <= set(d) for d in docs)
    assert all(d["teacher"].startswith("bundled") and d["completion_tokens"] > 0 for d in docs)
    runs = list(read_jsonl(out / "runs.jsonl"))
    assert len(runs) == 2 and runs[1]["docs_before"] == killed_at


class Recording(FakeTeacher):
    """Remembers how many prompts each batch had."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.sizes = []

    def _complete_batch(self, prompts, samplings):
        self.sizes.append(len(prompts))
        return super()._complete_batch(prompts, samplings)


def test_a_low_yield_teacher_decodes_full_batches_to_the_end(tmp_path):
    c = cfg(tmp_path, n=6, batch_size=8, formats=["textbook", "story", "dialogue"])
    low = Recording(batch_size=8, bad={"short story": "Too short.", "conversation": "Too short."})  # keeps ~1/3
    synth(c, teacher=low)
    assert_prefix_of_plan(c, 6)  # exactly n, no duplicates, nothing skipped: the rest of the last wave is pending
    # the first wave asks for the 6 documents; then twice what the keep rate says is needed, up to a batch (before:
    # waves of 6 - kept prompts, down to 1 or 2 rows at the end)
    assert low.sizes[0] == 6 and low.sizes[1] == 8
    assert len(low.sizes) <= 4
    # the same documents as waves of exactly what is missing (batch_size 1: the rate rule never asks for more)
    c2 = cfg(tmp_path / "two", n=6, batch_size=1, formats=["textbook", "story", "dialogue"])
    one = Recording(batch_size=1, bad={"short story": "Too short.", "conversation": "Too short."})
    synth(c2, teacher=one)
    assert ids(c2.out) == ids(c.out) and len(one.sizes) > len(low.sizes)
    c.n = 9  # what was left pending is asked again, nothing lost or repeated
    synth(c, teacher=FakeTeacher(batch_size=8, bad={"short story": "Too short.", "conversation": "Too short."}))
    assert_prefix_of_plan(c, 9)
