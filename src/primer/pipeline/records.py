"""The run directory's records: `RUN_DIR/<stage>/stage.json` (a `StageRecord`) and `RUN_DIR/run.json`
(a `RunRecord`, whose per-stage lines are the same `StageRecord` without its config and summary).

One record type per file, written by the runner and read by the runner (to skip or resume a stage)
and by the report. Paths inside a run directory are recorded relative to it (`StageContext.rel`), so a
moved or copied run directory reads its own files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from primer.common.files import atomic_write_json
from primer.config import from_dict, to_dict
from primer.errors import PrimerError

STAGE_FILE = "stage.json"
RUN_FILE = "run.json"


@dataclass
class StageRecord:
    """One stage in one run directory: what ran (fingerprint, config, inputs), how it ended, its summary."""

    name: str
    fingerprint: str | None
    """sha256 of stage + resolved config + input fingerprints + named files + primer version (16 hex)"""
    status: str
    """running, done, failed, interrupted; in run.json also skipped (up to date), not selected,
    not selected (stale)"""
    inputs: dict[str, str] | None = None
    """input stage -> its fingerprint"""
    config: dict[str, Any] | None = None
    primer_version: str | None = None
    started: str | None = None
    finished: str | None = None
    seconds: float | None = None
    cpu_seconds: float | None = None
    error: str | None = None
    summary: Any = None
    """what the stage's adapter returned (a `summaries` dataclass; plain JSON once stored)"""

    BRIEF = ("name", "fingerprint", "status", "seconds", "cpu_seconds", "finished", "error")

    def brief(self) -> dict[str, Any]:
        """Its line in run.json."""
        return {k: getattr(self, k) for k in self.BRIEF}

    def write(self, stage_dir: Path) -> None:
        atomic_write_json(stage_dir / STAGE_FILE, to_dict(self))


def read_stage(run_dir: Path, name: str) -> StageRecord | None:
    """A stage's record, or None when it has none (or an unreadable one: the stage then runs afresh)."""
    try:
        return from_dict(StageRecord, json.loads((Path(run_dir) / name / STAGE_FILE).read_text()), what="field")
    except (OSError, ValueError, PrimerError):
        return None


@dataclass
class RunRecord:
    """RUN_DIR/run.json: the resolved recipe, provenance, and each stage's state and time."""

    primer_version: str
    recipe_path: str
    recipe: dict[str, Any]
    command: str
    git_sha: str | None
    packages: dict[str, str]
    hardware: dict[str, Any]
    started: str
    status: str
    """running, done, failed, interrupted"""
    stages: list[StageRecord] = field(default_factory=list)
    finished: str | None = None
    seconds: float | None = None
    failed_stage: str | None = None
    report: str | None = None
    """the report's file name in the run directory"""

    def write(self, run_dir: Path) -> None:
        atomic_write_json(Path(run_dir) / RUN_FILE, {**to_dict(self), "stages": [s.brief() for s in self.stages]})


def read_run(run_dir: Path) -> RunRecord | None:
    """run.json as a RunRecord; None when there is none; a PrimerError naming the problem when it does not fit."""
    path = Path(run_dir) / RUN_FILE
    try:
        data = json.loads(path.read_text())
    except OSError:
        return None
    except ValueError as e:
        raise PrimerError(f"{path}: not JSON ({e})") from None
    data.pop("run_dir", None)  # an absolute path that earlier primer versions recorded; a moved dir makes it false
    try:
        return from_dict(RunRecord, data, what="field")
    except PrimerError as e:
        raise PrimerError(f"{path}: {e}") from None
