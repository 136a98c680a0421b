"""What a benchmark task is: a declarative entry, plus the helpers every task family shares.

A `Task` says where its data is (files under a data dir laid out like `shared/benchmarks`, which
`primer data pull` fills from the Hugging Face Hub), how a document becomes a prompt (`doc_to_text`),
its choices or target, where few-shot examples come from, its metrics, and the text used for
decontamination.
Loaders turn whatever file format is on disk into documents in the *Hugging Face schema* of that
dataset (the one lm-evaluation-harness reads), so prompts are written once against the schema
lm-eval uses, and the same documents can be fed to lm-eval for the agreement check.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from primer.common.paths import no_data_message, pull_hint
from primer.errors import PrimerError

Doc = dict[str, Any]
Kind = Literal["multiple_choice", "loglikelihood", "generate", "rolling"]

# lm-eval's default seed for its few-shot sampler (TaskConfig.fewshot_config / fewshot_random_seed).
FEWSHOT_SEED = 1234


@dataclass(frozen=True)
class Judge:
    """A rubric a teacher model answers about each reply, beside the task's own rule (`primer eval --judge`)."""

    prompt: Callable[[Doc, str], str]
    """(document, reply) -> the question put to the judge"""
    parse: Callable[[str], str | None]
    """the judge's answer -> its label, or None when it gives no single label (counted, never guessed)"""
    score: Callable[[Doc, str], dict[str, float]]
    """(document, label) -> per-document metric values (named judge_...)"""
    max_tokens: int = 16
    rubric: str = ""
    """where the rubric comes from (shown with the results)"""


