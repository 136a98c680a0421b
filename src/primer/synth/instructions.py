"""Verifiable-instruction prompts for the preference kind: a writing task from the topic grid with one to three of
IFEval's 25 instruction kinds attached, ranked by IFEval's own checkers.

IFEval's prompts were made this way (Zhou et al. 2023: a base prompt, then instructions whose text comes from each
checker's `build_description` with drawn arguments); Tulu 3's "IF" preference data did the same with other base
prompts. Here the base prompt is "Write <a form> about <a topic>." over primer's topic tree, and the instruction
text, its arguments and the verdicts all come from lm-evaluation-harness's port of the checkers
(`primer.eval.ifeval`), so an answer is ranked by the rule IFEval scores with: the share of its instructions it
follows (strict). The record has IFEval's own fields (`instruction_id_list`, `kwargs`), so a user's IFEval-form
prompt file (`--prompts`) is ranked the same way.

What the model learns is IFEval's instruction *kinds*, which is the point of the data, so a score gained this
way says the model follows those kinds; the base prompts are checked against IFEval's 541 so none of its tasks is
seen (`primer.synth.prefs` drops a prompt whose base task shares an 8-word run with one of them; the instruction
text is IFEval's by construction and left out of that check). The draws are seeded per prompt, so a rerun writes
the same prompts.
"""

from __future__ import annotations

import random

FORMS = ("a short essay", "a blog post", "a letter to a friend", "a short story", "a poem", "a speech",
         "an explanation for a ten-year-old", "a list of tips", "an email to a teacher", "a product description",
         "a summary", "a diary entry")


def registry():
    """lm-eval's `instructions_registry` module (`INSTRUCTION_DICT`: id -> checker class), imported with Punkt and
    langdetect set up by `primer.eval.ifeval`."""
    from primer.eval.ifeval import checkers

    checkers()
    from lm_eval.tasks.ifeval import instructions_registry as R

    return R


def draw(k: int, seed: int, topics: list, R) -> dict:
    """Prompt k: a base task and 1-3 non-conflicting instructions, drawn from a `random.Random` seeded by (seed, k).

    The checkers draw their missing arguments from the global `random`; it is seeded for the call and restored."""
    rng = random.Random(f"instructions-{seed}-{k}")
    topic = rng.choice(topics)
    base = f"Write {rng.choice(FORMS)} about {topic.name}."
    want = rng.choice((1, 1, 2, 2, 3))  # IFEval averages 1.5 instructions a prompt
    ids: list[str] = []
    for iid in rng.sample(list(R.INSTRUCTION_DICT), len(R.INSTRUCTION_DICT)):
        if len(ids) == want:
            break
        if not any(iid in R.INSTRUCTION_CONFLICTS.get(c, ()) or c in R.INSTRUCTION_CONFLICTS.get(iid, ()) for c in ids):
            ids.append(iid)
    state = random.getstate()
    random.seed(rng.getrandbits(64))
    try:
        texts, kwargs = [], []
        for iid in ids:
            inst = R.INSTRUCTION_DICT[iid](iid)
            texts.append(inst.build_description(prompt_to_repeat=base) if iid == "combination:repeat_prompt"
                         else inst.build_description())
            kwargs.append({a: v for a, v in (inst.get_instruction_args() or {}).items() if v is not None})
    finally:
        random.setstate(state)
    return {"prompt": " ".join([base, *texts]), "base": base, "instructions": {"instruction_id_list": ids,
                                                                                  "kwargs": kwargs},
            "where": f"instructions:{k}"}


def prompts(n: int, seed: int, topics: list) -> list[dict]:
    """Prompts 0..n-1 (`draw`); `primer.synth.prefs` checks their base tasks against IFEval's."""
    R = registry()
    return [draw(k, seed, topics, R) for k in range(n)]


def unknown(instruction_ids) -> list[str]:
    """The ids lm-eval's registry does not know (for a user's prompt file)."""
    R = registry()
    return [i for i in instruction_ids if i not in R.INSTRUCTION_DICT]


def score(item: dict, answer: str) -> float:
    """The share of the item's instructions the answer follows, strictly (IFEval's instruction-level rule)."""
    from primer.eval.ifeval import score_ifeval

    doc = {"key": 0, "prompt": item["prompt"], **item["instructions"]}
    verdicts = score_ifeval(doc, [answer])["inst_level_strict_acc"]
    return sum(verdicts) / len(verdicts)
