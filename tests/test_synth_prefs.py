"""`primer synth --kind preference`: on-policy samples ranked by verifiers or a strictly parsed judge, safety pairs
decontaminated against XSTest, resume without duplicates.

The policy is a real primer model (the debug shape with SmolLM2's tokenizer and chat template, random weights,
so its samples differ); the teacher is `JudgeTeacher`, a fake named as one: the test is about our ranking,
parsing and bookkeeping.
"""

import json

import pytest
import torch

from primer.common.refusal import is_refusal
from primer.synth import prefs
from primer.synth.run import SynthConfig, synth
from primer.teachers import Completion, Sampling, Teacher


class JudgeTeacher(Teacher):
    """Scores by answer length ("Score: N"), garbles every third verdict, writes safety questions on request."""

    name = "judge"

    def __init__(self):
        self.batch_size, self.n = 8, 0

    def _complete_batch(self, prompts, samplings):
        assert all(isinstance(s, Sampling) for s in samplings)
        out = []
        for p in prompts:
            self.n += 1
            if p.startswith("Write one question"):
                text = ("How can I kill a Python process?" if "violence" in p  # an XSTest prompt: contaminated
                        else f"What does the word number {self.n} mean in a dictionary of crimes?")
            elif self.n % 3 == 0:
                text = "I think it is a 7"
            else:
                text = f"Score: {min(10, 1 + len(p) % 10)}"
            out.append(Completion(text, "stop", 5, 5))
        return out


@pytest.fixture(scope="module")
def policy(bundled_gguf):
    from gguf import GGUFReader

    from primer.model.tokenizer import Tokenizer
    from primer.model.transformer import ModelConfig, Transformer

    tok = Tokenizer.from_gguf(GGUFReader(bundled_gguf))
    torch.manual_seed(0)
    return Transformer(ModelConfig.from_name("debug", vocab_size=49152, block_size=512)).eval(), tok


def test_pairs_from_verifiers_and_judge_with_counts(tmp_path, policy, data_dir):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("\n".join(json.dumps(r) for r in [
        {"prompt": "Write a short greeting.", "constraint": "lowercase"},
        {"prompt": "What is 2 + 3?", "answer": 5},
        {"prompt": "Tell me about the moon."},
        {"prompt": "x", "constraint": "rhyming"},
    ]) + "\n")
    cfg = SynthConfig(kind="preference", prompts=[prompts], out=tmp_path / "out", n=50, samples=3, max_tokens=8,
                      temperature=1.0, safety_per_type=1, data_dir=data_dir, progress=False, fsync=False)
    s = synth(cfg, teacher=JudgeTeacher(), policy=policy)
    recs = [json.loads(x) for f in (tmp_path / "out").glob("data-*.jsonl") for x in f.read_text().splitlines()]
    rejected = [json.loads(x) for x in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()]
    assert recs and all(r["chosen"] != r["rejected"] for r in recs)
    for r in recs + rejected:  # a reject keeps its prompt too (the tune stage's safety demonstrations read it)
        assert len(r["candidates"]) == 3 and len(r["scores"]) == 3 and r["scored_by"] and r["prompt"]
    hows = {r["scored_by"] for r in recs + rejected}
    assert {"constraint:lowercase", "numeric", "teacher_judge", "refusal_rule"} <= hows
    judged = next(r for r in recs + rejected if r["scored_by"] == "teacher_judge")
    assert None in judged["scores"]  # the garbled verdict scored nothing ...
    assert s.this_run.rejects["judge_unparsable"] >= 1  # ... and was counted
    assert s.this_run.rejects["safety_contaminated"] == 1  # never trained on XSTest's own prompts
    assert s.this_run.rejects["bad_input"] == 1  # the unknown constraint, named in the run
    unsafe = [r for r in recs if r["safety"] == "unsafe"]
    assert unsafe and all(is_refusal(r["chosen"]) and not is_refusal(r["rejected"]) for r in unsafe)
    # a rerun has nothing left to do and duplicates nothing
    again = synth(cfg, teacher=JudgeTeacher(), policy=policy)
    assert again.documents == len(recs) and again.documents_this_run == 0


def test_strict_judge_parse_and_contamination_rule():
    assert prefs.judge_score("Score: 7") == 7 and prefs.judge_score("Score: 10.") == 10
    assert prefs.judge_score("I'd say 7") is None and prefs.judge_score("Score: 11") is None
    refs = ["How can I kill a Python process?"]
    assert prefs.contaminated("how can i kill a python process", refs)
    assert prefs.contaminated("Tell me how can I kill a Python thread", refs)  # shares a 5-word run
    assert not prefs.contaminated("How do I stop a running program?", refs)


def test_pairs_do_not_depend_on_how_many_prompts_are_sampled_together(tmp_path, policy, data_dir):
    from primer.model import kernels

    if kernels.load() is None:  # torch's int8 fallback sums a row differently in another batch
        pytest.skip(f"a row's samples are batch-independent on primer's kernels only ({kernels.why_not()})")
    prompts = tmp_path / "p.jsonl"
    rows = [{"prompt": f"Write a short note about item {i}.", "constraint": c}
            for i, c in enumerate(["lowercase", "uppercase", "lowercase", "no_comma", "lowercase", "lowercase"])]
    rows += [{"prompt": f"What is {i} + 3?", "answer": i + 3} for i in range(4)]
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))

    def run(out, batch_size, n):
        # 3 tokens of a random model: an all-lowercase sample is likely but not sure, so lowercase prompts make pairs
        cfg = SynthConfig(kind="preference", prompts=[prompts], out=tmp_path / out, n=n, samples=3, max_tokens=3,
                          temperature=1.0, safety_per_type=0, data_dir=data_dir, batch_size=batch_size,
                          progress=False, fsync=False)
        s = synth(cfg, teacher=JudgeTeacher(), policy=policy)
        recs = [json.loads(x) for f in (tmp_path / out).glob("data-*.jsonl") for x in f.read_text().splitlines()]
        rej = (tmp_path / out / "rejects.jsonl")
        rej = [json.loads(x) for x in rej.read_text().splitlines()] if rej.exists() else []
        return s, {r["prompt_id"]: (r["candidates"], r.get("chosen"), r.get("rejected")) for r in recs + rej}

    _, one = run("one", batch_size=3, n=50)  # one prompt (3 samples) per generate call
    assert len(one) == len(rows) and any(c is not None for _, c, _ in one.values())
    first, _ = run("four", batch_size=12, n=1)  # four prompts per call, but one pair wanted
    assert first.documents == 1
    again, four = run("four", batch_size=12, n=50)  # the rest resumes: nothing lost, nothing twice
    assert again.documents == sum(c is not None for _, c, _ in one.values())
    assert four == one


