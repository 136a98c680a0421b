"""Verified exercises: code exercises pass their own tests, word problems' answers are reproduced by the
teacher's solution(); wrong, unparseable and looping ones are rejected with a reason. The checks run in
the real sandbox; the fake teacher of the run-level test is there because that test is about our runner."""

import json

import pytest
from synth_helpers import FakeTeacher

from primer.common.jsonl import read_jsonl
from primer.synth import verify
from primer.synth.run import SynthConfig, format_summary, synth

CODE_OK = """Task: write a function that returns the sum of the squares of a list.

```python
def sum_squares(xs):
    return sum(x * x for x in xs)
```

Tests:

```python
assert sum_squares([1, 2, 3]) == 14
assert sum_squares([]) == 0
```
"""
CODE_WRONG = CODE_OK.replace("x * x", "x + x")  # 12, not 14: the reference fails its own test
CODE_LOOP = CODE_OK.replace("    return sum(x * x for x in xs)", "    while True:\n        pass")
CODE_NO_TESTS = CODE_OK.split("Tests:")[0]
CODE_NEVER_CALLED = CODE_WRONG.replace("assert sum_squares([1, 2, 3]) == 14\nassert sum_squares([]) == 0",
                                      "def check():\n    assert sum_squares([1, 2, 3]) == 14")
CODE_PYTEST = CODE_OK.replace("assert sum_squares([1, 2, 3]) == 14", "def test_it():\n    assert sum_squares([1, 2, 3]) == 14")
CODE_VACUOUS = CODE_OK.replace("assert sum_squares([]) == 0", "assert True").replace(
    "assert sum_squares([1, 2, 3]) == 14", "print(sum_squares([1]))")

MATH_OK = """Sam buys 3 boxes of 12 pencils and gives away 5 pencils. How many pencils are left?

Solution: 3 boxes hold 3 * 12 = 36 pencils. After giving away 5, 36 - 5 = 31 remain.
Answer: 31

```python
def solution():
    boxes = 3
    per_box = 12
    return boxes * per_box - 5
```
"""
MATH_WRONG = MATH_OK.replace("Answer: 31", "Answer: 41")  # the prose's answer is not what the program computes
MATH_LOOP = MATH_OK.replace("    return boxes * per_box - 5", "    while True:\n        boxes += 1")
MATH_NO_ANSWER = MATH_OK.replace("Answer: 31\n", "")
MATH_NO_PROGRAM = MATH_OK.split("```python")[0]


def check(fmt: str, text: str, timeout: float = 5.0) -> dict:
    v = verify.Verifier(timeout=timeout)
    try:
        v.submit("doc", fmt, text)
        [(key, verdict)] = v.ready(wait=True)
    finally:
        v.close()
    assert key == "doc"
    return verdict


@pytest.mark.parametrize("fmt, text, status", [
    ("code", CODE_OK, "verified"),
    ("code", CODE_WRONG, "failed"),
    ("code", CODE_NO_TESTS, "unverifiable"),
    ("code", CODE_VACUOUS, "unverifiable"),
    ("code", CODE_NEVER_CALLED, "unverifiable"),
    ("code", CODE_PYTEST, "verified"),
    ("code", CODE_PYTEST.replace("x * x", "x + x"), "failed"),
    ("code", CODE_OK.replace("Tests:", "Output:\n```text\n14\n```\nTests:"), "verified"),  # a non-python block
    ("code", CODE_OK.rsplit("```", 1)[0], "unverifiable"),  # the tests' block cut at max_tokens: never closed
    ("code", CODE_OK.replace("def sum_squares(xs):", "def sum_squares(xs)"), "failed"),  # the teacher's broken code
    ("code", "no code at all, just prose " * 10, "unverifiable"),
    ("exercises", MATH_OK, "verified"),
    ("exercises", MATH_WRONG, "failed"),
    ("exercises", MATH_NO_ANSWER, "unverifiable"),
    ("exercises", MATH_NO_PROGRAM, "unverifiable"),
])
def test_checks_in_the_sandbox(fmt, text, status):
    v = check(fmt, text)
    assert v["status"] == status, v
    assert v["check"] == ("tests" if fmt == "code" else "answer")
    assert (v["reason"] is None) == (status == "verified")


def test_reasons_say_what_went_wrong():
    assert "AssertionError" in check("code", CODE_WRONG)["reason"]
    assert check("exercises", MATH_WRONG)["reason"] == "solution() returned 31; the text says 41"
    assert check("exercises", MATH_NO_ANSWER)["reason"] == "no 'Answer: <number>' line"
    assert check("code", CODE_OK.rsplit("```", 1)[0])["reason"] == "a ```python block is cut off (max_tokens)"
    assert check("code", CODE_OK.replace("):", ")"))["reason"].startswith("SyntaxError in a ```python block")


