"""The types a pipeline stage is made of, one layer below the runner and the stages themselves.

`StageSpec` is a stage as the runner sees it (name, inputs, config class, the adapter that executes
it); `StageContext` is what an adapter gets (its output directory, its inputs' directories and
summaries); `RunConfig` is the recipe's `[run]` section. `stages.py` declares the pipeline with
these and `runner.py` runs it, so neither imports the other's internals.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from primer.config import Count


@dataclass
class RunConfig:
    """The `[run]` section: how the recipe is run, not what any stage does."""

    name: str = "default"
    """Short name of this recipe; the default run directory is runs/<name>."""
    run_dir: str | None = None
    """Where stage outputs go; None means runs/<name> under the current directory."""
    report: bool = True
    """Write RUN_DIR/report.html at the end of a successful run."""
    stages: list[str] = field(default_factory=list)
    """Run only these stages (and skip the rest); empty means all. Inputs must already be done."""
    reference: str = "bundled"
    """Model evaluated beside ours on the same eval items ('bundled', a .gguf, an HF dir); empty: none."""
    sample_prompts: list[str] = field(default_factory=lambda: [
        "Photosynthesis is", "Once upon a time, a little fox", "To add two fractions, you"])
    """Prompts whose greedy continuations (ours and the reference's) the report shows."""
    sample_tokens: Count = 60
    """New tokens per generation sample."""
    eval_batch_size: Count = 8
    """Sequences per forward pass when scoring benchmarks."""


@dataclass
class StageSpec:
    """One pipeline stage as the orchestrator sees it."""

    name: str
    inputs: tuple[str, ...]
    """Names of earlier stages whose outputs this one reads (their fingerprints feed ours)."""
    config_cls: Callable[[], type]
    """Lazily returns the stage's own config dataclass (imported on demand)."""
    execute: Callable[[Any, "StageContext"], Any]
    """Runs the stage: (its config, context) -> its summary for stage.json / the report."""
    summary_cls: type | None = None
    """The dataclass `execute` returns (`primer.pipeline.summaries`); None: a plain JSON-able dict."""
    help: str = ""
    wired: tuple[str, ...] = ()
    """Config fields the orchestrator sets (paths into the run directory); a recipe may not set them."""
    run_fields: tuple[str, ...] = ()
    """[run] fields this stage reads (they join its fingerprint)."""
    env: tuple[str, ...] = ()
    """Environment variables the stage reads (their values join its fingerprint), e.g. PRIMER_DATA."""
    resolve: Callable[[Any], Any] | None = None
    """Fills defaults that depend on the machine (e.g. where benchmark data is) before fingerprinting."""
    keeps_valid: bool = False
    """The stage keeps what is still valid of an earlier config itself (per-step fingerprints, as [tune] does):
    the orchestrator does not empty its directory when the stage's fingerprint changes."""


@dataclass
class StageContext:
    """What an adapter gets besides its config: where to write and where its inputs are."""

    run_dir: Path
    out_dir: Path
    inputs: dict[str, Path]
    """Input stage name -> that stage's directory."""
    summaries: dict[str, Any]
    """Input stage name -> that stage's summary (what its adapter returned, typed as its `summary_cls`)."""
    recipe: Any
    log: Callable[[str], None] = print

    def rel(self, path: str | Path) -> str:
        """How a summary records `path`: relative to the run directory when inside it, so a moved or
        copied run directory still finds (its own) files; as given otherwise."""
        p = Path(path)
        try:
            return str(p.resolve().relative_to(self.run_dir.resolve()))
        except ValueError:
            return str(p)

    def path(self, recorded: str) -> Path:
        """A path a summary recorded (`rel`), as a path to use now."""
        p = Path(recorded)
        return p if p.is_absolute() else self.run_dir / p
