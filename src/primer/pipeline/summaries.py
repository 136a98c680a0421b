"""What each stage hands the report: one dataclass per stage, the report's contract.

A stage's adapter (`primer.pipeline.stages`) returns one of these; the runner stores it in
`RUN_DIR/<stage>/stage.json` as JSON (`config.to_dict`) and reads it back with `read_summary`, which
fails, naming the field, when one the report shows is missing (a field without a default is one the
report shows). So a stage that stops producing a field breaks a test, not a table cell.

Every summary of a stage that reads input files carries `bad_input`: the lines it could not use,
counted and named, which the report prints under the stage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from primer.common.jsonl import BadInput
from primer.config import from_dict
from primer.errors import PrimerError


@dataclass
class DocSample:
    """A document shown in the report."""

    title: str
    text: str
    """cut to a couple of thousand characters"""
    id: str | None = None
    source: str | None = None
    format: str | None = None
    audience: str | None = None
    edu_score: float | None = None


@dataclass
class SynthSummary:
    teacher: str
    documents: int
    tokens: int
    tokens_per_s: float | None
    rejects: dict[str, int]
    """reject reason -> documents"""
    near_dup_rate: float | None
    distinct_ngram_ratio: float | None
    by_format: dict[str, int]
    by_audience: dict[str, int]
    verification: dict[str, dict[str, int]]
    """format -> sandbox check status (verified, failed, timeout, unverifiable) -> documents; only verified are kept"""
    samples: list[DocSample]
    data: list[str]
    """the document files written (the next stage's input)"""
    bad_input: BadInput


@dataclass
class SourceCounts:
    read: int
    kept: int


@dataclass
class DedupCounts:
    exact: int
    near: int


@dataclass
class DecontamCounts:
    dropped: int
    """documents dropped for containing benchmark text"""
    matches: dict[str, int]
    """benchmark -> documents dropped for it"""
    items: int
    """distinct benchmark items found"""
    n: dict[str, int]
    """benchmark -> the n-gram size used for it"""
    unchecked: dict[str, int]
    """benchmark -> items whose question + answer is too short to check (named in curate/stats.json)"""


@dataclass
class CurateSummary:
    web_input: str | None
    sources: dict[str, SourceCounts]
    """'synth' / 'web' -> documents read and kept"""
    documents_in: int
    documents_kept: int
    rejects: dict[str, int]
    """'step:reason' -> documents"""
    edu_scores: list[float] | None
    edu_threshold: float | None
    dedup: DedupCounts | None
    """None: dedup off"""
    dedup_settings: str | None
    decontam: DecontamCounts | None
    """None: decontamination off"""
    samples: list[DocSample]
    data: list[str]
    bad_input: BadInput
    quality: dict[str, Any] | None = None
    """the quality filter's model, window and limits (None: off)"""
    quality_nll: dict[str, int] | None = None
    """histogram of the mean NLL of every document the quality filter scored (bin lower edge -> documents)"""


@dataclass
class TokenizeSummary:
    tokenizer: str
    vocab_size: int
    train_documents: int
    train_tokens: int
    val_documents: int
    val_tokens: int
    tokenizer_hash: str
    bad_input: BadInput


@dataclass
class Curve:
    step: list[int]
    loss: list[float]


@dataclass
class TrainSummary:
    shape: str
    params: int
    steps: int
    tokens: int
    tokens_per_s: float | None
    mfu: float | None
    final_train_loss: float | None
    final_val_loss: float | None
    curve: Curve
    val_curve: Curve
    checkpoint: str
    samples: list[str]


@dataclass
class EvalRow:
    """One task: our model's primary metric beside the reference's, on the same items."""

    metric: str | None
    n: int
    shots: int
    model: float | None
    model_stderr: float | None
    teacher: float | None = None
    teacher_stderr: float | None = None
    published: float | None = None
    """the reference's published score, in percent, where known (no stage fills it yet)"""
    chance: float | None = None
    """accuracy of guessing, where known (no stage fills it yet)"""


@dataclass
class Generation:
    prompt: str
    model: str | None = None
    teacher: str | None = None


@dataclass
class EvalSummary:
    skipped: str | None
    """why benchmarks were not run (None: they were)"""
    model: str
    teacher: str | None
    tasks: dict[str, EvalRow]
    generations: list[Generation]
    data: str | None = None
    """what the scores rest on when it is not a full data folder (the embedded slice), and how to get more"""


@dataclass
class Gap:
    """One perturbation's effect on the score, with its paired-bootstrap interval."""

    task: str
    suite: str
    description: str
    baseline: str
    n: int
    original: float | None
    perturbed: float | None
    drop: float | None
    ci_low: float | None
    ci_high: float | None
    significant: bool


@dataclass
class Signal:
    task: str
    signal: str
    value: str
    verdict: str


@dataclass
class AuditSummary:
    skipped: str | None
    """why the audit was not run (None: it was)"""
    task: str | None
    items: int | None
    metric: str | None
    baselines: dict[str, Any] | None
    gaps: list[Gap]
    contamination: list[Signal]
    bad_input: BadInput
    data: str | None = None
    """what the audit rests on when it is not a full data folder (the embedded slice), and how to get more"""


@dataclass
class TuneRow:
    """One metric of one task, before and after tuning, on the same items."""

    task: str
    metric: str
    n: int
    before: float | None
    after: float | None
    before_ci: list[float] | None = None
    """the task's own 95% interval of `before` where it gives one (XSTest's Wilson intervals)"""
    after_ci: list[float] | None = None
    diff_ci: list[float] | None = None
    """95% paired-bootstrap interval of after - before on the same items"""


@dataclass
class TuneRound:
    """What one on-policy round of the tune stage used ([tune] rounds)."""

    pairs: int
    safety_sft: int
    verified_sft: int
    sft_steps: int
    """0: the round had no SFT data and went straight to DPO"""
    dpo_steps: int


@dataclass
class TuneSummary:
    skipped: str | None
    """why the stage did not tune (None: it did); the other fields are then None or empty"""
    model: str | None
    conversations: int | None
    pairs: int | None
    sft_curve: Curve | None
    dpo_curve: Curve | None
    dpo_margin: Curve | None
    """DPO's reward margin beta * (r_chosen - r_rejected) per step"""
    rows: list[TuneRow]
    checkpoint: str | None
    seconds: dict[str, float]
    safety_sft: int = 0
    """safety demonstrations that joined the SFT data (beside `conversations`)"""
    verified_sft: int = 0
    """verified on-policy replies that joined the SFT data (rejection sampling, [tune] verified_sft)"""
    rounds: list[TuneRound] = field(default_factory=list)
    """one per on-policy round ([tune] rounds); the counts above are over all of them and the curves count steps on
    across them"""


@dataclass
class ExportSummary:
    path: str
    """the exported GGUF file (or HF directory), relative to the run directory"""
    format: str
    arch: str
    quant: str | None
    bytes: int
    chat: str
    """the command that chats with it"""


def read_summary(cls: type, data: Any, stage: str) -> Any:
    """A stored summary as `cls`; a PrimerError naming the stage and field when it does not fit."""
    if not isinstance(data, dict):
        raise PrimerError(f"stage '{stage}': stored summary is not a JSON object")
    try:
        return from_dict(cls, data, where="summary", what="field")
    except PrimerError as e:
        raise PrimerError(f"stage '{stage}': {e} (written by another primer version? re-run the stage)") from None