@pytest.mark.parametrize("fmt, text", [("code", CODE_LOOP), ("exercises", MATH_LOOP)])
def test_an_infinite_loop_times_out(fmt, text):
    v = check(fmt, text, timeout=1.0)
    assert v["status"] == "timeout" and "still running after" in v["reason"]


def test_stated_answer_and_matching():
    assert verify.stated_answer("so the total is 1,250.50 dollars.\n**Answer:** $1,250.50\n") == "1250.50"
    assert verify.stated_answer("Final answer: -3") == "-3"
    assert verify.stated_answer("```python\n# Answer: 5\n```\nno answer line here") is None
    assert verify.stated_answer("Answer: 2\nlater on\nAnswer: 7") == "7"  # the last one stands
    assert verify.matches(3.14159, "3.14") and verify.matches(31.0, "31") and verify.matches(31.00001, "31")
    assert not verify.matches(3.4, "3") and not verify.matches(3.15, "3.14")


class ExerciseFakeTeacher(FakeTeacher):
    """A fake teacher (the test is about the runner): word problems and code exercises answered correctly,
    wrongly or without a parseable layout, by the prompt's hash; other formats get FakeTeacher's prose."""

    def _text(self, prompt: str) -> str:
        pick = sum(prompt.encode()) % 3
        if "word problem" in prompt:
            return [MATH_OK, MATH_WRONG, MATH_NO_ANSWER][pick]
        if "Python exercise" in prompt:
            return [CODE_OK, CODE_WRONG, CODE_NO_TESTS][pick]
        return super()._text(prompt)


def test_synth_keeps_only_verified_and_counts_the_rest(tmp_path):
    c = SynthConfig(out=tmp_path / "out", n=12, progress=False, min_words=20, subjects=["mathematics"],
                    formats=["exercises", "code", "textbook"], audiences=["college"])
    s = synth(c, teacher=ExerciseFakeTeacher())
    docs = [d for f in sorted(c.out.glob("data-*.jsonl")) for d in read_jsonl(f)]
    rejects = list(read_jsonl(c.out / "rejects.jsonl"))
    assert len(docs) == s.documents == 12
    for d in docs:
        if d["format"] in ("exercises", "code"):
            assert d["verification"]["status"] == "verified"
        else:
            assert "verification" not in d
    assert rejects and all(r["reason"] in ("verify_failed", "unverifiable") for r in rejects)
    assert {r["verification"]["status"] for r in rejects} == {"failed", "unverifiable"}
    counts = {fmt: sum(c_.values()) for fmt, c_ in s.verification.items()}
    checked = [d for d in docs + rejects if d["format"] in ("exercises", "code")]
    assert sum(counts.values()) == len(checked) and set(counts) == {"exercises", "code"}
    assert s.rejects_total == {reason: sum(r["reason"] == reason for r in rejects) for reason in
                               {r["reason"] for r in rejects}}
    assert "verified exercises:" in format_summary(s)
    assert json.loads((c.out / "summary.json").read_text())["verification"] == s.verification
    # a rerun neither asks the teacher nor checks again, and grows without duplicates
    t = ExerciseFakeTeacher()
    again = synth(c, teacher=t)
    assert t.calls == 0 and again.verification == s.verification
    grown = synth(SynthConfig(**{**c.__dict__, "n": 16}), teacher=ExerciseFakeTeacher())
    ids = [d["prompt_id"] for f in sorted(c.out.glob("data-*.jsonl")) for d in read_jsonl(f)]
    ids += [r["prompt_id"] for r in read_jsonl(c.out / "rejects.jsonl")]
    assert grown.documents == 16 and len(ids) == len(set(ids))
    assert sum(map(sum, (x.values() for x in grown.verification.values()))) > len(checked)


def test_no_isolation_is_refused_before_the_teacher_unless_unsafe(tmp_path, monkeypatch):
    from primer import sandbox
    from primer.errors import PrimerError

    monkeypatch.setattr(sandbox, "available", lambda: {m: "not here (test)" for m in sandbox.ISOLATIONS})
    c = SynthConfig(out=tmp_path / "out", n=2, progress=False, min_words=20, formats=["code"], audiences=["college"])
    t = ExerciseFakeTeacher()
    with pytest.raises(PrimerError, match="refusing to run model-written code.*--unsafe-code"):
        synth(c, teacher=t)
    assert t.calls == 0
    s = synth(SynthConfig(**{**c.__dict__, "unsafe_code": True}), teacher=t)
    assert s.documents == 2 and s.verification["code"]["verified"] == 2
    # formats without a check need no sandbox
    assert synth(SynthConfig(**{**c.__dict__, "out": tmp_path / "t", "formats": ["textbook"]}), teacher=t).documents == 2
