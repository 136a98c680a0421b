"""Which perturbations apply to a task: the GSM8K suite, the multiple-choice suite, and the
generic text ones for everything else (see `perturb` for what each perturbation does)."""

from __future__ import annotations

import random

from primer.audit import gsm_numbers
from primer.audit.perturb import (Doc, Perturbation, linebreaks, noop_clause, reframe, shuffle_options, spacing,
                                  swap_names)
from primer.audit.symbolic import symbolic_perturbation
from primer.errors import PrimerError


def gsm_suite() -> list[Perturbation]:
    def numbers(doc: Doc, rng: random.Random) -> Doc | None:
        try:
            rb = gsm_numbers.rebuild(doc)
        except gsm_numbers.RebuildError:
            return None
        v = gsm_numbers.substitute(rb, rng)
        return None if v is None else {**doc, "question": v["question"], "answer": v["answer"],
                                        "_substitution": v["substitution"]}

    return [
        Perturbation("numbers", "new numbers from the rebuilt calculator graph", numbers, task_kind="gsm8k"),
        Perturbation("names", "people and objects renamed", swap_names),
        Perturbation("noop", "irrelevant sentence with a number added (GSM-NoOp)", noop_clause, task_kind="gsm8k"),
        Perturbation("linebreak", "one sentence per line", linebreaks),
        Perturbation("spacing", "doubled spaces", spacing),
        Perturbation("framing", "Question:/Answer: -> Q:/A:", prompt=reframe),
        Perturbation("zeroshot", "few-shot examples removed", shots=0),
    ]


def mc_suite() -> list[Perturbation]:
    return [
        Perturbation("mcf", "options shown as a lettered A-D list (baseline for shuffle/relabel)",
                     extra={"lettered": True, "labels": "ABCDEFGHIJ"}),
        Perturbation("shuffle", "options reordered, lettered list", shuffle_options, baseline="mcf",
                     extra={"lettered": True, "labels": "ABCDEFGHIJ"}),
        Perturbation("relabel", "lettered list labelled 1-4 instead of A-D", baseline="mcf",
                     extra={"lettered": True, "labels": "1234567890"}),
        Perturbation("linebreak", "one sentence per line", linebreaks),
        Perturbation("spacing", "doubled spaces", spacing),
        Perturbation("framing", "Question:/Answer: -> Q:/A:", prompt=reframe),
    ]


def suite_for(task, names: list[str] | None = None) -> list[Perturbation]:
    """The perturbations that apply to `task`, optionally only those named."""
    if task.kind == "multiple_choice":
        suite = mc_suite()
    else:
        suite = gsm_suite() if task.name.startswith("gsm") else [
            p for p in gsm_suite() if p.task_kind == "any"]
        if task.name.startswith("gsm"):
            suite.insert(1, symbolic_perturbation())
    if names:
        known = {p.name for p in suite}
        missing = [n for n in names if n not in known]
        if missing:
            raise PrimerError(f"perturbation(s) {missing} do not apply to {task.name}; available: {sorted(known)}")
        keep = set(names) | {p.baseline for p in suite if p.name in names}
        suite = [p for p in suite if p.name in keep]
    return suite
