"""Token shards: documents -> token ids -> fixed-size binary files with a self-describing header.

`primer tokenize` (`tokenize_corpus`) reads documents (JSONL with a text field, the files the
curate/synth stages write; plain .txt split on `<|endoftext|>`; Parquet), trains or loads a
tokenizer, encodes documents in parallel (`tokenizers`' Rust threads, `encode_batch`), writes
`<|endoftext|>` after every document and packs the stream into shards of `shard_tokens` ids:

    OUT/tokenizer.json (+ tokenizer_config.json ...)   the tokenizer, loadable by transformers
    OUT/tokens.json                                     what was written: hash, counts, shard list
    OUT/train_000000.bin, ...  OUT/val_000000.bin, ...  the shards

A document goes to the held-out validation split when a hash of its text falls under
`val_fraction`, so the split is stable when the corpus grows or is reordered.

Shard layout (little-endian), header of HEADER_BYTES then the ids:
    0  magic  b"PRIMERTK"            8 bytes
    8  version u32 (= VERSION)
    12 itemsize u32 (2: uint16 ids, 4: uint32 ids; uint16 when the vocabulary fits)
    16 token count u64
    24 vocab size u32
    28 tokenizer hash: 32 raw bytes of `Tokenizer.hash()` (sha256)
    60 zero padding up to HEADER_BYTES
Readers memory-map the ids (`open_shard`) and check the header against the tokenizer in use;
any mismatch is a `PrimerError` that says how to rebuild.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Iterable, Iterator

import numpy as np

from primer.common.files import DirLock
from primer.common.jsonl import BadInput, Utf8Policy, decode_text, open_binary, read_jsonl_lines
from primer.config import Count, Range, check_config, from_dict, to_dict
from primer.errors import PrimerError

MAGIC = b"PRIMERTK"
VERSION = 1
HEADER_BYTES = 256
_HEAD = struct.Struct("<8sIIQI32s")
META_FILE = "tokens.json"
SPLITS = ("train", "val")
DOC_SEP = "<|endoftext|>"


def rebuild_hint(directory: str | Path) -> str:
    return f"rebuild the shards: primer tokenize INPUTS... --out {directory} (with the tokenizer you train with)"


# ------------------------------------------------------------------------------------------ format


@dataclass(frozen=True)
class ShardHeader:
    version: int
    itemsize: int
    num_tokens: int
    vocab_size: int
    tokenizer_hash: str
    """Hex sha256 of the tokenizer that wrote the shard."""

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.uint16 if self.itemsize == 2 else np.uint32)


def dtype_for_vocab(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size <= 2**16 else np.uint32)


def write_shard(path: str | Path, ids: np.ndarray, *, vocab_size: int, tokenizer_hash: str) -> Path:
    """Write one shard atomically (a .tmp file renamed into place)."""
    p = Path(path)
    dt = dtype_for_vocab(vocab_size)
    ids = np.asarray(ids)
    if ids.size and int(ids.max()) >= vocab_size:
        raise PrimerError(f"{p}: token id {int(ids.max())} is outside the vocabulary of {vocab_size}")
    head = _HEAD.pack(MAGIC, VERSION, dt.itemsize, ids.size, vocab_size, bytes.fromhex(tokenizer_hash))
    tmp = p.with_suffix(p.suffix + ".tmp")
    with open(tmp, "wb") as f:
        f.write(head.ljust(HEADER_BYTES, b"\0"))
        f.write(ids.astype(dt.newbyteorder("<"), copy=False).tobytes())
    os.replace(tmp, p)
    return p


def read_header(path: str | Path) -> ShardHeader:
    """Parse and check a shard's header (magic, version, size); errors say how to rebuild."""
    p = Path(path)
    hint = rebuild_hint(p.parent)
    try:
        with open(p, "rb") as f:
            raw = f.read(HEADER_BYTES)
    except OSError as e:
        raise PrimerError(f"cannot read token shard {p}: {e}") from None
    if len(raw) < _HEAD.size or raw[:8] != MAGIC:
        raise PrimerError(f"{p}: not a primer token shard (bad magic {raw[:8]!r}); {hint}")
    magic, version, itemsize, n, vocab, h = _HEAD.unpack(raw[: _HEAD.size])
    if version != VERSION:
        raise PrimerError(f"{p}: token shard format version {version}, this primer reads version {VERSION}; {hint}")
    if itemsize not in (2, 4):
        raise PrimerError(f"{p}: bad token size {itemsize} in the shard header; {hint}")
    expected = HEADER_BYTES + n * itemsize
    size = p.stat().st_size
    if size != expected:
        raise PrimerError(f"{p}: header says {n} tokens ({expected} bytes) but the file has {size} bytes; {hint}")
    return ShardHeader(version, itemsize, n, vocab, h.hex())


