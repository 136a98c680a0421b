"""`primer publish RUN_DIR --out DIR`: a run's kept corpus as a dataset anyone can load and check.

DIR gets
  data/train-NNNNN-of-MMMMM.parquet  one row per document curate kept, with its provenance (`COLUMNS`);
                                     `datasets.load_dataset("parquet", data_dir=DIR)` loads it
  README.md                          the dataset card in the Hub's format (YAML header, then how it was
                                     made: the resolved recipe, counts per stage and per reject reason,
                                     the overlap certificate)
  overlap_certificate.json           every benchmark item primer knows, looked up in the documents
The run directory is read through `pipeline.records` and `pipeline.summaries` only; a line of the
curated files that cannot be read is counted and named (`BadInput`), never dropped silently.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from primer.common.files import DirLock, atomic_write_bytes
from primer.common.jsonl import BadInput, read_jsonl
from primer.common.paths import EMBEDDED, benchmark_dir, pull_hint
from primer.config import Count, check_config
from primer.errors import PrimerError
from primer.pipeline.records import read_run, read_stage
from primer.pipeline.stages import source_of
from primer.pipeline.summaries import CurateSummary, SynthSummary, read_summary

# column -> (Arrow type name, what it holds); the card's column table is written from this. pyarrow is imported
# only to write (the CLI imports this module to build its parser, and pyarrow added ~30 MB to every primer process)
COLUMNS: dict[str, tuple[str, str]] = {
    "id": ("string", "document id (the record's id field, else input file:line)"),
    "text": ("string", "the document"),
    "source": ("string", "synth (written by the teacher) or web (the web sample)"),
    "teacher": ("string", "the teacher model that wrote it (synth)"),
    "prompt_id": ("string", "the prompt grid cell it was written for (synth)"),
    "topic": ("string", "topic of the prompt (synth)"),
    "subject": ("string", "subject of the topic (synth)"),
    "format": ("string", "textbook, exercises, story... (synth)"),
    "audience": ("string", "audience of the prompt (synth)"),
    "sampling": ("string", "the teacher's sampling settings, JSON (temperature, top_p, seed, max_tokens...)"),
    "edu_score": ("float64", "curate's educational-value score (when the edu filter ran)"),
    "curation_scores": ("string", "every score curate attached to the document, JSON (edu, quality...)"),
    "verification_status": ("string", "synth's exercise check: verified, failed, unverifiable, timeout"),
    "verification_reason": ("string", "why, for that check"),
    "metadata": ("string", "every other field of the record, JSON (prompt, style, token counts, created...)"),
}
_PLAIN = ("teacher", "prompt_id", "topic", "subject", "format", "audience")


@dataclass
class PublishConfig:
    """Settings of `primer publish`."""

    run_dir: str = ""
    """the run directory (`primer run --run-dir`) whose curated corpus to publish."""
    out: str = "published"
    """the dataset folder to write (data/*.parquet, README.md, overlap_certificate.json)."""
    benchmarks: str | None = None
    """benchmark data to certify against (default: the lookup: $PRIMER_DATA, `primer data pull`'s folder,
    ../shared/benchmarks); `embedded` = the small slice shipped with primer (the certificate says so)."""
    ngram: Count | None = None
    """n-gram size of the certificate; none: GPT-3's rule per benchmark, as curate."""
    license: str = "other"
    """the card's license (the Hub's identifiers: apache-2.0, odc-by, cc-by-4.0, other...)."""
    shard_docs: Count = 100_000
    """documents per Parquet shard."""


@dataclass
class PublishResult:
    out: str
    documents: int
    shards: list[str]
    card: str
    certificate: str
    items_overlapping: int
    items_unchecked: int
    bad_input: BadInput = field(default_factory=BadInput)


def _json(v: Any) -> str | None:
    return None if v is None else json.dumps(v, sort_keys=True, ensure_ascii=False)


def row(rec: dict[str, Any], source: str) -> dict[str, Any]:
    """One curated record -> its row: the provenance columns, everything else kept in `metadata`."""
    rest = dict(rec)
    out: dict[str, Any] = {"id": None if rec.get("id") is None else str(rec["id"]), "text": rest.pop("text", ""),
                           "source": source}
    rest.pop("id", None)
    for k in _PLAIN:
        v = rest.pop(k, None)
        out[k] = None if v is None else str(v)
    out["sampling"] = _json(rest.pop("sampling", None))
    scores = {k: rest.pop(k) for k in list(rest) if k.endswith("_score") or k.startswith("quality")}
    edu = scores.get("edu_score")
    out["edu_score"] = float(edu) if isinstance(edu, (int, float)) else None
    out["curation_scores"] = _json(scores or None)
    ver = rest.pop("verification", None)
    out["verification_status"] = str(ver.get("status")) if isinstance(ver, dict) and ver.get("status") else None
    out["verification_reason"] = str(ver.get("reason")) if isinstance(ver, dict) and ver.get("reason") else None
    out["metadata"] = _json(rest or None)
    return out


def _data_dir(cfg: PublishConfig) -> Path:
    found = benchmark_dir(cfg.benchmarks)
    if found is None:
        raise PrimerError(f"no benchmark data to certify against: fetch it with `{pull_hint()}`, or pass --benchmarks "
                          f"DIR (a folder laid out like shared/benchmarks), or --benchmarks {EMBEDDED} for the small "
                          "slice shipped with primer (the certificate then covers only its items)")
    if not found.is_dir():
        raise PrimerError(f"benchmark directory not found: {found} (--benchmarks, or fetch it with `{pull_hint()}`)")
    return found


def publish(cfg: PublishConfig, log=print) -> PublishResult:
    """Write the dataset folder; returns what was written."""
    from primer.publish import card
    from primer.publish.certificate import certify

    check_config(cfg)
    run_dir = Path(cfg.run_dir)
    run = read_run(run_dir)
    if run is None:
        raise PrimerError(f"{run_dir} is not a primer run directory (no run.json): give the --run-dir of `primer run`")
    rec = read_stage(run_dir, "curate")
    if rec is None or rec.status != "done":
        state = "has no curate stage" if rec is None else f"has a curate stage that is {rec.status}"
        raise PrimerError(f"{run_dir} {state}: publish reads the curated corpus; run it first "
                          f"(`primer run RECIPE --run-dir {run_dir}`, curate on)")
    curated = read_summary(CurateSummary, rec.summary, "curate")
    synth_rec = read_stage(run_dir, "synth")
    synth = read_summary(SynthSummary, synth_rec.summary, "synth") if synth_rec and synth_rec.status == "done" else None
    files = [run_dir / f for f in curated.data]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise PrimerError(f"curated file missing: {missing[0]} (moved or deleted? rerun with "
                          f"`primer run RECIPE --run-dir {run_dir} --stages curate`)")
    data_dir = _data_dir(cfg)
    out = Path(cfg.out)
    with DirLock(out, "primer publish"):
        bad = BadInput()
        rows = [row(r, source_of(f)) for f in files for r in read_jsonl(f, bad)]
        if bad.count:
            log(f"publish: {bad.describe()}")
        data = out / "data"
        if data.exists():
            shutil.rmtree(data)
        data.mkdir(parents=True)
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = pa.schema([(k, getattr(pa, t)()) for k, (t, _) in COLUMNS.items()])
        n_shards = max(1, -(-len(rows) // cfg.shard_docs))
        shards = []
        for s in range(n_shards):
            part = rows[s * cfg.shard_docs : (s + 1) * cfg.shard_docs]
            path = data / f"train-{s:05d}-of-{n_shards:05d}.parquet"
            pq.write_table(pa.Table.from_pylist(part, schema=schema), path)
            shards.append(str(path))
        log(f"publish: {len(rows)} documents -> {n_shards} Parquet shard(s) in {data}")
        cert = certify(((r["id"], r["text"]) for r in rows), data_dir, cfg.ngram, log=log)
        cert_path = out / "overlap_certificate.json"
        atomic_write_bytes(cert_path, (json.dumps(cert, indent=1, ensure_ascii=False) + "\n").encode())
        card_path = out / "README.md"
        atomic_write_bytes(card_path, card.render(run, curated, synth, rows, cert, cfg, {k: w for k, (_, w) in COLUMNS.items()}).encode())
    log(f"publish: {cert['items_overlapping']} benchmark item(s) overlap a published document, "
        f"{cert['items_checked']} checked, {cert['items_unchecked']} unchecked -> {cert_path}")
    return PublishResult(str(out), len(rows), shards, str(card_path), str(cert_path), cert["items_overlapping"],
                         cert["items_unchecked"], bad)
