"""`primer curate run`: the curation pipeline, its sharded executor, and resume.

Three passes (`filter_shard`, `cluster_duplicates`, `drop_duplicates`), the first and last shard
by shard (a shard = one input file, see `document.list_shards`):
  1. filter, per shard, in parallel: read -> heuristic filters -> decontamination -> educational-value
     filter -> write survivors to `work/filtered/` with their MinHash band keys and exact hashes;
  2. cluster, once, globally: cluster the band keys (`dedup.find_duplicates`), keep the earliest
     document of each exact group / near-duplicate cluster, write `work/dedup.npz`;
  3. drop duplicates, per shard, in parallel: write `data/<shard>-00000.jsonl.gz` ...
Without dedup, the filter pass writes `data/` directly. Every finished shard of a pass writes a done-marker
last, atomically (write to a temp name, then rename), so a killed run resumes with the shards not
yet done and never redoes a finished one; a rerun with different settings is refused.

Engines: `local` (a multiprocessing pool, the default), or datatrove's executors for clusters --
`datatrove` (its LocalPipelineExecutor, what the tests run here), `slurm` (SlurmPipelineExecutor)
and `ray` (RayPipelineExecutor) run the very same pass functions as datatrove tasks
(rank r takes shards r, r+W, ...). Counts per step and reason are merged from the shards into
`stats.json` and printed; with `write_dropped` every dropped document is kept with its reason.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np

from primer.common.files import DirLock
from primer.common.jsonl import BadInput, Utf8Policy
from primer.curate.document import Shard, ShardWriter, check_text_field, list_shards, read_jsonl_documents, read_shard
from primer.config import Count, Fraction, Range, check_config, to_dict
from primer.curate.steps import Context, Stats, Step, run_steps
from primer.errors import PrimerError


@dataclass
class CurateConfig:
    """Settings of `primer curate run`."""

    input: str = ""
    """input: a JSONL/.jsonl.gz/Parquet file, a folder of them or of .txt files, or hf:NAME[:SPLIT]."""
    out: str = "curated"
    """output folder: data/ (kept documents), stats.json, work/ (resume state), dropped/."""
    text_key: str = "text"
    """field that holds the text."""
    id_key: str = "id"
    """field that holds the document id (absent: file:line)."""
    heuristics: bool = True
    """run the Gopher / C4 / FineWeb heuristic filters (thresholds in curate/filters.py)."""
    strip_boilerplate: bool = False
    """C4 line edit: delete boilerplate lines (javascript, cookies, terms of use...) before filtering."""
    benchmarks: str | None = None
    """benchmark directory (e.g. ../shared/benchmarks): decontaminate against every eval task in it."""
    decontam_index: str | None = None
    """a saved n-gram index (.npz) to decontaminate against, instead of building one."""
    ngram: Count | None = None
    """decontamination n-gram size in words; none: GPT-3's rule per benchmark (the 5th percentile of its solved
    items' words, 8..13; curate/decontam.py); 13 as lm-eval; 10 with --similarity as Cosmopedia."""
    min_item_words: Count = 8
    """the least n, and the least words of a part matched whole; items whose question + answer is shorter are
    listed as unchecked."""
    min_matches: Count = 1
    """distinct n-grams of one item a document must contain to count as contaminated."""
    similarity: Fraction | None = None
    """also require difflib similarity >= this between the item and the matched region (Cosmopedia: 0.5)."""
    quality: bool = False
    """run the quality filter: a reference LM's per-token NLL (mean, spread) plus repeated n-grams, all-caps
    words, non-dictionary words and language id (curate/quality.py)."""
    quality_model: str = "bundled"
    """reference LM of the quality filter: 'bundled', a .gguf, an HF dir or a primer checkpoint."""
    quality_window: Count = 256
    """tokens of each document the reference LM scores (its first ones)."""
    quality_max_nll: Annotated[float, Range(gt=0)] | None = 5.5
    """drop documents whose mean NLL (nats/token) is above this (none: no upper bound)."""
    quality_min_nll: Annotated[float, Range(ge=0)] | None = 1.0
    """drop documents whose mean NLL is below this: text the model recites (loops); none: no lower bound."""
    quality_nll_percentile: Annotated[float, Range(gt=0, lt=1)] | None = None
    """instead of quality_max_nll: the NLL at this percentile of a sample of the input (CCNet: 0.7 keeps the
    head and middle)."""
    quality_max_nll_std: Annotated[float, Range(gt=0)] | None = None
    """drop documents whose per-token NLL spread (std) is above this (none: reported, not used; on clean and
    corrupted text alike it is 2.5-3.8 nats under SmolLM2, so it tells little)."""
    quality_max_repeat: Fraction | None = 0.5
    """drop documents with more than this share of words in repeated word 5-grams."""
    quality_max_caps: Fraction | None = 0.5
    """drop documents with more than this share of words in capitals."""
    quality_max_nondict: Fraction | None = 0.2
    """drop documents with more than this share of words in no English word list (wordfreq)."""
    quality_language: str | None = "en"
    """the documents' language (ISO 639-1) for language id and the word list; none: no language id."""
    quality_min_language_prob: Fraction | None = 0.5
    """drop documents whose probability of being in quality_language (py3langid) is below this."""
    scorer: str | None = None
    """educational-value scorer dir (from `primer curate train-scorer`); none = no edu filter."""
    scorer_kind: str | None = None
    """which scorer in that dir: embed or hash (default: the best one on held-out data)."""
    edu_threshold: Annotated[float, Range(ge=0, le=5)] | None = None
    """keep documents the scorer rates at least this (default: the scorer's threshold, 3)."""
    dedup: bool = True
    """remove exact and MinHash near-duplicates (keeps the earliest document of each cluster)."""
    shingle: Count = 5
    """words per MinHash shingle."""
    bands: Count = 25
    """LSH bands (Jaccard threshold (1/bands)^(1/rows) = 0.447 by default)."""
    rows: Count = 4
    """rows per LSH band."""
    seed: int = 1
    """seed of the MinHash functions."""
    workers: int = 0
    """parallel processes (0 = one per CPU core, at most the number of shards)."""
    engine: Literal["local", "datatrove", "slurm", "ray"] = "local"
    """executor: local processes, or datatrove's Local / Slurm / Ray executors (clusters)."""
    slurm_partition: str | None = None
    """slurm engine: partition to submit to."""
    out_format: Literal["jsonl.gz", "jsonl", "parquet"] = "jsonl.gz"
    """format of the output shards."""
    shard_docs: Count = 100_000
    """documents per output file."""
    write_dropped: bool = False
    """write every dropped document with its step and reason to dropped/."""
    restart: bool = False
    """discard the resume state of a previous run in the same --out."""
    strict: bool = False
    """stop at the first bad input record (naming file and line) instead of counting and naming it."""
    invalid_utf8: Utf8Policy = "drop"
    """A document line with bytes that are not UTF-8: drop it, or keep it with U+FFFD in their place
    (either way counted and named in the summary)."""