@dataclass(frozen=True)
class Task:
    name: str
    """Registry name, e.g. 'arc_easy' or 'mmlu_anatomy'."""
    version: str
    """Version of this entry; bump when the prompt, data handling or metric changes."""
    kind: Kind
    """multiple_choice (pick the likeliest choice), loglikelihood (one continuation), generate, rolling (perplexity)."""
    files: tuple[str, ...]
    """Data files this task reads, relative to the data dir; the first is the evaluated split."""
    layout: str
    """The expected layout and format of those files, quoted in the missing-file error."""
    loader: Callable[[Path, str], list[Doc]]
    """(data_dir, split) -> documents in the HF schema of this dataset."""
    split: str
    """The evaluated split."""
    doc_to_text: Callable[[Doc], Any]
    """Document -> context string (for multiple_input tasks: the gold index, as lm-eval does)."""
    doc_to_target: Callable[[Doc], Any]
    """Document -> gold choice index, gold string(s), or the continuation of multiple_input tasks."""
    metrics: tuple[str, ...]
    """Metric names reported for this task, the primary one first."""
    doc_to_choice: Callable[[Doc], list[str]] | None = None
    """Document -> choice strings (multiple_choice only)."""
    decontam: Callable[[Doc], str | tuple[str, ...]] | None = None
    """Document -> the item as a model could memorise it, the text n-gram decontamination looks for: a tuple of
    parts, the *solved item* first (its context and question followed by the correct answer, in reading order,
    without prompt words, so a copy of question + answer contains it), then each other choice and any part worth
    finding alone (`solved_parts` builds it). N-grams never span two parts. Default: the prompt."""
    multiple_input: bool = False
    """Choices are contexts sharing one continuation (WinoGrande partial scoring)."""
    target_delimiter: str = " "
    """Placed between the context and a choice/target."""
    fewshot_delimiter: str = "\n\n"
    """Placed between few-shot examples."""
    fewshot_split: str | None = None
    """Split few-shot examples come from; None = the evaluated split minus the current document."""
    fewshot_sampler: Literal["random", "first_n"] = "random"
    """How examples are drawn: seeded random sample (lm-eval default) or the first n (MMLU dev)."""
    fewshot_docs: Callable[[], list[Doc]] | None = None
    """Fixed few-shot documents (MBPP's prompt split), overriding fewshot_split."""
    fewshot_target: Callable[[Doc], str] | None = None
    """Target text of a few-shot example when it differs from doc_to_target (MBPP: the code)."""
    default_shots: int = 0
    """Shots used when the user does not pass --shots (lm-eval's num_fewshot for this task)."""
    description: Callable[[Doc], str] | None = None
    """Text put once before the few-shot examples (MMLU's subject line)."""
    until: tuple[str, ...] = ()
    """Stop strings for generation."""
    max_tokens: int = 256
    """Generation budget in tokens."""
    pass_at_k: bool = False
    """Generative code tasks: draw `--samples` completions per problem and report pass@k for k <= samples."""
    doc_schema: str = ""
    """The document schema, where code outside the task relies on it (e.g. 'gsm8k': a question and a worked
    answer with <<calculator>> annotations and '#### n', which the audit's perturbations rewrite)."""
    score: Callable[[Doc, list[str]], dict[str, float]] | None = None
    """Generative tasks: (doc, responses) -> per-document metric values."""
    runs_code: bool = False
    """`score` executes model-written code (in `primer.sandbox`), so the run needs isolation or --unsafe-code."""
    judge: Judge | None = None
    """Generative tasks with a rubric: a teacher labels each reply with it when eval is given --judge."""
    group: str | None = None
    """Name of the group this task belongs to (e.g. 'mmlu'); the group reports micro and macro averages."""
    query: Callable[[Doc], str] | None = None
    """Open-book tasks: the text searched in the --index; the runner adds the top hits to the document
    as `retrieved` (20, for recall@k) and `passages` (the first --passages, which the prompt shows)."""
    notes: str = ""
    """Where this entry differs from lm-eval and why (shown in results JSON)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Task-specific settings (e.g. n samples and k for pass@k)."""
    chat: bool = False
    """Generative tasks: send the prompt as one user turn through the model's chat template (IFEval, XSTest)."""
    aggregations: dict[str, Callable[[list], dict[str, float]]] = field(default_factory=dict)
    """Metric name -> (per-document values -> {suffix: number}), suffix "" the value, "_stderr" its error, and
    any others (e.g. "_ci_low"); metrics not named here are means with lm-eval's mean_stderr."""

    # -- data ---------------------------------------------------------------------------------
    def docs(self, data_dir: Path | str | None, split: str | None = None) -> list[Doc]:
        """Documents of `split` (default: the evaluated split) from `data_dir` (None: no data was found)."""
        split = split or self.split
        if data_dir is None:
            raise PrimerError(f"task {self.name}: {no_data_message([self.name])}")
        data_dir = Path(data_dir)
        for rel in self.files:
            if not (data_dir / rel).is_file():
                raise PrimerError(
                    f"task {self.name}: data file {data_dir / rel} not found. Expected layout under "
                    f"--data-dir: {self.layout}. Point --data-dir (or PRIMER_DATA) at a folder laid "
                    f"out like shared/benchmarks, or fetch it: {pull_hint([self.name])}"
                )
        return self.loader(data_dir, split)

    def fewshot_pool(self, data_dir: Path | str | None) -> list[Doc] | None:
        if self.fewshot_docs is not None:
            return self.fewshot_docs()
        if self.fewshot_split is None:
            return None
        return self.docs(data_dir, self.fewshot_split)

    # -- prompts ------------------------------------------------------------------------------
    def target_text(self, doc: Doc) -> str:
        """The gold answer as text (few-shot examples show it after the context)."""
        if self.fewshot_target is not None:
            return self.fewshot_target(doc)
        target = self.doc_to_target(doc)
        if self.kind == "multiple_choice" and not self.multiple_input:
            return self.doc_to_choice(doc)[target]  # type: ignore[misc]
        if isinstance(target, list):
            return str(target[0])
        return str(target)

    def example_text(self, doc: Doc) -> str:
        """One solved few-shot example: context + delimiter + gold target."""
        if self.multiple_input:
            ctx = self.doc_to_choice(doc)[self.doc_to_text(doc)]  # type: ignore[misc]
            return ctx + self.target_delimiter + str(self.doc_to_target(doc))
        return self.doc_to_text(doc) + self.target_delimiter + self.target_text(doc)

    def fewshot_prefix(self, doc: Doc, shots: int, pool: list[Doc] | None, rnd: random.Random) -> str:
        """Description + `shots` solved examples (each followed by fewshot_delimiter)."""
        desc = self.description(doc) if self.description else ""
        if shots <= 0:
            return desc
        if self.fewshot_sampler == "first_n" or self.fewshot_docs is not None:
            examples = (pool or [])[:shots]
        else:
            # lm-eval: sample n+1 and drop the document itself when sampling from its own split.
            examples = [d for d in rnd.sample(pool or [], min(shots + 1, len(pool or []))) if d is not doc and d != doc]
            examples = examples[:shots]
        return desc + "".join(self.example_text(e) + self.fewshot_delimiter for e in examples)

    def decontam_parts(self, doc: Doc) -> tuple[str, ...]:
        """The item's decontamination parts (`decontam`), the solved item first; empty parts dropped."""
        if self.decontam is not None:
            got = self.decontam(doc)
            parts = (got,) if isinstance(got, str) else tuple(got)
        else:
            text = self.doc_to_text(doc)
            parts = (text if isinstance(text, str) else str(self.doc_to_target(doc)),)
        return tuple(p for p in parts if p and p.strip())

    def decontam_text(self, doc: Doc) -> str:
        """The whole item as one text (its parts, one a line)."""
        return "\n".join(self.decontam_parts(doc))


# -- small helpers shared by the families (their JSONL files are read by primer.common.jsonl, strict:
# a malformed line in a benchmark file stops with its file and line, it is never skipped) -------
def need_split(task: str, split: str, have: tuple[str, ...]) -> None:
    if split not in have:
        raise PrimerError(f"task {task}: split '{split}' is not available locally; available: {', '.join(have)}")


def solved_parts(context: str, choices: list[str], gold: int) -> tuple[str, ...]:
    """A multiple-choice item's decontamination parts: context + correct choice, then each other choice."""
    return (f"{context} {choices[gold]}",) + tuple(c for i, c in enumerate(choices) if i != gold)


def strip_prefix(text: str, prefix: str) -> str:
    return text[len(prefix):] if text.startswith(prefix) else text
