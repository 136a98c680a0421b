"""Documents, and the readers and writers that move them between files and pipeline steps.

A `Document` is (id, text, metadata). Readers turn an input into *shards* (one per input file, or
per chunk of a folder of .txt files) so the executor can run shards in parallel and resume them
one by one. Supported inputs: JSONL (plain or .gz), Parquet (pyarrow), a folder of .txt files,
and a HF `datasets` dataset (`hf:NAME[:SPLIT]` or a `save_to_disk` folder) when `datasets` is
installed.

Bad input never crashes a run nor vanishes: a malformed JSONL line (read by `primer.common.jsonl`,
the one reader) or a record without the text field is counted in `BadInput` with its `file:line`,
and reported by the run; with `strict` the first one stops the run with its file and line. An
input with no documents at all, or whose records never carry the text field, is a `PrimerError`.
"""

from __future__ import annotations

import gzip
import json
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from primer.common.jsonl import BadInput, decode_text, read_jsonl_lines
from primer.errors import PrimerError

JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".json.gz", ".ndjson", ".ndjson.gz")
PARQUET_SUFFIXES = (".parquet",)
TXT_PER_SHARD = 1000  # .txt files grouped into one shard


@dataclass
class Document:
    """One unit of text moving through the pipeline."""

    id: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_record(self, text_key: str = "text", id_key: str = "id") -> dict[str, Any]:
        rec = {id_key: self.id, text_key: self.text}
        rec.update({k: v for k, v in self.metadata.items() if k not in rec})
        return rec


@dataclass(frozen=True)
class Shard:
    """A unit of parallel work: one input file, a group of .txt files, or one HF dataset shard."""

    kind: str  # "jsonl" | "parquet" | "txt" | "hf"
    paths: tuple[str, ...]
    name: str  # stable, filesystem-safe; names the done-marker and output file
    index: int = 0  # position in the sorted shard list (dedup keeps the earliest)
    hf_shard: tuple[int, int] = (0, 1)  # (i, n) for HF datasets


def _is_jsonl(p: Path) -> bool:
    return p.name.endswith(JSONL_SUFFIXES)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def list_shards(inp: str | Path, hf_shards: int = 1) -> list[Shard]:
    """Shards of an input: a file, a folder (JSONL/Parquet files or .txt files), or `hf:NAME[:SPLIT]`."""
    s = str(inp)
    if s.startswith("hf:"):
        return [Shard("hf", (s[3:],), _safe(f"{s[3:]}-{i:05d}"), i, (i, hf_shards)) for i in range(hf_shards)]
    p = Path(inp)
    if not p.exists():
        raise PrimerError(f"input not found: {p}")
    if p.is_file():
        files = [p]
    else:
        if (p / "dataset_info.json").is_file() or (p / "dataset_dict.json").is_file():
            return [Shard("hf", (str(p),), _safe(f"{p.name}-{i:05d}"), i, (i, hf_shards)) for i in range(hf_shards)]
        files = sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith("."))
    data = [f for f in files if _is_jsonl(f) or f.suffix in PARQUET_SUFFIXES]
    txt = [f for f in files if f.suffix == ".txt"]
    shards: list[Shard] = []
    base = p if p.is_dir() else p.parent
    seen: set[str] = set()
    for f in data:
        kind = "jsonl" if _is_jsonl(f) else "parquet"
        rel = f.relative_to(base)
        name = _safe(str(rel.parent / _stem(str(rel)))).lstrip("._") or "shard"
        while name in seen:  # a.jsonl and a.parquet side by side
            name += "_"
        seen.add(name)
        shards.append(Shard(kind, (str(f),), name))
    for i in range(0, len(txt), TXT_PER_SHARD):
        group = tuple(str(f) for f in txt[i : i + TXT_PER_SHARD])
        shards.append(Shard("txt", group, f"txt-{i // TXT_PER_SHARD:05d}"))
    if not shards:
        kinds = ", ".join(JSONL_SUFFIXES + PARQUET_SUFFIXES + (".txt",))
        raise PrimerError(f"no input files in {p} (looked for {kinds}, or a HF datasets folder)")
    return [Shard(sh.kind, sh.paths, sh.name, i, sh.hf_shard) for i, sh in enumerate(shards)]