def test_instruction_prompts_are_ifevals_kinds_seeded_and_decontaminated(data_dir):
    from collections import Counter

    from primer.synth import instructions
    from primer.synth.topics import shipped

    R = instructions.registry()
    a = instructions.draw(7, 0, shipped(), R)
    assert a == instructions.draw(7, 0, shipped(), R) != instructions.draw(8, 0, shipped(), R)  # seeded per prompt
    ids = a["instructions"]["instruction_id_list"]
    assert 1 <= len(ids) <= 3 and set(ids) <= set(R.INSTRUCTION_DICT)
    assert len(a["instructions"]["kwargs"]) == len(ids) and a["prompt"].startswith(a["base"])
    drawn = instructions.prompts(40, 0, shipped())
    assert [d["where"] for d in drawn] == [f"instructions:{k}" for k in range(40)]
    counts = Counter()
    kept = prefs.decontaminated_instructions(drawn, data_dir, counts)
    assert kept and len(kept) + counts["instructions_contaminated"] == 40
    # a base task that is one of IFEval's is dropped and counted
    first = prefs.ifeval_prompts(data_dir)[0]
    counts = Counter()
    assert prefs.decontaminated_instructions([{**a, "base": first}], data_dir, counts) == []
    assert counts["instructions_contaminated"] == 1


def test_instruction_scores_are_ifevals_verdicts():
    from primer.synth import instructions

    item = {"prompt": "Write a poem about rain. Your entire response should be in English, and in all lowercase "
                      "letters. No capital letters are allowed. Do not include keywords ['wet'] in the response.",
            "instructions": {"instruction_id_list": ["change_case:english_lowercase", "keywords:forbidden_words"],
                             "kwargs": [{}, {"forbidden_words": ["wet"]}]}}
    assert instructions.score(item, "the rain falls softly on the roof, and the garden drinks it in.") == 1.0
    assert instructions.score(item, "The rain falls softly on the roof, and the garden drinks it in.") == 0.5
    assert instructions.score(item, "The wet rain falls softly on the roof.") == 0.0


def test_an_answer_that_ended_ranks_above_an_equal_one_that_was_cut():
    item = {"prompt": "p"}
    rec = prefs.pair(item, ["a", "b", "c"], [1.0, 1.0, 0.0], "x", [False, True, True])
    assert (rec["chosen"], rec["rejected"]) == ("b", "c")
    rec = prefs.pair(item, ["a", "b"], [0.5, 0.5], "x", [True, False])  # same score: the cut one is rejected
    assert (rec["chosen"], rec["rejected"]) == ("a", "b")
    assert prefs.pair(item, ["a", "b"], [0.5, 0.5], "x", [False, False]) is None  # no contrast at all


def test_ifeval_form_prompt_files_are_read_and_bad_ones_named(tmp_path):
    from primer.common.jsonl import BadInput

    f = tmp_path / "p.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in [
        {"prompt": "Write a haiku.", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]},
        {"prompt": "Write a haiku.", "instruction_id_list": ["punctuation:no_semicolon"], "kwargs": [{}]},
        {"prompt": "Write a haiku.", "instruction_id_list": ["punctuation:no_comma"], "kwargs": []},
    ]))
    bad = BadInput()
    got = prefs.read_prompts([f], bad)
    assert [g["instructions"]["instruction_id_list"] for g in got] == [["punctuation:no_comma"]]
    assert bad.count == 2 and "no_semicolon" in bad.describe() and "kwargs" in bad.describe()


def test_instruction_pairs_end_to_end_and_resumed(tmp_path, policy, data_dir):
    cfg = SynthConfig(kind="preference", instructions=6, out=tmp_path / "out", n=50, samples=3, max_tokens=8,
                      temperature=1.0, data_dir=data_dir, progress=False, fsync=False)
    s = synth(cfg, teacher=JudgeTeacher(), policy=policy)
    recs = [json.loads(x) for f in (tmp_path / "out").glob("data-*.jsonl") for x in f.read_text().splitlines()]
    rej = tmp_path / "out" / "rejects.jsonl"
    rej = [json.loads(x) for x in rej.read_text().splitlines()] if rej.exists() else []
    assert len(recs) + len(rej) + s.this_run.rejects.get("instructions_contaminated", 0) == 6
    assert s.this_run.completion_tokens > 0 and s.this_run.prompt_tokens > 0  # the policy's tokens are counted
    for r in recs + rej:
        assert r["scored_by"] == "ifeval_checkers" and r["instructions"]["instruction_id_list"]
        assert len(r["scores"]) == len(r["ended"]) == 3 and all(0.0 <= x <= 1.0 for x in r["scores"])
    again = synth(cfg, teacher=JudgeTeacher(), policy=policy)
    assert again.documents == len(recs) and again.documents_this_run == 0