def open_shard(path: str | Path, tokenizer_hash: str | None = None) -> np.ndarray:
    """Memory-map a shard's ids (read-only); check it was written by `tokenizer_hash` when given."""
    p = Path(path)
    h = read_header(p)
    if tokenizer_hash is not None and h.tokenizer_hash != tokenizer_hash:
        raise PrimerError(
            f"{p}: written with tokenizer {h.tokenizer_hash[:12]}, but the tokenizer in use is "
            f"{tokenizer_hash[:12]}; the ids would mean other text. {rebuild_hint(p.parent)}"
        )
    if h.num_tokens == 0:
        return np.zeros(0, dtype=h.dtype)
    return np.memmap(p, dtype=h.dtype.newbyteorder("<"), mode="r", offset=HEADER_BYTES, shape=(h.num_tokens,))


class ShardWriter:
    """Append ids; every `shard_tokens` of them become `<split>_<n>.bin`."""

    def __init__(self, out: Path, split: str, shard_tokens: int, vocab_size: int, tokenizer_hash: str):
        self.out, self.split, self.shard_tokens = out, split, shard_tokens
        self.vocab_size, self.tokenizer_hash = vocab_size, tokenizer_hash
        self.buf: list[np.ndarray] = []
        self.buffered = 0
        self.paths: list[Path] = []
        self.num_tokens = 0
        self.num_docs = 0

    def add(self, ids: np.ndarray, docs: int = 0) -> None:
        self.buf.append(ids)
        self.buffered += ids.size
        self.num_tokens += ids.size
        self.num_docs += docs
        while self.buffered >= self.shard_tokens:
            allids = np.concatenate(self.buf)
            self._write(allids[: self.shard_tokens])
            rest = allids[self.shard_tokens :]
            self.buf, self.buffered = [rest], rest.size

    def _write(self, ids: np.ndarray) -> None:
        path = self.out / f"{self.split}_{len(self.paths):06d}.bin"
        write_shard(path, ids, vocab_size=self.vocab_size, tokenizer_hash=self.tokenizer_hash)
        self.paths.append(path)

    def close(self) -> None:
        if self.buffered or not self.paths:
            self._write(np.concatenate(self.buf) if self.buf else np.zeros(0, dtype=np.int64))
        self.buf, self.buffered = [], 0


# ------------------------------------------------------------------------------------------ documents

DOC_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".txt", ".txt.gz", ".parquet")


def _expand(paths: Iterable[str | Path]) -> list[Path]:
    files: list[Path] = []
    for raw in paths:
        p = Path(os.path.expandvars(os.path.expanduser(str(raw))))
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.name.endswith(DOC_SUFFIXES))
            if not found:
                raise PrimerError(f"{p}: no document files in it (looked for {', '.join(DOC_SUFFIXES)})")
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            raise PrimerError(f"input not found: {p}")
    if not files:
        raise PrimerError("no input files given")
    return files


