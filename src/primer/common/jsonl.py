"""JSON Lines, one home: the reader every stage uses, the crash-safe appender, and torn-line repair.

The bad-line policy is one argument. A line that is not valid UTF-8 JSON holding an object is
never skipped silently: by default it is counted and named (`file:line: why`) in a `BadInput`
that the caller puts in its summary (or, when the caller passes none, the reader names the bad
lines on stderr when it finishes); `strict=True` stops at the first one with a `PrimerError`
that names the file and line. Invalid UTF-8 has a policy of its own, carried by the `BadInput`
(`invalid_utf8`, a config field of the stages that read documents): "drop" the line (counted and
named, as above), or "replace" the bad bytes with U+FFFD and keep it (counted and named too);
`decode_text` applies the same policy to plain-text documents.

Files primer appends to and reads back on resume (synth output, metrics, caches) are written by
`JsonlAppender` with one write per batch of lines, so a kill leaves whole lines plus at most one
torn last line; `repair_jsonl` cuts that line, and callers say that they did.
"""

from __future__ import annotations

import gzip
import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, ClassVar, Literal

from primer.errors import PrimerError


Utf8Policy = Literal["drop", "replace"]


@dataclass
class BadInput:
    """Input records that could not be used (and ones kept with invalid UTF-8 replaced): how many, and
    the first few as `file:line: why`; `invalid_utf8` is the policy the readers apply.

    Every stage result carries one (`bad_input`), so the report names what a stage could not read.
    """

    count: int = 0
    """records that could not be used"""
    examples: list[str] = field(default_factory=list)
    """the first KEEP of them (and of the replaced ones), as `file:line: why`"""
    replaced: int = 0
    """records kept with their invalid UTF-8 bytes replaced by U+FFFD (policy "replace")"""
    invalid_utf8: Utf8Policy = "drop"
    """what a record with invalid UTF-8 gets: dropped (and counted), or kept with U+FFFD (and counted)"""

    KEEP: ClassVar[int] = 50

    def add(self, where: str, why: str) -> None:
        self.count += 1
        self._example(f"{where}: {why}")

    def add_replaced(self, where: str, why: str) -> None:
        self.replaced += 1
        self._example(f"{where}: {why} (kept, bad bytes replaced by U+FFFD)")

    def _example(self, text: str) -> None:
        if len(self.examples) < self.KEEP:
            self.examples.append(text)

    def merge(self, other: BadInput) -> None:
        self.count += other.count
        self.replaced += other.replaced
        room = self.KEEP - len(self.examples)
        self.examples.extend(other.examples[: max(room, 0)])

    def describe(self, what: str = "bad line") -> str:
        """One line for a log: '2 bad lines skipped (a.jsonl:3: malformed JSON ...; ...)'."""
        if not self.count and not self.replaced:
            return f"no {what}s"
        shown = "; ".join(self.examples[:3]) + ("; ..." if len(self.examples) > 3 else "")
        parts = [f"{self.count} {what}{'s' if self.count != 1 else ''} skipped"] if self.count else []
        if self.replaced:
            parts.append(f"{self.replaced} kept with invalid UTF-8 replaced")
        return f"{', '.join(parts)} ({shown})"