def _record_to_doc(rec: dict, where: str, stem: str, pos: int, text_key: str, id_key: str,
                   bad: BadInput, strict: bool) -> Document | None:
    text = rec.get(text_key)
    if not isinstance(text, str):
        why = f"missing field '{text_key}'" if text is None else f"field '{text_key}' is not a string"
        if strict:
            raise PrimerError(f"{where}: {why}; set --text-key, or fix or remove that record")
        bad.add(where, why)
        return None
    did = rec.get(id_key)
    did = str(did) if did is not None else f"{stem}:{pos}"
    meta = {k: v for k, v in rec.items() if k not in (text_key, id_key)}
    return Document(did, text, meta)


def _stem(path: str) -> str:
    name = Path(path).name
    for suf in JSONL_SUFFIXES + PARQUET_SUFFIXES + (".txt",):
        if name.endswith(suf):
            return name[: -len(suf)]
    return name


def read_jsonl_documents(path: str, text_key: str = "text", id_key: str = "id", bad: BadInput | None = None,
                         strict: bool = False) -> Iterator[Document]:
    """Documents of a JSONL (or .jsonl.gz) file; bad lines go to `bad` as `file:line: why` (without
    one, they are named on stderr when the file is done, as `primer.common.jsonl` does)."""
    own = bad is None
    bad = BadInput() if bad is None else bad
    stem = _stem(path)
    for lineno, rec in read_jsonl_lines(path, bad, strict=strict):
        doc = _record_to_doc(rec, f"{path}:{lineno}", stem, lineno, text_key, id_key, bad, strict)
        if doc is not None:
            yield doc
    if own and bad.count:
        print(f"{path}: {bad.describe()}", file=sys.stderr)


def read_parquet(path: str, text_key: str = "text", id_key: str = "id", bad: BadInput | None = None,
                 strict: bool = False) -> Iterator[Document]:
    import pyarrow.parquet as pq

    bad = bad if bad is not None else BadInput()
    stem = _stem(path)
    pf = pq.ParquetFile(path)
    names = pf.schema_arrow.names
    if text_key not in names:
        raise PrimerError(f"{path}: no column '{text_key}' (columns: {', '.join(names)}); set --text-key")
    row = 0
    for batch in pf.iter_batches(batch_size=1024):
        for rec in batch.to_pylist():
            row += 1
            doc = _record_to_doc(rec, f"{path}:row {row}", stem, row, text_key, id_key, bad, strict)
            if doc is not None:
                yield doc


def read_txt(paths: Iterable[str], bad: BadInput | None = None, strict: bool = False) -> Iterator[Document]:
    """One document per .txt file; its id is the file name without .txt. Invalid UTF-8 follows `bad`'s
    policy (dropped or replaced, counted and named either way)."""
    bad = bad if bad is not None else BadInput()
    for p in paths:
        try:
            data = Path(p).read_bytes()
        except OSError as e:
            if strict:
                raise PrimerError(f"{p}: unreadable ({e})") from None
            bad.add(p, f"unreadable ({e})")
            continue
        text = decode_text(data, p, bad, strict)
        if text is not None:
            yield Document(_stem(p), text, {"source": p})


def read_hf(name: str, shard: tuple[int, int] = (0, 1), text_key: str = "text", id_key: str = "id",
            bad: BadInput | None = None, strict: bool = False) -> Iterator[Document]:
    """A HF `datasets` dataset: a `save_to_disk` folder or `NAME[:SPLIT]` (from the local cache)."""
    try:
        import datasets
    except ImportError as e:
        raise PrimerError("reading a HF dataset needs `pip install datasets`") from e
    bad = bad if bad is not None else BadInput()
    if Path(name).is_dir():
        ds = datasets.load_from_disk(name)
    else:
        repo, _, split = name.partition(":")
        ds = datasets.load_dataset(repo, split=split or "train")
    if isinstance(ds, datasets.DatasetDict):
        ds = ds[next(iter(ds))]
    if text_key not in ds.column_names:
        raise PrimerError(f"{name}: no column '{text_key}' (columns: {', '.join(ds.column_names)}); set --text-key")
    i, n = shard
    if n > 1:
        ds = ds.shard(n, i, contiguous=True)
    stem = _safe(Path(name).name)
    for row, rec in enumerate(ds):
        doc = _record_to_doc(rec, f"{name}:row {row}", f"{stem}-{i}", row, text_key, id_key, bad, strict)
        if doc is not None:
            yield doc


