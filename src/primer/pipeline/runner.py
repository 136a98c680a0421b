"""`primer run`: one recipe file runs every stage, skipping what is already done.

A recipe is one TOML/YAML file with a section per stage (`[synth]`, `[curate]`, `[tokenize]`,
`[train]`, `[eval]`, `[audit]`), each holding that stage's own config dataclass fields, plus an
optional `[run]` section for the orchestration itself. Stages run in order, each in
`RUN_DIR/<stage>/`, and each leaves `RUN_DIR/<stage>/stage.json` with its fingerprint:

    fingerprint = sha256(stage name + resolved stage config + fingerprints of its inputs
                         + contents of the files and folders the config names + primer version)

A stage whose `stage.json` says "done" with the same fingerprint is skipped; changing one stage's
config changes its fingerprint and, through the input chain, those of every stage after it, so
exactly it and what follows re-run. A stage that failed (or was interrupted) with an unchanged
fingerprint keeps its directory, so a stage that resumes internally (synth, train) picks up where
it stopped; a stage whose fingerprint changed starts from an empty directory.

The wiring of stage outputs into the next stage's inputs (paths) is done by small adapter
functions (`primer.pipeline.stages`), never by the recipe: a recipe says *what* to do, the run directory
says *where*. Each adapter returns its stage's summary (`primer.pipeline.summaries`: counts, curves,
tables, samples) that is stored in `stage.json`, read back typed when the stage is skipped, and is
what `primer report` draws.

`RUN_DIR/run.json` records the resolved recipe, git sha, package versions, hardware and time per
stage (`primer.pipeline.records`).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import os
import shutil
import sys
import time
import traceback
from dataclasses import field
from importlib import resources
from pathlib import Path
from typing import Any, Callable, NoReturn

from primer import __version__
from primer.common.files import DirLock, content_digest
from primer.common.provenance import git_sha, hardware, package_versions
from primer.config import check_config, from_dict, read_recipe_file, to_dict
from primer.errors import PrimerError
from primer.pipeline.records import RunRecord, StageRecord, read_stage
from primer.pipeline.spec import RunConfig, StageContext, StageSpec
from primer.pipeline.stages import STAGES
from primer.pipeline.summaries import read_summary


# --------------------------------------------------------------------------------------------
# Recipe


def default_stages() -> list[StageSpec]:
    return STAGES


def recipe_class(stages: list[StageSpec] | None = None) -> type:
    """The recipe dataclass: `run: RunConfig` plus one field per stage, typed by its config class."""
    stages = stages if stages is not None else default_stages()
    fields: list[tuple] = [("run", RunConfig, field(default_factory=RunConfig))]
    for s in stages:
        cls = s.config_cls()
        fields.append((s.name, cls, field(default_factory=cls)))
    return dataclasses.make_dataclass("Recipe", fields)


def default_recipe_path() -> Path:
    """The built-in default recipe shipped inside the package (same text as recipes/default.toml)."""
    return Path(str(resources.files("primer") / "data" / "recipes" / "default.toml"))


def load_recipe(path: str | Path | None, stages: list[StageSpec] | None = None) -> Any:
    """Parse a recipe file (None: the built-in default) into the recipe dataclass, every section validated
    (types, ranges, the model shape) so a bad value stops the run before its first stage."""
    p = Path(path) if path is not None else default_recipe_path()
    data = read_recipe_file(p)
    stages = stages if stages is not None else default_stages()
    for s in stages:
        section = data.get(s.name)
        if isinstance(section, dict):
            bad = sorted({k.replace("-", "_") for k in section} & set(s.wired))
            if bad:
                raise PrimerError(
                    f"{p}: [{s.name}] sets {bad}, which `primer run` decides (the run directory's "
                    f"stage folders); remove them from the recipe, or use --run-dir"
                )
    cls = recipe_class(stages)
    try:
        recipe = from_dict(cls, data)
        for s in stages:
            if s.resolve is not None:
                setattr(recipe, s.name, s.resolve(getattr(recipe, s.name)))
        return check_config(recipe)
    except PrimerError as e:
        raise PrimerError(f"{p}: {e}") from e


def recipe_record(recipe: Any, stages: list[StageSpec]) -> dict:
    """The resolved recipe as plain data, with run-directory-wired fields marked as such."""
    d = to_dict(recipe)
    for s in stages:
        for f in s.wired:
            if f in d.get(s.name, {}):
                d[s.name][f] = "(set by primer run)"
    return d


# --------------------------------------------------------------------------------------------
# Fingerprints


def _hash_json(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _external_files(cfg_dict: dict, say: Callable[[str], None] | None = None) -> dict[str, str]:
    """Content digests of the existing files and folders a config names, so that editing a web sample or a topic
    list in place re-runs the stage that reads it, and a copy of the same data (new mtimes) does not."""
    out: dict[str, str] = {}

    def visit(v: Any) -> None:
        if isinstance(v, dict):
            for x in v.values():
                visit(x)
        elif isinstance(v, (list, tuple)):
            for x in v:
                visit(x)
        elif isinstance(v, str) and v and ("/" in v or "." in v) and len(v) < 4096:
            try:
                p = Path(v).expanduser()
                if p.exists():
                    out[v] = content_digest(p, say)
            except (OSError, ValueError):
                pass

    visit(cfg_dict)
    return out


def fingerprint(spec: StageSpec, cfg: Any, input_fps: dict[str, str], run_cfg: Any = None,
                say: Callable[[str], None] | None = None) -> str:
    cfg_dict = {k: v for k, v in to_dict(cfg).items() if k not in spec.wired}
    extra = {f: to_dict(getattr(run_cfg, f)) if dataclasses.is_dataclass(getattr(run_cfg, f)) else getattr(run_cfg, f)
             for f in spec.run_fields} if run_cfg is not None else {}
    env = {k: os.environ.get(k) for k in spec.env}
    return _hash_json(
        {
            "stage": spec.name,
            "config": cfg_dict,
            "run": extra,
            "env": env,
            "inputs": input_fps,
            "files": _external_files({"config": cfg_dict, "env": env}, say),
            "primer": __version__,
        }
    )[:16]


def _cpu_seconds() -> float:
    """CPU time (user + system) of this process and its finished children (e.g. curate's workers)."""
    import resource

    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# --------------------------------------------------------------------------------------------
# The run


class StageFailed(PrimerError):
    """A stage raised; the message names the stage and how to resume."""

    def __init__(self, stage: str, message: str):
        super().__init__(message)
        self.stage = stage


def resume_command(recipe_path: str | Path | None, run_dir: Path, explicit_run_dir: bool) -> str:
    parts = ["primer", "run"]
    if recipe_path is not None:
        parts.append(str(recipe_path))
    if explicit_run_dir:
        parts += ["--run-dir", str(run_dir)]
    return " ".join(parts)


def run_recipe(
    recipe: Any,
    run_dir: str | Path | None = None,
    *,
    recipe_path: str | Path | None = None,
    stages: list[StageSpec] | None = None,
    log: Callable[[str], None] = print,
    write_report: bool | None = None,
    resume_hint: str | None = None,
    force: tuple[str, ...] = (),
) -> RunRecord:
    """Run every stage of `recipe` into `run_dir`; returns the run record (also in run.json).

    `force`: stages to run even when they look up to date (`primer run --stages X`): a stage that
    resumes internally (synth, curate, train) picks up its own files, so this is cheap when nothing is
    missing, and it is the way out when a stage's outputs were lost or moved.

    Raises StageFailed (a PrimerError) naming the failing stage and the command that resumes.
    """
    stages = stages if stages is not None else default_stages()
    explicit = run_dir is not None or recipe.run.run_dir is not None
    rd = Path(run_dir or recipe.run.run_dir or Path("runs") / recipe.run.name)
    rd.mkdir(parents=True, exist_ok=True)
    names = [s.name for s in stages]
    bad = [s for s in [*recipe.run.stages, *force] if s not in names]
    if bad:
        raise PrimerError(f"[run] stages: unknown stage(s) {bad}; known: {', '.join(names)}")
    with DirLock(rd, "`primer run`", "wait for it to finish or use another --run-dir"):
        run = _Run(recipe, rd, stages, log, resume_hint or resume_command(recipe_path, rd, explicit), recipe_path,
                   force)
        for i, spec in enumerate(stages, 1):
            run.stage(spec, f"[{i}/{len(stages)}] {spec.name}")
        return run.finish(write_report if write_report is not None else recipe.run.report)


class _Run:
    """One `primer run` in progress: run.json, and the fingerprints and summaries of the stages so far."""

    def __init__(self, recipe: Any, rd: Path, stages: list[StageSpec], log: Callable[[str], None], hint: str,
                 recipe_path: str | Path | None, force: tuple[str, ...] = ()):
        self.recipe, self.rd, self.log, self.hint = recipe, rd, log, hint
        self.only = list(recipe.run.stages)
        self.force = set(force)
        self.fps: dict[str, str] = {}
        self.summaries: dict[str, Any] = {}
        self.t0 = time.perf_counter()
        self.record = RunRecord(
            primer_version=__version__,
            recipe_path=str(recipe_path) if recipe_path is not None else "(built-in default)",
            recipe=recipe_record(recipe, stages),
            command=" ".join(["primer"] + sys.argv[1:]) if sys.argv and sys.argv[0].endswith("primer") else hint,
            git_sha=git_sha(), packages=package_versions(), hardware=hardware(), started=_now(), status="running",
        )
        self.record.write(rd)

    def _log_stage(self, rec: StageRecord) -> None:
        self.record.stages.append(rec)
        self.record.write(self.rd)

    def stage(self, spec: StageSpec, tag: str) -> None:
        prev = read_stage(self.rd, spec.name)
        missing = [n for n in spec.inputs if n not in self.fps]
        selected = not self.only or spec.name in self.only
        if missing and selected:
            raise PrimerError(f"stage '{spec.name}' needs {missing}, which have not run in {self.rd}")
        cfg = getattr(self.recipe, spec.name)
        fp = None if missing else fingerprint(spec, cfg, {n: self.fps[n] for n in spec.inputs}, self.recipe.run,
                                              self.log)
        if (fp is not None and prev and prev.status == "done" and prev.fingerprint == fp and spec.name not in self.force
                and self._reuse(spec, prev)):
            self.log(f"{tag}: up to date (fingerprint {fp}), skipped")
            self._log_stage(StageRecord(spec.name, fp, "skipped", seconds=prev.seconds, cpu_seconds=prev.cpu_seconds,
                                        finished=prev.finished))
        elif not selected:
            if prev and prev.status == "done" and self._reuse(spec, prev):
                # Deselected but done with another fingerprint: use what is there, say so.
                self.log(f"{tag}: not selected; using its existing output (fingerprint {prev.fingerprint})")
                self._log_stage(StageRecord(spec.name, fp, "not selected (stale)", seconds=prev.seconds))
            else:
                self.log(f"{tag}: not selected")
                self._log_stage(StageRecord(spec.name, fp, "not selected"))
        else:
            self._execute(spec, cfg, fp, prev, tag)

    def _reuse(self, spec: StageSpec, prev: StageRecord) -> bool:
        """Take a finished stage's fingerprint and summary as the next stages' input; False (run it again)
        when its stored summary does not fit this primer's summary type."""
        summary = prev.summary if prev.summary is not None else {}
        if spec.summary_cls is not None:
            try:
                summary = read_summary(spec.summary_cls, summary, spec.name)
            except PrimerError as e:
                self.log(f"  {spec.name}: {e}")
                return False
        self.fps[spec.name] = prev.fingerprint
        self.summaries[spec.name] = summary
        return True

    def _execute(self, spec: StageSpec, cfg: Any, fp: str, prev: StageRecord | None, tag: str) -> None:
        out = self.rd / spec.name
        changed = bool(prev and prev.fingerprint != fp and out.exists())
        if changed and not spec.keeps_valid:
            shutil.rmtree(out)  # config or inputs changed: outputs of the old config are stale
        out.mkdir(parents=True, exist_ok=True)
        resumed = bool(prev and prev.fingerprint == fp)
        how = " (asked for by --stages; it resumes from its own files)" if spec.name in self.force and resumed else (
            " (resuming)" if resumed else " (settings changed: it keeps the steps they do not touch)" if changed and
            spec.keeps_valid else "")
        self.log(f"{tag}: running{how} -> {out}")
        rec = StageRecord(spec.name, fp, "running", inputs={n: self.fps[n] for n in spec.inputs}, config=to_dict(cfg),
                          primer_version=__version__, started=_now())
        rec.write(out)
        ctx = StageContext(run_dir=self.rd, out_dir=out, inputs={n: self.rd / n for n in spec.inputs},
                           summaries={n: self.summaries[n] for n in spec.inputs}, recipe=self.recipe, log=self.log)
        t0, c0 = time.perf_counter(), _cpu_seconds()
        try:
            summary = spec.execute(cfg, ctx)
        except BaseException as e:  # noqa: BLE001 - record every way a stage can stop, then re-raise
            self._fail(spec, rec, out, e, time.perf_counter() - t0)
        rec.status, rec.seconds, rec.cpu_seconds = "done", round(time.perf_counter() - t0, 2), round(_cpu_seconds() - c0, 2)
        rec.finished, rec.summary = _now(), summary if summary is not None else {}
        rec.write(out)
        self.log(f"{tag}: done in {rec.seconds:.1f} s")
        self.fps[spec.name] = fp
        self.summaries[spec.name] = rec.summary
        self._log_stage(rec)

    def _fail(self, spec: StageSpec, rec: StageRecord, out: Path, e: BaseException, secs: float) -> NoReturn:
        interrupted = isinstance(e, KeyboardInterrupt)
        tb = traceback.format_exc()
        (out / "error.log").write_text(tb)
        rec.status = "interrupted" if interrupted else "failed"
        rec.seconds, rec.error, rec.finished = round(secs, 2), f"{type(e).__name__}: {e}", _now()
        rec.write(out)
        self.record.status, self.record.failed_stage = rec.status, spec.name
        self.record.finished, self.record.seconds = _now(), round(time.perf_counter() - self.t0, 2)
        self._log_stage(rec)
        if interrupted or not isinstance(e, Exception):
            raise e
        if not isinstance(e, PrimerError):
            sys.stderr.write(tb)
        raise StageFailed(
            spec.name,
            f"stage '{spec.name}' failed: {e}\n"
            f"  (traceback in {out / 'error.log'}; finished stages are kept)\n"
            f"  fix the cause, then resume with: {self.hint}",
        ) from e

    def finish(self, report: bool) -> RunRecord:
        self.record.status, self.record.finished = "done", _now()
        self.record.seconds = round(time.perf_counter() - self.t0, 2)
        self.record.write(self.rd)
        if report:
            from primer.pipeline.report import write_report

            path = write_report(self.rd)
            self.record.report = os.path.relpath(path, self.rd)
            self.record.write(self.rd)
            self.log(f"report: {path}")
        return self.record