def iter_documents(paths: Iterable[str | Path], text_field: str = "text", bad: BadInput | None = None,
                   strict: bool = False) -> Iterator[str]:
    """Texts of the documents in `paths` (files or directories), in a fixed order; empty ones skipped.

    .jsonl / .json lines: one JSON object per line, text under `text_field`, read by
    `primer.common.jsonl`: a malformed line or a record without the field goes to `bad` as
    `file:line: why` (with `strict`, the first one stops with its file and line); a file in which
    no record has the field is an error naming the field (the usual cause: --text-field).
    .txt: documents separated by `<|endoftext|>` (TinyStories' layout); a file without one is one document.
    .parquet: the `text_field` column.
    Invalid UTF-8 follows `bad`'s policy (`invalid_utf8`); a file with no readable record at all (a binary
    file, one in another encoding) is an error naming it.
    """
    own = bad is None
    bad = BadInput() if own else bad
    for p in (files := _expand(paths)):
        name = p.name
        before, first_example = bad.count, len(bad.examples)
        seen = 0
        if name.endswith((".jsonl", ".jsonl.gz", ".json")):
            missing = BadInput()
            for lineno, obj in read_jsonl_lines(p, bad, strict=strict):
                seen += 1
                text = obj.get(text_field)
                if not isinstance(text, str):
                    why = f"no '{text_field}' field" if text is None else f"'{text_field}' is not a string"
                    if strict:
                        raise PrimerError(f"{p}:{lineno}: {why} (set --text-field, or fix or remove that line)")
                    missing.add(f"{p}:{lineno}", why)
                elif text.strip():
                    yield text
            if seen and missing.count == seen:
                raise PrimerError(f"{p}: no '{text_field}' field in any of its {seen} records (set --text-field); "
                                  f"first: {missing.examples[0]}")
            bad.merge(missing)
        elif name.endswith((".txt", ".txt.gz")):
            with open_binary(p) as f:
                data = f.read()
            line = 1
            for raw in data.split(DOC_SEP.encode()):
                text = decode_text(raw, p, bad, strict, first_line=line)
                line += raw.count(b"\n")
                seen += text is not None
                if text is not None and text.strip():
                    yield text.strip()
        elif name.endswith(".parquet"):
            import pyarrow.parquet as pq

            pf = pq.ParquetFile(p)
            if text_field not in pf.schema_arrow.names:
                raise PrimerError(f"{p}: no '{text_field}' column (columns: {pf.schema_arrow.names})")
            for batch in pf.iter_batches(columns=[text_field], batch_size=4096):
                for text in batch.column(0).to_pylist():
                    if isinstance(text, str) and text.strip():
                        yield text
        else:
            raise PrimerError(f"{p}: unsupported document file (expected one of {', '.join(DOC_SUFFIXES)})")
        if not seen and bad.count > before:
            first = bad.examples[first_example] if len(bad.examples) > first_example else f"{bad.count - before} bad"
            raise PrimerError(f"{p}: nothing readable in it (first: {first}); is it UTF-8 text in the format its "
                              "name says? Convert it (e.g. iconv -f latin1 -t utf-8) or remove it from the inputs")
    if own and bad.count + bad.replaced:
        print(f"{len(files)} document file(s): {bad.describe()}", file=sys.stderr)


def is_validation(text: str, val_fraction: float) -> bool:
    """Stable split: a document is held out when the hash of its text falls under `val_fraction`."""
    if val_fraction <= 0:
        return False
    h = int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")
    return h / 2**64 < val_fraction


# ------------------------------------------------------------------------------------------ the stage


@dataclass
class TokenizeConfig:
    """`primer tokenize`: documents -> tokenizer + token shards."""

    inputs: list[str] = field(default_factory=list)
    """Document files or directories (.jsonl with a text field, .txt split on <|endoftext|>, .parquet)."""
    out: str = "runs/tokens"
    """Output directory: tokenizer files, tokens.json and the .bin shards."""
    tokenizer: str | None = None
    """Use an existing tokenizer (a .gguf model file, 'bundled', an HF tokenizer dir or tokenizer.json) instead of training one."""
    vocab_size: Count = 8192
    """Vocabulary size of the trained byte-level BPE (special tokens and 256 bytes included)."""
    min_frequency: int = 2
    """A pair must occur at least this often to become a merge."""
    tokenizer_train_docs: Count | None = None
    """Train the BPE on only the first N training documents (None: all)."""
    text_field: str = "text"
    """JSON field / Parquet column that holds a document's text."""
    val_fraction: Annotated[float, Range(ge=0, lt=1)] = 0.01
    """Share of documents held out for validation (chosen by a hash of their text, so stable)."""
    shard_tokens: Count = 100_000_000
    """Tokens per shard file (the last one of a split holds the rest)."""
    batch_docs: Count = 1024
    """Documents encoded per parallel batch."""
    overwrite: bool = False
    """Replace an existing output directory's shards (otherwise a finished one is reused)."""
    strict: bool = False
    """Stop at the first malformed input line (naming file and line) instead of counting and naming it."""
    invalid_utf8: Utf8Policy = "drop"
    """A document line with bytes that are not UTF-8: drop it, or keep it with U+FFFD in their place
    (either way counted and named in the summary)."""