@dataclass
class CurateResult:
    """What `curate` returns and writes as OUT/stats.json."""

    input: str
    out: str
    shards: int
    documents_read: int
    documents_kept: int
    steps: dict[str, dict[str, Any]]
    """per step: documents in, out, and dropped per reason (`steps.Stats`)"""
    benchmark_items_matched: dict[str, int]
    """benchmark item id -> documents dropped for containing it"""
    bad_input: BadInput
    output_files: list[str]
    decontam_index: dict[str, Any] | None
    """the n-gram index decontamination used (None: off)"""
    resumed_shards: int
    """shards whose filter pass a killed earlier run had finished"""
    seconds: float
    engine: str
    workers: int
    dedup: str | None
    """the MinHash settings, described (None: dedup off)"""
    quality: dict[str, Any] | None = None
    """the quality filter's model, window and limits (None: off)"""
    scores: dict[str, dict[str, int]] | None = None
    """per scoring step: histogram of its score (bin lower edge -> documents), e.g. the quality filter's NLL"""
    submitted: str | None = None
    """slurm: the jobs were submitted, not run; this says how to merge their counts when they finish"""


# ------------------------------------------------------------------------------ paths and markers


def _fingerprint(cfg: CurateConfig) -> str:
    how = ("workers", "engine", "slurm_partition", "restart", "out", "strict")  # how it runs, not what it keeps
    keys = {k: v for k, v in vars(cfg).items() if k not in how}
    try:  # an input inside --out (primer run's linked inputs) by its place there, so a moved --out resumes
        keys["input"] = str(Path(cfg.input).resolve().relative_to(Path(cfg.out).resolve()))
    except ValueError:
        pass
    return hashlib.sha256(json.dumps(keys, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


class _Layout:
    def __init__(self, out: str | Path):
        self.out = Path(out)
        self.work = self.out / "work"
        self.filtered = self.work / "filtered"
        self.deduped = self.work / "deduped"
        self.data = self.out / "data"
        self.dropped = self.out / "dropped"
        self.index = self.work / "decontam_index.npz"
        self.dedup = self.work / "dedup.npz"
        self.dedup_done = self.work / "dedup.done"
        self.config = self.work / "config.json"
        self.quality = self.work / "quality.json"

    def done(self, pass_dir: Path, shard: Shard) -> Path:
        return pass_dir / f"{shard.name}.done"


# ------------------------------------------------------------------------------ per-process caches

_CACHE: dict[str, Any] = {}
QUALITY_SAMPLE = 2000  # documents whose NLLs set a percentile limit


def _steps(cfg: CurateConfig, lay: _Layout) -> list[Step]:
    """The per-document steps of the filter pass (built once per worker process)."""
    key = _fingerprint(cfg)
    if _CACHE.get("key") == key:
        return _CACHE["steps"]
    from primer.curate import filters

    steps: list[Step] = []
    if cfg.strip_boilerplate:
        steps.append(filters.StripBoilerplate())
    if cfg.heuristics:
        steps.extend(filters.default_filters())
    if cfg.benchmarks or cfg.decontam_index:
        from primer.curate.decontam import DecontamFilter, NgramIndex

        steps.append(DecontamFilter(NgramIndex.load(lay.index), cfg.min_matches, cfg.similarity))
    if cfg.quality:
        from primer.curate.quality import QualityFilter, QualityScorer

        steps.append(QualityFilter(QualityScorer(_quality_settings(cfg, lay))))
    if cfg.scorer:
        from primer.curate.edu import EduFilter, EduScorer

        steps.append(EduFilter(EduScorer.load(cfg.scorer, cfg.scorer_kind), cfg.edu_threshold))
    _CACHE.update(key=key, steps=steps)
    return steps


def _quality_settings(cfg: CurateConfig, lay: _Layout):
    """The quality filter's limits; with quality_nll_percentile, the NLL limit the driver resolved."""
    from primer.curate.quality import QualitySettings

    st = QualitySettings.from_curate(cfg)
    if cfg.quality_nll_percentile is not None:
        st = QualitySettings.from_curate(cfg, max_nll=json.loads(lay.quality.read_text())["max_nll"])
    return st


def _hasher(cfg: CurateConfig):
    from primer.curate.dedup import MinHashConfig, MinHasher

    return MinHasher(MinHashConfig(cfg.shingle, cfg.bands, cfg.rows, cfg.seed))


def _clear_shard_outputs(shard: Shard, dirs: list[Path], dropped_dir: Path, tag: str) -> None:
    """A shard that is (re)started removes whatever a killed attempt of this pass left (and nothing else)."""
    own = re.compile(re.escape(shard.name) + r"(-\d{5}\.(jsonl|jsonl\.gz|parquet)(\.tmp)?|\.keys(\.tmp)?\.npz|\.stats\.json)")
    drop = re.compile(re.escape(f"{shard.name}.{tag}") + r"-\d{5}\.jsonl\.gz(\.tmp)?")
    for d, pat in [(d, own) for d in dirs] + [(dropped_dir, drop)]:
        if d.is_dir():
            for p in d.iterdir():
                if p.is_file() and pat.fullmatch(p.name):
                    p.unlink()


# ------------------------------------------------------------------------------ pass 1: filter


def filter_shard(cfg: CurateConfig, shard: Shard) -> None:
    """Filter one shard; write survivors (+ MinHash keys when deduplicating), stats, done-marker."""
    lay = _Layout(cfg.out)
    done = lay.done(lay.filtered, shard)
    if done.exists():
        return
    target = lay.filtered if cfg.dedup else lay.data
    _clear_shard_outputs(shard, [lay.filtered, lay.data], lay.dropped, "filters")
    bad = BadInput(invalid_utf8=cfg.invalid_utf8)
    ctx = Context()
    n_read = 0
    t0 = time.perf_counter()

    def counted():
        nonlocal n_read
        for d in read_shard(shard, cfg.text_key, cfg.id_key, bad, cfg.strict):
            n_read += 1
            yield d

    dropped = ShardWriter(lay.dropped, f"{shard.name}.filters", "jsonl.gz", cfg.shard_docs) if cfg.write_dropped else None
    ctx.dropped = dropped
    fmt = "jsonl.gz" if cfg.dedup else cfg.out_format  # filtered files are read back by drop_duplicates
    writer = ShardWriter(target, shard.name, fmt, cfg.shard_docs if not cfg.dedup else 1 << 40)
    texts: list[str] = []
    ids: list[str] = []
    with writer:
        for doc in run_steps(counted(), _steps(cfg, lay), ctx):
            writer.write(doc)
            if cfg.dedup:
                texts.append(doc.text)
                ids.append(doc.id)
    if dropped is not None:
        dropped.close()
    if cfg.dedup:
        h = _hasher(cfg)
        bands = np.zeros((0, cfg.bands), np.uint64)
        exact = np.zeros(0, np.uint64)
        if texts:
            parts = [h.signatures_and_exact(texts[i : i + 256]) for i in range(0, len(texts), 256)]
            bands = h.band_keys(np.concatenate([p[0] for p in parts]))
            exact = np.concatenate([p[1] for p in parts])
        order = (np.int64(shard.index) << np.int64(32)) + np.arange(len(texts), dtype=np.int64)
        tmp = lay.filtered / f"{shard.name}.keys.tmp.npz"
        np.savez(tmp, order=order, bands=bands, exact=exact, ids=np.array(ids, dtype=object).astype(str))
        os.replace(tmp, lay.filtered / f"{shard.name}.keys.npz")
    info = {"shard": shard.name, "read": n_read, "kept": writer.count, "stats": ctx.stats.to_dict(),
            "bad_input": to_dict(bad), "seconds": round(time.perf_counter() - t0, 3),
            "files": [str(p) for p in writer.files]}
    _write_atomic(lay.filtered / f"{shard.name}.stats.json", json.dumps(info))
    _write_atomic(done, "ok\n")


# ------------------------------------------------------------------------------ pass 2: cluster


def cluster_duplicates(cfg: CurateConfig, shards: list[Shard]) -> None:
    """Global clustering over every shard's MinHash keys; writes which documents to drop."""
    from primer.curate.dedup import find_duplicates

    lay = _Layout(cfg.out)
    if lay.dedup_done.exists():
        return
    orders, bands, exact, ids = [], [], [], []
    for sh in shards:
        with np.load(lay.filtered / f"{sh.name}.keys.npz") as z:
            orders.append(z["order"])
            bands.append(z["bands"])
            exact.append(z["exact"])
            ids.append(z["ids"])
    order = np.concatenate(orders) if orders else np.zeros(0, np.int64)
    id_arr = np.concatenate(ids) if ids else np.zeros(0, str)
    drop = find_duplicates(order, np.concatenate(bands) if bands else None,
                           np.concatenate(exact) if exact else None)
    pos = {int(o): i for i, o in enumerate(order.tolist())}
    keys = np.array(sorted(drop), dtype=np.int64)
    kept_ids = np.array([id_arr[pos[drop[k][0]]] for k in keys.tolist()], dtype=str)
    kinds = np.array([drop[k][1] for k in keys.tolist()], dtype=str)
    tmp = lay.work / "dedup.tmp.npz"
    np.savez(tmp, drop=keys, kept_ids=kept_ids, kinds=kinds, n=np.array([order.size]))
    os.replace(tmp, lay.dedup)
    _write_atomic(lay.dedup_done, "ok\n")


# ------------------------------------------------------------------------------ pass 3: drop duplicates


def drop_duplicates(cfg: CurateConfig, shard: Shard) -> None:
    """Write one shard's filtered documents to data/, less those the cluster pass marked as duplicates."""
    lay = _Layout(cfg.out)
    done = lay.done(lay.deduped, shard)
    if done.exists():
        return
    _clear_shard_outputs(shard, [lay.data], lay.dropped, "dedup")
    with np.load(lay.dedup) as z:
        drop_keys, kept_ids, kinds = z["drop"], z["kept_ids"], z["kinds"]
    lo = np.searchsorted(drop_keys, np.int64(shard.index) << np.int64(32))
    hi = np.searchsorted(drop_keys, np.int64(shard.index + 1) << np.int64(32))
    mine = {int(k) & 0xFFFFFFFF: (str(kept_ids[i]), str(kinds[i])) for i, k in zip(range(lo, hi), drop_keys[lo:hi])}
    stats = Stats()
    dropped = ShardWriter(lay.dropped, f"{shard.name}.dedup", "jsonl.gz", cfg.shard_docs) if cfg.write_dropped else None
    writer = ShardWriter(lay.data, shard.name, cfg.out_format, cfg.shard_docs)
    src = lay.filtered / f"{shard.name}-00000.jsonl.gz"
    with writer:
        for j, doc in enumerate(read_jsonl_documents(str(src), "text", "id") if src.exists() else ()):
            stats.seen("dedup")
            if j in mine:
                kept, kind = mine[j]
                stats.dropped("dedup", f"{kind}_duplicate")
                if dropped is not None:
                    dropped.write(doc, {"dropped_by": "dedup", "reason": f"{kind}_duplicate", "duplicate_of": kept})
            else:
                stats.kept("dedup")
                writer.write(doc)
    if dropped is not None:
        dropped.close()
    _write_atomic(lay.deduped / f"{shard.name}.stats.json", json.dumps({"stats": stats.to_dict(), "kept": writer.count}))
    _write_atomic(done, "ok\n")


# ------------------------------------------------------------------------------ engines


def _per_shard(pass_name: str):
    """The pass that runs shard by shard under that name (looked up when called, so it can be swapped)."""
    return {"filter": filter_shard, "drop_duplicates": drop_duplicates}[pass_name]


class ShardTask:
    """A datatrove pipeline step: rank r of W runs a per-shard pass on shards r, r+W, r+2W, ...
    (or, for "cluster", the one global pass)."""

    def __init__(self, pass_name: str, cfg: CurateConfig, shards: list[Shard]):
        self.pass_name, self.cfg, self.shards = pass_name, cfg, shards

    def __call__(self, data: Any, rank: int = 0, world_size: int = 1) -> Any:
        if self.pass_name == "cluster":
            cluster_duplicates(self.cfg, self.shards)
        else:
            for sh in self.shards[rank::world_size]:
                _per_shard(self.pass_name)(self.cfg, sh)
        return iter(())


def _call_pass(args: tuple[str, CurateConfig, Shard]) -> str:
    pass_name, cfg, shard = args
    _per_shard(pass_name)(cfg, shard)
    return shard.name


def _run_local(pass_name: str, cfg: CurateConfig, shards: list[Shard], workers: int) -> None:
    lay = _Layout(cfg.out)
    pass_dir = lay.filtered if pass_name == "filter" else lay.deduped
    todo = [sh for sh in shards if not lay.done(pass_dir, sh).exists()]
    if not todo:
        return
    if workers <= 1 or len(todo) == 1:
        for sh in todo:
            _call_pass((pass_name, cfg, sh))
        return
    with mp.get_context("spawn").Pool(min(workers, len(todo))) as pool:
        for _ in pool.imap_unordered(_call_pass, [(pass_name, cfg, sh) for sh in todo]):
            pass


def _run_datatrove(cfg: CurateConfig, shards: list[Shard], workers: int, dedup: bool) -> bool:
    """Run the passes as datatrove executors; returns False when jobs were submitted (slurm), not run."""
    try:
        from datatrove.executor import LocalPipelineExecutor
    except ImportError as e:
        raise PrimerError("engine datatrove/slurm/ray needs `pip install datatrove`") from e
    lay = _Layout(cfg.out)
    logs = lay.work / "datatrove"
    tasks = max(1, min(workers, len(shards)))
    common: dict[str, Any] = {}
    if cfg.engine == "slurm":
        from datatrove.executor import SlurmPipelineExecutor as Exec

        if not cfg.slurm_partition:
            raise PrimerError("engine slurm needs --slurm-partition")
        common = {"partition": cfg.slurm_partition, "time": "24:00:00", "venv_path": sys.prefix + "/bin/activate"}
    elif cfg.engine == "ray":
        from datatrove.executor import RayPipelineExecutor as Exec
    else:
        Exec = LocalPipelineExecutor
        common = {"start_method": "spawn"}
    filt = Exec([ShardTask("filter", cfg, shards)], tasks=tasks, workers=workers, logging_dir=str(logs / "filter"),
                **common)
    if not dedup:
        filt.run()
        return cfg.engine != "slurm"
    cluster = Exec([ShardTask("cluster", cfg, shards)], tasks=1, workers=1, logging_dir=str(logs / "cluster"),
                   depends=filt, **common)
    drop = Exec([ShardTask("drop_duplicates", cfg, shards)], tasks=tasks, workers=workers,
                logging_dir=str(logs / "drop_duplicates"), depends=cluster, **common)
    drop.run()  # runs (local/ray) or submits (slurm) its dependencies first
    return cfg.engine != "slurm"


# ------------------------------------------------------------------------------ driver


def _prepare_index(cfg: CurateConfig, lay: _Layout) -> dict[str, Any] | None:
    if not (cfg.benchmarks or cfg.decontam_index):
        return None
    from primer.curate.decontam import NgramIndex

    if not lay.index.exists():
        if cfg.decontam_index:
            idx = NgramIndex.load(cfg.decontam_index)
            shutil.copyfile(cfg.decontam_index, lay.index)
        else:
            idx = NgramIndex.from_benchmarks(cfg.benchmarks, n=cfg.ngram, min_words=cfg.min_item_words,
                                             keep_texts=cfg.similarity is not None)
            idx.save(lay.index)
    else:
        idx = NgramIndex.load(lay.index)
    if cfg.similarity is not None and not idx.keep_texts:
        raise PrimerError("--similarity needs an index built with item texts; build it with --benchmarks "
                          "and --similarity, not from a saved 13-gram index")
    return {**idx.summary(), "described": idx.describe()}


def _prepare_quality(cfg: CurateConfig, lay: _Layout) -> dict[str, Any] | None:
    """The quality filter's resolved limits; a percentile limit is computed once, on a sample of the
    input (the same one however the input is ordered), and kept in work/ so a resumed run reuses it."""
    if not cfg.quality:
        return None
    from primer.curate.quality import LMScorer, describe, resolve_percentile

    if cfg.quality_nll_percentile is not None and not lay.quality.exists():
        from primer.curate.edu import sample_documents

        sample = sample_documents(cfg.input, QUALITY_SAMPLE, text_key=cfg.text_key, id_key=cfg.id_key, min_chars=1)
        lm = LMScorer(cfg.quality_model, cfg.quality_window)
        limit = resolve_percentile(lm, [d.text for d in sample], cfg.quality_nll_percentile)
        _write_atomic(lay.quality, json.dumps({"max_nll": limit, "percentile": cfg.quality_nll_percentile,
                                               "sample": len(sample)}))
    out = describe(_quality_settings(cfg, lay))
    if cfg.quality_nll_percentile is not None:
        out["percentile"] = json.loads(lay.quality.read_text())
    return out


def curate(cfg: CurateConfig, quiet: bool = False) -> CurateResult:
    """Run (or resume) the pipeline; returns the report also saved as `<out>/stats.json`."""
    check_config(cfg)
    if not cfg.input:
        raise PrimerError("no input given (--input FILE|DIR|hf:NAME)")
    with DirLock(cfg.out, "primer curate"):
        return _curate(cfg, quiet)


def _curate(cfg: CurateConfig, quiet: bool) -> CurateResult:
    t0 = time.perf_counter()
    lay = _Layout(cfg.out)
    if cfg.restart and lay.work.exists():
        for p in (lay.work, lay.data, lay.dropped):
            shutil.rmtree(p, ignore_errors=True)
    shards = list_shards(cfg.input)
    for d in (lay.filtered, lay.deduped, lay.data):
        d.mkdir(parents=True, exist_ok=True)
    fp = _fingerprint(cfg)
    if lay.config.exists():
        old = json.loads(lay.config.read_text())
        if old.get("fingerprint") != fp:
            raise PrimerError(f"{cfg.out} holds a run with other settings; use another --out, or --restart to discard it")
    else:
        _write_atomic(lay.config, json.dumps({"fingerprint": fp, "config": vars(cfg),
                                              "shards": [s.name for s in shards]}, indent=2, default=str))
    index_summary = _prepare_index(cfg, lay)
    if cfg.scorer:
        from primer.curate.edu import EduScorer

        EduScorer.load(cfg.scorer, cfg.scorer_kind)  # fail early on a bad path
    quality = _prepare_quality(cfg, lay)
    workers = cfg.workers or os.cpu_count() or 1
    resumed = sum(lay.done(lay.filtered, s).exists() for s in shards)
    how = dict(decontam_index=index_summary, resumed_shards=resumed, engine=cfg.engine, workers=workers,
               quality=quality)
    if cfg.engine == "local":
        _run_local("filter", cfg, shards, workers)
        if cfg.dedup:
            cluster_duplicates(cfg, shards)
            _run_local("drop_duplicates", cfg, shards, workers)
    elif not _run_datatrove(cfg, shards, workers, cfg.dedup):
        msg = f"submitted to slurm; when the jobs finish, rerun the same command to merge the counts into {cfg.out}/stats.json"
        if not quiet:
            print(msg)
        return CurateResult(cfg.input, cfg.out, len(shards), 0, 0, {}, {}, BadInput(), [], **how,
                            seconds=round(time.perf_counter() - t0, 2), dedup=None, submitted=msg)
    dedup = None
    if cfg.dedup:
        from primer.curate.dedup import MinHashConfig

        dedup = MinHashConfig(cfg.shingle, cfg.bands, cfg.rows, cfg.seed).describe()
    _CACHE.clear()  # the steps of this process (the quality filter's model among them) are not needed any more
    report = _merge(cfg, shards, lay, how, round(time.perf_counter() - t0, 2), dedup)
    _write_atomic(lay.out / "stats.json", json.dumps(to_dict(report), indent=2))
    if not quiet:
        print(format_report(report))
    return report


def _merge(cfg: CurateConfig, shards: list[Shard], lay: _Layout, how: dict[str, Any], seconds: float,
           dedup: str | None) -> CurateResult:
    """Sum the per-shard counts the passes left on disk (so a resumed or cluster run merges the same way)."""
    stats, bad = Stats(), BadInput()
    read = 0
    for sh in shards:
        info = json.loads((lay.filtered / f"{sh.name}.stats.json").read_text())
        read += info["read"]
        stats.merge(Stats.from_dict(info["stats"]))
        bad.merge(BadInput(**info["bad_input"]))
    check_text_field(read, bad, cfg.input, cfg.text_key)
    kept = 0
    if cfg.dedup:
        for sh in shards:
            info = json.loads((lay.deduped / f"{sh.name}.stats.json").read_text())
            stats.merge(Stats.from_dict(info["stats"]))
            kept += info["kept"]
    else:
        kept = sum(json.loads((lay.filtered / f"{sh.name}.stats.json").read_text())["kept"] for sh in shards)
    out_files = sorted(str(p) for p in lay.data.iterdir() if p.is_file() and ".tmp" not in p.name)
    d = stats.to_dict()
    return CurateResult(input=cfg.input, out=cfg.out, shards=len(shards), documents_read=read, documents_kept=kept,
                        steps=d["steps"], benchmark_items_matched=d["matches"], bad_input=bad, scores=d["scores"],
                        output_files=out_files, seconds=seconds, dedup=dedup, **how)


def format_report(r: CurateResult, max_items: int = 20) -> str:
    lines = [f"primer curate: {r.documents_read} documents read from {r.shards} shard(s), "
             f"{r.documents_kept} kept -> {r.out}/data"]
    st = Stats.from_dict({"steps": r.steps})
    lines.append(st.table())
    if r.bad_input.count or r.bad_input.replaced:
        lines.append(f"bad input records: {r.bad_input.count} skipped, {r.bad_input.replaced} kept with invalid UTF-8 "
                     "replaced (first ones below)")
        lines.extend(f"    {e}" for e in r.bad_input.examples[:10])
    m = r.benchmark_items_matched
    if m:
        lines.append(f"benchmark items found in the input ({len(m)}):")
        for k, v in sorted(m.items(), key=lambda kv: (-kv[1], kv[0]))[:max_items]:
            lines.append(f"    {k}: {v} document(s)")
        if len(m) > max_items:
            lines.append(f"    ... {len(m) - max_items} more in stats.json")
    if r.decontam_index:
        lines.append(r.decontam_index["described"])
    if r.quality:
        q = r.quality
        lim = ", ".join(f"{k} {kind} {v:g}" for k, d in q["limits"].items() for kind, v in d.items())
        lines.append(f"quality filter: {q['model']} on each document's first {q['window_tokens']} tokens; drop when {lim}")
    if r.dedup:
        lines.append(r.dedup)
    return "\n".join(lines)