def read_shard(shard: Shard, text_key: str = "text", id_key: str = "id", bad: BadInput | None = None,
               strict: bool = False) -> Iterator[Document]:
    if shard.kind == "jsonl":
        return read_jsonl_documents(shard.paths[0], text_key, id_key, bad, strict)
    if shard.kind == "parquet":
        return read_parquet(shard.paths[0], text_key, id_key, bad, strict)
    if shard.kind == "txt":
        return read_txt(shard.paths, bad, strict)
    if shard.kind == "hf":
        return read_hf(shard.paths[0], shard.hf_shard, text_key, id_key, bad, strict)
    raise ValueError(shard.kind)


def read_documents(inp: str | Path, text_key: str = "text", id_key: str = "id",
                   bad: BadInput | None = None, strict: bool = False) -> Iterator[Document]:
    """Every document of an input (all shards in order)."""
    for sh in list_shards(inp):
        yield from read_shard(sh, text_key, id_key, bad, strict)


def check_text_field(n_docs: int, bad: BadInput, where: str, text_key: str) -> None:
    """Turn 'nothing came out' into a clear message: empty input vs. wrong text field."""
    if n_docs:
        return
    if bad.count and all(f"missing field '{text_key}'" in e for e in bad.examples):
        raise PrimerError(
            f"{where}: no record has a '{text_key}' field ({bad.count} records); set --text-key "
            f"to the field that holds the text (first: {bad.examples[0]})"
        )
    if bad.count:
        raise PrimerError(f"{where}: no readable documents; {bad.count} bad records, e.g. {bad.examples[0]}")
    raise PrimerError(f"{where}: input is empty (no documents)")


class ShardWriter:
    """Writes documents to `<dir>/<prefix>-00000.jsonl[.gz|.parquet]`, a new file every `max_docs`.

    Files are written under a temporary name and renamed when closed, so a killed run never
    leaves a half file under a final name.
    """

    def __init__(self, out_dir: str | Path, prefix: str, fmt: str = "jsonl.gz", max_docs: int = 100_000,
                 text_key: str = "text", id_key: str = "id"):
        if fmt not in ("jsonl", "jsonl.gz", "parquet"):
            raise PrimerError(f"unknown output format {fmt!r}; use jsonl, jsonl.gz or parquet")
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.prefix, self.fmt, self.max_docs = prefix, fmt, max_docs
        self.text_key, self.id_key = text_key, id_key
        self.files: list[Path] = []
        self._n_in_file = 0
        self._fh: Any = None
        self._rows: list[dict] = []
        self._tmp: Path | None = None
        self.count = 0

    def _final(self) -> Path:
        return self.dir / f"{self.prefix}-{len(self.files):05d}.{self.fmt}"

    def _open(self) -> None:
        self._tmp = self._final().with_name(self._final().name + ".tmp")
        if self.fmt == "jsonl.gz":
            self._fh = gzip.open(self._tmp, "wt", encoding="utf-8", compresslevel=5)
        elif self.fmt == "jsonl":
            self._fh = open(self._tmp, "w", encoding="utf-8")
        self._rows = []
        self._n_in_file = 0

    def _close_file(self) -> None:
        if self._tmp is None:
            return
        final = self._final()
        if self.fmt == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.Table.from_pylist(self._rows), self._tmp)
            self._rows = []
        else:
            self._fh.close()
        os.replace(self._tmp, final)
        self.files.append(final)
        self._tmp = None

    def write(self, doc: Document, extra: dict[str, Any] | None = None) -> None:
        if self._tmp is None:
            self._open()
        rec = doc.to_record(self.text_key, self.id_key)
        if extra:
            rec.update(extra)
        if self.fmt == "parquet":
            self._rows.append(rec)
        else:
            self._fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
        self._n_in_file += 1
        self.count += 1
        if self._n_in_file >= self.max_docs:
            self._close_file()

    def close(self) -> list[Path]:
        self._close_file()
        return self.files

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, *_: Any) -> None:
        if exc_type is None:
            self.close()
        elif self._tmp is not None:  # failed: drop the partial file
            if self._fh is not None:
                self._fh.close()
            self._tmp.unlink(missing_ok=True)


def write_jsonl(path: str | Path, docs: Iterable[Document], text_key: str = "text") -> int:
    """Write documents to one JSONL file (gzip if it ends in .gz); returns the count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    opener = gzip.open if path.name.endswith(".gz") else open
    n = 0
    with opener(path, "wt", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps(d.to_record(text_key), ensure_ascii=False) + "\n")
            n += 1
    return n
