"""`primer synth --kind conversations`: prompts over source documents, strict parsing, constraint checks, resume.

The teacher is `ScriptedTeacher` (a fake named as one): the test is about our parsing, provenance and
resume logic around whatever a teacher answers.
"""

import json

from primer.synth import convo
from primer.synth.run import SynthConfig, synth
from primer.teachers import Completion, Teacher

PASSAGE = ("Photosynthesis is the process by which green plants use light energy to turn water and carbon dioxide "
           "into sugar and oxygen. It happens in the chloroplasts, which hold the green pigment chlorophyll. ") * 2


class ScriptedTeacher(Teacher):
    """Answers each conversation format in its layout; `broken` formats get an answer that does not parse."""

    name = "scripted"

    def __init__(self, broken=()):
        self.batch_size, self.broken, self.calls = 4, set(broken), 0

    def reply(self, prompt: str) -> str:
        words = " ".join(["plants make sugar from light"] * 3)
        if "Question:" in prompt:
            return f"I will not use the layout. {words}" if "qa" in self.broken else f"Question: What do plants make?\nAnswer: Sugar. {words}"
        if "Exercise:" in prompt:
            return f"Exercise: Name the pigment.\nSolution: Step 1: read. Step 2: it is chlorophyll. {words}"
        if "Student:" in prompt:
            return (f"Student: Why green?\nTeacher: Chlorophyll. {words}\nStudent: Where?\nTeacher: In chloroplasts. {words}")
        if "lowercase" in prompt:
            return "plants use light to make sugar and oxygen. " * 3
        return "Plants, in short, make sugar. " * 3  # fails no_comma, uppercase, bullets, end phrase

    def _complete_batch(self, prompts, samplings):
        self.calls += 1
        return [Completion(self.reply(p), "stop", 10, 30) for p in prompts]


def cfg(tmp_path, n, **kw):
    src = tmp_path / "docs.jsonl"
    src.write_text(json.dumps({"text": PASSAGE}) + "\n" + json.dumps({"text": "too short"}) + "\n")
    return SynthConfig(kind="conversations", sources=[src], out=tmp_path / "out", n=n, min_words=5, max_repeat_frac=1.0, progress=False,
                       fsync=False, **kw)


def docs(out):
    return [json.loads(x) for f in sorted(out.glob("data-*.jsonl")) for x in f.read_text().splitlines()]


def test_conversations_parse_with_provenance_and_failed_constraints_are_rejected(tmp_path):
    s = synth(cfg(tmp_path, 20), teacher=ScriptedTeacher())
    got = docs(tmp_path / "out")
    assert s.grid_exhausted  # 3 formats + 6 constraints over one usable document
    kinds = {(d["format"], d["constraint"]) for d in got}
    assert kinds == {("qa", None), ("exercise", None), ("followup", None), ("constrained", "lowercase"),
                     ("constrained", "max_50_words")}
    for d in got:
        roles = [m["role"] for m in d["messages"]]
        assert roles[-1] == "assistant" and d["source"]["where"].endswith("docs.jsonl:1") and d["teacher"] == "scripted"
    follow = next(d for d in got if d["format"] == "followup")
    assert [m["role"] for m in follow["messages"]] == ["user", "assistant", "user", "assistant"]
    qa = next(d for d in got if d["format"] == "qa")
    assert qa["text"] == "\n\n".join(m["content"] for m in qa["messages"])
    assert qa["messages"][0]["content"].startswith("Photosynthesis") and qa["messages"][1]["content"].startswith("Sugar.")
    assert s.rejects_total == {"constraint_failed": 4}


def test_unparsable_replies_are_counted_and_a_rerun_resumes_without_duplicates(tmp_path):
    t = ScriptedTeacher(broken={"qa"})
    synth(cfg(tmp_path, 2), teacher=t)
    s = synth(cfg(tmp_path, 20), teacher=ScriptedTeacher(broken={"qa"}))
    got = docs(tmp_path / "out")
    assert len({d["prompt_id"] for d in got}) == len(got) == 4
    assert s.rejects_total["unparsable"] == 1


def test_plan_is_fixed_and_covers_every_kind_once():
    src = [convo.Source(PASSAGE, "a:1"), convo.Source(PASSAGE + " More.", "a:2")]
    a = [(p.source.where, p.format, p.constraint) for p in convo.plan(src, seed=3)]
    assert a == [(p.source.where, p.format, p.constraint) for p in convo.plan(src, seed=3)]
    assert len(a) == len(set(a)) == 2 * (3 + len(convo.CONSTRAINTS))