@dataclass
class SplitStats:
    """One split of a token directory."""

    tokens: int
    documents: int
    shards: list[str]
    """file names of its shards, in order"""


@dataclass
class TokenizeResult:
    """What `primer tokenize` wrote: OUT/tokens.json, the token directory's description of itself."""

    format_version: int
    tokenizer_hash: str
    vocab_size: int
    eot_id: int
    dtype: str
    splits: dict[str, SplitStats]
    inputs: list[str] = field(default_factory=list)
    """the document files read (empty for a directory written from ids in hand)"""
    config: dict[str, Any] = field(default_factory=dict)
    """the settings that made it (a rerun with the same ones reuses the directory)"""
    bad_input: BadInput = field(default_factory=BadInput)
    """input lines that could not be read, named"""

    def split(self, name: str) -> SplitStats:
        return self.splits.get(name) or SplitStats(0, 0, [])

    @classmethod
    def read(cls, directory: Path) -> TokenizeResult:
        path = Path(directory) / META_FILE
        if not path.is_file():
            raise PrimerError(f"{directory}: no {META_FILE}; is this a `primer tokenize` output? {rebuild_hint(directory)}")
        try:
            return from_dict(cls, json.loads(path.read_text()), where=str(path))
        except (ValueError, PrimerError) as e:
            raise PrimerError(f"{path}: unreadable ({e}); {rebuild_hint(directory)}") from None

    def write(self, directory: Path) -> None:
        (Path(directory) / META_FILE).write_text(json.dumps(to_dict(self), indent=2) + "\n")


