"""What `audit` returns (and writes as audit.json): typed, so the report, the `primer run` stage and
the terminal table read named fields.

The contamination signals' own outputs stay plain dicts (each signal has its own numbers, see
`contamination`); the verdict line per signal (`Verdict`) is what readers compare.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from primer.common.jsonl import BadInput


@dataclass
class Baseline:
    """A condition the perturbations are compared with (the original prompt, or the lettered list)."""

    n: int
    acc: float
    ci: tuple[float, float]
    at_chance: bool
    """its interval reaches the accuracy of guessing: a change against it is position bias, not evidence"""


@dataclass
class Condition:
    """One perturbation scored on the same items as its baseline (paired bootstrap, `stats.PairedResult`)."""

    name: str
    description: str
    baseline: str
    content: bool
    """it changes what the item says (not only its format): a significant drop is evidence"""
    n: int
    """items it applied to (0: skipped)"""
    skipped: str | None = None
    acc_orig: float | None = None
    acc_pert: float | None = None
    ci_orig: tuple[float, float] | None = None
    ci_pert: tuple[float, float] | None = None
    drop: float | None = None
    drop_ci: tuple[float, float] | None = None
    p_bootstrap: float | None = None
    p_mcnemar: float | None = None
    significant: bool = False
    variants: int = 0
    baseline_at_chance: bool = False


@dataclass
class Robustness:
    """The perturbation half of the audit."""

    metric: str
    shots: int
    baselines: dict[str, Baseline]
    conditions: list[Condition]
    chance: float | None = None
    """multiple choice: mean accuracy of guessing over the items"""
    memorisation: dict[str, Any] = field(default_factory=dict)
    """baseline -> the memorisation signature (`stats.Signature`) with the pooled conditions and examples"""
    coverage: dict[str, Any] = field(default_factory=dict)
    """what the perturbations could be applied to (e.g. GSM8K items rebuilt with new numbers)"""


FLAGGED, NOT_FLAGGED, NO_EVIDENCE, NOT_MEASURED = "flagged", "not flagged", "no evidence", "not measured"
STATES = (FLAGGED, NOT_FLAGGED, NO_EVIDENCE, NOT_MEASURED)
"""What a verdict can say (see `evidence`): a signal that did not run or saw no data is never "not flagged"."""


@dataclass
class Verdict:
    signal: str
    state: str
    """one of STATES"""
    verdict: str
    """what was measured, on how many items, the effect and the rule that decided the state"""
    n: int = 0
    """audited items the signal saw (0: it saw none)"""
    n_control: int = 0
    """controls (items, pairs or shards) it compared them with"""
    effect: float | None = None
    ci: tuple[float, float] | None = None
    p: float | None = None
    p_holm: float | None = None
    """p adjusted across the combined signals (Holm)"""
    test: str | None = None
    reference: dict[str, Any] | None = None
    """the reference model's same test (its numbers), or {"skipped": why}"""
    combined: bool = False
    """one of the signals the overall verdict combines"""

    @property
    def flag(self) -> bool:
        return self.state == FLAGGED


@dataclass
class SliceCheck:
    """One slice of the false-positive check: a known-clean model audited on other items."""

    start: int
    n: int
    states: dict[str, str]
    """signal -> state"""
    overall: str


@dataclass
class Calibration:
    """The false-positive check: the corpus-free signals on a known-clean model over other slices."""

    model: str
    alpha: float
    slices: list[SliceCheck]
    flagged: int
    """slices whose overall verdict is flagged"""
    rate: float
    """flagged / slices: the observed false-positive rate at the shipped thresholds"""
    per_signal: dict[str, int]
    """signal -> slices it flagged"""
    note: str = ""


@dataclass
class AuditResult:
    model: dict[str, Any]
    """name and fingerprint of the audited model"""
    task: str
    n_items: int
    config: dict[str, Any]
    robustness: Robustness | None = None
    skipped: dict[str, str] = field(default_factory=dict)
    """robustness signal -> why it was not measured (a served model without prompt log-probs on a multiple-choice task)"""
    contamination: dict[str, dict[str, Any]] = field(default_factory=dict)
    """measurement -> its numbers: ngram, likelihood (per-item scores of the audited and reference models on
    items and controls), verbatim, permutation"""
    controls: dict[str, Any] | None = None
    """what the corpus-free signals compared the items with (`controls.Controls.summary`)"""
    reference: str | None = None
    """the reference model, or why there is none"""
    verdicts: list[Verdict] = field(default_factory=list)
    overall: Verdict | None = None
    """the contamination verdict: the corpus-free signals combined (Holm), plus n-gram overlap"""
    calibration: Calibration | None = None
    seconds: float | None = None
    files: dict[str, str] = field(default_factory=dict)
    bad_input: BadInput = field(default_factory=BadInput)
    """unreadable lines of the --corpus files, named"""
