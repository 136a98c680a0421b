"""Documents in, chunks out: what `primer index build` reads and how it cuts it.

Inputs (files or folders, walked recursively in sorted order):
  * `.jsonl` / `.jsonl.gz`: one document per line, read through `primer.common.jsonl` (a bad line is
    counted and named, never dropped silently); its text, id and title come from configurable fields.
  * `.json` in SQuAD format (`data[].title`, `data[].paragraphs[].context`): one document per
    paragraph, id `TITLE/PARAGRAPH`, titled by its article (how QA sets are commonly shipped).
  * `.txt` / `.md`: one document per file, id = the path, title = the file name without extension.

Chunking is by paragraph (blank-line separated) with a word budget: consecutive paragraphs are
packed into one chunk while they fit, and a paragraph longer than the budget is cut into windows
of `chunk_words` words that overlap by `overlap_words`. Budgets count whitespace-separated words,
so an index does not depend on a model's tokenizer (one English word is ~1.3 SmolLM2 tokens).
Every chunk keeps its document's id and title and its character offsets: `text[start:end]` of
the document is the chunk's text, exactly.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from primer.common.jsonl import BadInput, read_jsonl_lines
from primer.errors import PrimerError

JSONL_SUFFIXES = (".jsonl", ".jsonl.gz")
TEXT_SUFFIXES = (".txt", ".md")
_PARAGRAPH_BREAK = re.compile(r"\n[ \t\r\f\v]*\n")
_WORD = re.compile(r"\S+")


@dataclass
class Document:
    id: str
    title: str
    text: str
    source: str
    """Where it came from: `file` or `file:line`."""


@dataclass
class Chunk:
    doc_id: str
    title: str
    source: str
    start: int
    """Character offset of the chunk in its document's text."""
    end: int
    text: str


def _kind(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith(JSONL_SUFFIXES):
        return "jsonl"
    if name.endswith(".json"):
        return "squad"
    if name.endswith(TEXT_SUFFIXES):
        return "text"
    return None


def input_files(inputs: list[str | Path]) -> tuple[list[Path], list[Path]]:
    """(files to read, files skipped for their extension) from files and folders."""
    files, skipped = [], []
    if not inputs:
        raise PrimerError("no inputs given: name .jsonl / .json (SQuAD) / .txt / .md files or folders holding them")
    for raw in inputs:
        p = Path(raw).expanduser()
        if not p.exists():
            raise PrimerError(f"input not found: {p}")
        if p.is_file():
            if _kind(p) is None:
                raise PrimerError(f"{p}: unsupported file type (expected .jsonl, .jsonl.gz, SQuAD .json, .txt or .md)")
            files.append(p)
            continue
        for f in sorted(x for x in p.rglob("*") if x.is_file() and not x.name.startswith(".")):
            (files if _kind(f) else skipped).append(f)
    return files, skipped


def read_documents(files: list[Path], bad: BadInput, *, text_field: str = "text", id_field: str = "id",
                   title_field: str = "title") -> Iterator[Document]:
    """Every document of `files`; unusable records go to `bad` as `file:line: why`."""
    for path in files:
        kind = _kind(path)
        if kind == "jsonl":
            for lineno, rec in read_jsonl_lines(path, bad):
                text = rec.get(text_field)
                if not isinstance(text, str):
                    bad.add(f"{path}:{lineno}", f"no string '{text_field}' field (set --text-field)")
                    continue
                if not text.strip():
                    bad.add(f"{path}:{lineno}", "empty text")
                    continue
                doc_id = str(rec.get(id_field) if rec.get(id_field) is not None else f"{path.name}:{lineno}")
                title = str(rec.get(title_field) or doc_id)
                yield Document(doc_id, title, text, f"{path}:{lineno}")
        elif kind == "squad":
            yield from _squad_documents(path, bad)
        else:
            try:
                text = path.read_text(encoding="utf-8")
            except UnicodeDecodeError as e:
                bad.add(str(path), f"invalid UTF-8 at byte {e.start}")
                continue
            if not text.strip():
                bad.add(str(path), "empty file")
                continue
            yield Document(str(path), path.name.split(".")[0], text, str(path))


def _squad_documents(path: Path, bad: BadInput) -> Iterator[Document]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        articles = data["data"]
    except (UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
        bad.add(str(path), f"not a SQuAD-format JSON file (data[].paragraphs[].context): {type(e).__name__}: {e}")
        return
    for a, art in enumerate(articles):
        title = str(art.get("title") or f"article {a}")
        for p, para in enumerate(art.get("paragraphs") or []):
            text = para.get("context") if isinstance(para, dict) else None
            if not isinstance(text, str) or not text.strip():
                bad.add(f"{path}:data[{a}].paragraphs[{p}]", "no context text")
                continue
            yield Document(f"{title}/{p}", title, text, f"{path}:data[{a}].paragraphs[{p}]")


def _paragraphs(text: str) -> Iterator[tuple[int, int]]:
    """(start, end) of each paragraph's non-blank content."""
    pos = 0
    for m in list(_PARAGRAPH_BREAK.finditer(text)) + [None]:
        stop = m.start() if m else len(text)
        seg = text[pos:stop]
        lead = len(seg) - len(seg.lstrip())
        tail = len(seg.rstrip())
        if tail > lead:
            yield pos + lead, pos + tail
        if m:
            pos = m.end()


def chunk_spans(text: str, chunk_words: int = 200, overlap_words: int = 40) -> list[tuple[int, int]]:
    """(start, end) character spans of the chunks of `text` (see the module docstring)."""
    if chunk_words < 1 or not 0 <= overlap_words < chunk_words:
        raise PrimerError(f"need chunk_words >= 1 and 0 <= overlap_words < chunk_words; got {chunk_words}, {overlap_words}")
    units: list[tuple[int, int, int, bool]] = []  # start, end, words, whole paragraph
    for ps, pe in _paragraphs(text):
        words = [(m.start(), m.end()) for m in _WORD.finditer(text, ps, pe)]
        n = len(words)
        if n <= chunk_words:
            units.append((ps, pe, n, True))
            continue
        i, step = 0, chunk_words - overlap_words
        while True:
            j = min(i + chunk_words, n)
            units.append((words[i][0], words[j - 1][1], j - i, False))
            if j == n:
                break
            i += step
    spans: list[tuple[int, int]] = []
    cur: list | None = None  # [start, end, words, only whole paragraphs]; windows are never packed
    for s, e, n, whole in units:
        if cur is not None and whole and cur[3] and cur[2] + n <= chunk_words:
            cur[1], cur[2] = e, cur[2] + n
            continue
        if cur is not None:
            spans.append((cur[0], cur[1]))
        cur = [s, e, n, whole]
    if cur is not None:
        spans.append((cur[0], cur[1]))
    return spans


def chunk_document(doc: Document, chunk_words: int = 200, overlap_words: int = 40) -> list[Chunk]:
    return [Chunk(doc.id, doc.title, doc.source, s, e, doc.text[s:e])
            for s, e in chunk_spans(doc.text, chunk_words, overlap_words)]