def _batched(it: Iterator[str], n: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for x in it:
        batch.append(x)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch


def tokenize_corpus(cfg: TokenizeConfig, progress: bool = True) -> TokenizeResult:
    """Run the stage; returns what it also writes to OUT/tokens.json."""
    check_config(cfg)
    if not cfg.inputs:
        raise PrimerError("no inputs: give document files or directories to tokenize")
    _expand(cfg.inputs)  # a missing input fails now, not after the tokenizer is trained
    # claimed (and its writability checked) before the tokenizer is trained, not after
    with DirLock(cfg.out, "primer tokenize"):
        return _tokenize(cfg, Path(cfg.out), progress)


def _tokenize(cfg: TokenizeConfig, out: Path, progress: bool) -> TokenizeResult:
    from primer.tokens.bpe import document_end_id, load_tokenizer, train_bpe

    if (out / META_FILE).is_file() and not cfg.overwrite:
        meta = TokenizeResult.read(out)
        if meta.config == _config_key(cfg):
            return meta
        raise PrimerError(f"{out} already holds shards made with other settings; pass --overwrite or pick another --out")
    for old in list(out.glob("*.bin")) + ([out / META_FILE] if (out / META_FILE).exists() else []):
        old.unlink()

    bad = BadInput(invalid_utf8=cfg.invalid_utf8)  # counted on the encoding pass, the one that reads every document
    if cfg.tokenizer:
        tok = load_tokenizer(cfg.tokenizer)
    else:
        docs = iter_documents(cfg.inputs, cfg.text_field, BadInput(invalid_utf8=cfg.invalid_utf8), cfg.strict)
        train_docs = (d for d in docs if not is_validation(d, cfg.val_fraction))
        if cfg.tokenizer_train_docs is not None:
            train_docs = (d for _, d in zip(range(cfg.tokenizer_train_docs), train_docs))
        tok = train_bpe(train_docs, cfg.vocab_size, min_frequency=cfg.min_frequency, show_progress=progress)
    tok.save(out)
    thash = tok.hash()
    eot = document_end_id(tok)
    vocab = tok.vocab_size
    writers = {s: ShardWriter(out, s, cfg.shard_tokens, vocab, thash) for s in SPLITS}
    dt = dtype_for_vocab(vocab)

    from tqdm import tqdm

    bar = tqdm(desc="tokenize", unit="doc", disable=not progress)
    for batch in _batched(iter_documents(cfg.inputs, cfg.text_field, bad, cfg.strict), cfg.batch_docs):
        # add_special_tokens=False: the shards hold exactly the text ids plus our separator.
        # allow_special=False: "<|endoftext|>" written inside a document is text, not a boundary.
        encoded = tok.encode_batch(batch, add_special_tokens=False, allow_special=False)
        for split in SPLITS:
            rows = [ids + [eot] for text, ids in zip(batch, encoded) if (split == "val") == is_validation(text, cfg.val_fraction)]
            if rows:
                writers[split].add(np.fromiter((i for r in rows for i in r), dtype=dt), docs=len(rows))
        bar.update(len(batch))
    bar.close()
    for w in writers.values():
        w.close()
    if writers["train"].num_tokens == 0:
        raise PrimerError("no training documents were written (inputs empty, or val_fraction took them all)")
    if bad.count:
        print(f"tokenize: {bad.describe()}", file=sys.stderr)
    return _write_meta(out, thash, vocab, eot, writers, inputs=[str(p) for p in _expand(cfg.inputs)],
                       config=_config_key(cfg), bad_input=bad)


def _write_meta(out: Path, thash: str, vocab: int, eot: int, writers: dict[str, ShardWriter], **extra) -> TokenizeResult:
    meta = TokenizeResult(
        format_version=VERSION, tokenizer_hash=thash, vocab_size=vocab, eot_id=eot,
        dtype=dtype_for_vocab(vocab).name,
        splits={s: SplitStats(w.num_tokens, w.num_docs, [p.name for p in w.paths]) for s, w in writers.items()},
        **extra,
    )
    meta.write(out)
    return meta


def write_token_dir(out: str | Path, tokenizer, splits: dict[str, np.ndarray],
                    shard_tokens: int = 100_000_000) -> TokenizeResult:
    """A token directory from ids already in hand (tests, benchmarks, other tools' data)."""
    from primer.tokens.bpe import document_end_id

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save(out)
    thash, vocab = tokenizer.hash(), tokenizer.vocab_size
    writers = {}
    for split in SPLITS:
        w = writers[split] = ShardWriter(out, split, shard_tokens, vocab, thash)
        ids = np.asarray(splits.get(split, np.zeros(0, dtype=np.int64)))
        w.add(ids.astype(dtype_for_vocab(vocab), copy=False))
        w.close()
    return _write_meta(out, thash, vocab, document_end_id(tokenizer), writers)


def _config_key(cfg: TokenizeConfig) -> dict:
    d = to_dict(cfg)
    for k in ("overwrite", "batch_docs", "strict"):  # how it is run, not what it makes
        d.pop(k, None)
    return d


# ------------------------------------------------------------------------------------------ reading


class TokenDataset:
    """A `primer tokenize` output directory: its tokenizer hash and memory-mapped shards per split."""

    def __init__(self, directory: str | Path, tokenizer_hash: str | None = None):
        self.dir = Path(directory)
        self.meta = TokenizeResult.read(self.dir)
        self.tokenizer_hash = tokenizer_hash or self.meta.tokenizer_hash
        if self.meta.tokenizer_hash != self.tokenizer_hash:
            raise PrimerError(
                f"{self.dir}: shards were written with tokenizer {self.meta.tokenizer_hash[:12]}, "
                f"but the tokenizer in use is {self.tokenizer_hash[:12]}. {rebuild_hint(self.dir)}"
            )
        self.vocab_size: int = self.meta.vocab_size
        self.eot_id: int = self.meta.eot_id
        self._cache: dict[str, list[np.ndarray]] = {}

    def shards(self, split: str) -> list[np.ndarray]:
        """Memory-mapped ids of each shard of `split` ("train" or "val"), headers checked."""
        if split not in self._cache:
            self._cache[split] = [open_shard(self.dir / n, self.tokenizer_hash) for n in self.meta.split(split).shards]
        return self._cache[split]

    def num_tokens(self, split: str) -> int:
        return sum(s.size for s in self.shards(split))

    def tokenizer(self):
        from primer.model.tokenizer import Tokenizer

        return Tokenizer.load(self.dir)