def decode_text(data: bytes, path: str | Path, bad: BadInput | None, strict: bool = False, first_line: int = 1,
                ) -> str | None:
    """`data` (read from `path`, starting at line `first_line`) as text, under `bad`'s UTF-8 policy:
    None when it is dropped; a PrimerError naming file and line with `strict` (and policy "drop")."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = first_line + data.count(b"\n", 0, e.start)
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1)
        why = f"invalid UTF-8 at byte {col} of the line"
        if bad is not None and bad.invalid_utf8 == "replace":
            bad.add_replaced(f"{path}:{line}", why)
            return data.decode("utf-8", errors="replace")
        if strict or bad is None:
            raise PrimerError(f"{path}:{line}: {why}; convert the file to UTF-8 or remove that line "
                              "(or read such lines with invalid_utf8 = replace)") from None
        bad.add(f"{path}:{line}", why)
        return None


def open_binary(path: str | Path) -> BinaryIO:
    """A file or a .gz file, as bytes (lines are decoded one by one so a bad byte names its line)."""
    path = str(path)
    return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")  # type: ignore[return-value]


def _parse(raw: bytes, where: str, bad: BadInput, strict: bool) -> tuple[Any, str | None]:
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        if bad.invalid_utf8 != "replace":
            return None, f"invalid UTF-8 at byte {e.start}"
        bad.add_replaced(where, f"invalid UTF-8 at byte {e.start}")
        line = raw.decode("utf-8", errors="replace")
    try:
        rec = json.loads(line)
    except json.JSONDecodeError as e:
        return None, f"malformed JSON ({e.msg} at column {e.colno})"
    if not isinstance(rec, dict):
        return None, f"expected a JSON object, got {type(rec).__name__}"
    return rec, None


def read_jsonl_lines(path: str | Path, bad: BadInput | None = None, *, strict: bool = False,
                     repair: bool = False) -> Iterator[tuple[int, dict]]:
    """(line number, record) for each JSON object line of `path` (plain or .gz); blank lines pass.

    Bad lines go to `bad` (or, with `strict`, raise a PrimerError naming file and line). With
    `repair`, a torn last line left by a kill is cut first and reported on stderr. A missing file
    is a PrimerError naming it.
    """
    path = Path(path)
    if repair and (cut := repair_jsonl(path)):
        print(f"{path}: removed a torn last line ({cut} bytes) left by an interrupted write", file=sys.stderr)
    own = bad is None
    bad = BadInput() if bad is None else bad
    before = bad.count + bad.replaced
    try:
        f = open_binary(path)
    except FileNotFoundError:
        raise PrimerError(f"{path}: file not found") from None
    lineno = 0
    with f:
        try:
            for lineno, raw in enumerate(f, 1):
                if not raw.strip():
                    continue
                rec, why = _parse(raw, f"{path}:{lineno}", bad, strict)
                if why is None:
                    yield lineno, rec
                elif strict:
                    raise PrimerError(f"{path}:{lineno}: {why}; fix or remove that line and rerun")
                else:
                    bad.add(f"{path}:{lineno}", why)
        except (EOFError, OSError, gzip.BadGzipFile) as e:  # a truncated or corrupt .gz
            if strict:
                raise PrimerError(f"{path}:{lineno + 1}: unreadable rest of file ({e})") from None
            bad.add(f"{path}:{lineno + 1}", f"unreadable rest of file ({e})")
    if own and bad.count + bad.replaced > before:
        print(f"{path}: {bad.describe()}", file=sys.stderr)


def read_jsonl(path: str | Path, bad: BadInput | None = None, *, strict: bool = False,
               repair: bool = False) -> Iterator[dict]:
    """The records of `path`; see `read_jsonl_lines` for the bad-line policy."""
    for _, rec in read_jsonl_lines(path, bad, strict=strict, repair=repair):
        yield rec


def count_records(path: str | Path) -> int:
    """Non-blank lines of a JSONL file (plain or .gz), without parsing them."""
    with open_binary(path) as f:
        return sum(1 for raw in f if raw.strip())


def repair_jsonl(path: Path) -> int:
    """Cut a torn last line (no trailing newline) left by a kill; returns bytes removed."""
    path = Path(path)
    if not path.exists():
        return 0
    size = path.stat().st_size
    if size == 0:
        return 0
    with path.open("rb+") as f:
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return 0
        pos = size
        chunk = 1 << 16
        while pos > 0:
            start = max(0, pos - chunk)
            f.seek(start)
            buf = f.read(pos - start)
            i = buf.rfind(b"\n")
            if i >= 0:
                keep = start + i + 1
                break
            pos = start
        else:
            keep = 0
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
        return size - keep


class JsonlAppender:
    """Append records as single-write lines; fsync each (so a kill loses at most the line in flight)."""

    def __init__(self, path: Path, fsync: bool = True, interval: float = 0.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        repair_jsonl(self.path)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.fsync = fsync
        self.interval = interval
        self._last_sync = time.monotonic()
        self._dirty = False

    def write_many(self, recs: list[dict]) -> None:
        data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs).encode()
        view = memoryview(data)
        while view:  # one write per record batch: a kill leaves whole lines or one torn last line
            n = os.write(self.fd, view)
            view = view[n:]
        self._dirty = True
        if self.fsync and (self.interval <= 0 or time.monotonic() - self._last_sync >= self.interval):
            self.sync()

    def sync(self) -> None:
        if self._dirty and self.fd >= 0:
            os.fsync(self.fd)
            self._dirty = False
            self._last_sync = time.monotonic()

    def write(self, rec: dict) -> None:
        self.write_many([rec])

    def close(self) -> None:
        if self.fd >= 0:
            if self.fsync:
                self.sync()
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> JsonlAppender:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
