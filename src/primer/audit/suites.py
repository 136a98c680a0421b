"""Which perturbations apply to a task: the multiple-choice suite, or the generative one (GSM8K's
perturbations where the task's documents have GSM8K's schema, and the generic text ones) -- see
`perturb` for what each perturbation does and the fields that say how the audit treats it."""

from __future__ import annotations

import random

from primer.audit import gsm_numbers
from primer.audit.perturb import (Doc, Perturbation, linebreaks, noop_clause, reframe, shuffle_options, spacing,
                                  swap_names)
from primer.audit.symbolic import symbolic_perturbation
from primer.errors import PrimerError


def generative_suite() -> list[Perturbation]:
    """GSM8K's perturbations (new numbers, GSM-Symbolic, GSM-NoOp) and the text ones every generative task gets."""

    def numbers(doc: Doc, rng: random.Random) -> Doc | None:
        try:
            rb = gsm_numbers.rebuild(doc)
        except gsm_numbers.RebuildError:
            return None
        v = gsm_numbers.substitute(rb, rng)
        return None if v is None else {**doc, "question": v["question"], "answer": v["answer"],
                                        "_substitution": v["substitution"]}

    def coverage(docs: list[Doc], all_docs: list[Doc], data_dir, seed: int) -> tuple[list[Doc], dict]:
        _, cov = gsm_numbers.number_variants([{"question": d["question"], "answer": d["answer"]} for d in docs], 1,
                                             seed)
        return docs, {"numbers_coverage": cov.to_dict()}

    return [
        Perturbation("numbers", "new numbers from the rebuilt calculator graph", numbers, applies_to="gsm8k",
                     randomised=True, content=True, matched=True, prepare=coverage),
        symbolic_perturbation(),
        Perturbation("names", "people and objects renamed", swap_names, randomised=True, content=True, matched=True),
        Perturbation("noop", "irrelevant sentence with a number added (GSM-NoOp)", noop_clause, applies_to="gsm8k",
                     randomised=True, content=True),
        Perturbation("linebreak", "one sentence per line", linebreaks),
        Perturbation("spacing", "doubled spaces", spacing),
        Perturbation("framing", "Question:/Answer: -> Q:/A:", prompt=reframe),
        Perturbation("zeroshot", "few-shot examples removed", shots=0),
    ]


def mc_suite() -> list[Perturbation]:
    return [
        Perturbation("mcf", "options shown as a lettered A-D list (baseline for shuffle/relabel)", lettered=True,
                     is_baseline=True),
        Perturbation("shuffle", "options reordered, lettered list", shuffle_options, baseline="mcf", lettered=True,
                     randomised=True, content=True),
        Perturbation("relabel", "lettered list labelled 1-4 instead of A-D", baseline="mcf", lettered=True,
                     labels="1234567890", content=True),
        Perturbation("linebreak", "one sentence per line", linebreaks),
        Perturbation("spacing", "doubled spaces", spacing),
        Perturbation("framing", "Question:/Answer: -> Q:/A:", prompt=reframe),
    ]


def suite_for(task, names: list[str] | None = None) -> list[Perturbation]:
    """The perturbations that apply to `task` (by its kind and `doc_schema`), optionally only those named."""
    if task.kind == "multiple_choice":
        suite = mc_suite()
    else:
        suite = [p for p in generative_suite() if p.applies_to in ("any", task.doc_schema)]
    if names:
        known = {p.name for p in suite}
        missing = [n for n in names if n not in known]
        if missing:
            raise PrimerError(f"perturbation(s) {missing} do not apply to {task.name}; available: {sorted(known)}")
        keep = set(names) | {p.baseline for p in suite if p.name in names}
        suite = [p for p in suite if p.name in keep]
    return suite
