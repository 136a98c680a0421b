"""MANIFEST.md, the one description of a benchmark folder: written by `primer data pull`, read by `primer data check`.

The format is shared/benchmarks' own (its MANIFEST.md files are written by hand in it):

    ## Files
    | file | records | unit | bytes | sha256 |
    |---|---:|---|---:|---|
    | `valid.jsonl` | 1838 | JSON lines | 495929 | `9350...` |

    ### `valid.jsonl`                              (optionally "(same format for all files like it)")
    - Unit: JSON lines
    - Fields: `goal`, `sol1`, `sol2`

`count_records` knows every unit those files use; `schema_problems` checks the listed fields.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from primer.common.files import sha256_file

MANIFEST = "MANIFEST.md"
# the unit may itself hold a "|" (TinyStories: stories separated by "<|endoftext|>")
_ROW = re.compile(r"^\|\s*`([^`]+)`\s*\|\s*([\d,]+)\s*\|\s*(.+?)\s*\|\s*([\d,]+)\s*\|\s*`([0-9a-f]{64})`\s*\|\s*$")
_SECTION = re.compile(r"^###\s+`([^`]+)`(.*)$")
_FIELDS = re.compile(r"^-\s*(?:Fields|Columns):\s*(.*)$")


@dataclass
class FileEntry:
    path: str
    records: int
    unit: str
    bytes: int
    sha256: str


@dataclass
class Manifest:
    files: list[FileEntry]
    fields: dict[str, tuple[list[str], bool]] = field(default_factory=dict)
    """file -> (fields each record has, applies to every file like it: same folder and suffix)"""


def parse(text: str) -> Manifest:
    files, fields, section = [], {}, None
    for line in text.splitlines():
        if m := _ROW.match(line):
            files.append(FileEntry(m.group(1), int(m.group(2).replace(",", "")), m.group(3),
                                   int(m.group(4).replace(",", "")), m.group(5)))
        elif m := _SECTION.match(line):
            section = (m.group(1), "same format for all files like it" in m.group(2))
        elif section and (m := _FIELDS.match(line)):
            names = re.findall(r"`([^`]+)`", m.group(1))
            # plain names only: nested paths (data[].title) and prose describe structure, not keys
            if names and all(re.fullmatch(r"[A-Za-z_][\w ]*", n) for n in names) and names != ["plain text"]:
                fields[section[0]] = (names, section[1])
    return Manifest(files, fields)


def read(folder: Path) -> Manifest:
    return parse((folder / MANIFEST).read_text(encoding="utf-8"))


# -- records by unit -----------------------------------------------------------------------------
def _text(path: Path) -> str:
    raw = path.read_bytes()
    return (gzip.decompress(raw) if path.suffix == ".gz" else raw).decode("utf-8")


def _json_lines(path: Path) -> list[tuple[int, object]]:
    """(line number, record) of every non-blank line; split on "\\n" only (JSON strings may hold U+2028)."""
    out = []
    for i, line in enumerate(_text(path).split("\n"), 1):
        if line.strip():
            try:
                out.append((i, json.loads(line)))
            except json.JSONDecodeError as e:
                raise ValueError(f"line {i}: malformed JSON ({e.msg} at column {e.colno})") from None
    return out


def count_records(path: Path, unit: str) -> int:
    """Records in `path` as the MANIFEST's unit counts them; ValueError for a unit primer does not know."""
    u = unit.strip()
    if u.startswith("JSON lines"):
        return len(_json_lines(path))
    if u.startswith("lines"):  # as `wc -l` counts them (the shared MANIFESTs' convention)
        return _text(path).count("\n")
    if u.startswith("CSV rows"):
        rows = sum(1 for _ in csv.reader(io.StringIO(_text(path), newline="")))
        return rows - (1 if "header" in u and "no header" not in u else 0)
    if u.startswith("JSON object"):
        return int(isinstance(json.loads(_text(path)), dict))
    if u.startswith("items in top-level JSON array"):
        return len(json.loads(_text(path)))
    if u.startswith("questions"):  # SQuAD's nested JSON
        data = json.loads(_text(path))["data"]
        return sum(len(p["qas"]) for a in data for p in a["paragraphs"])
    if m := re.match(r'stories separated by "(.+)"', u):
        return sum(1 for s in _text(path).split(m.group(1)) if s.strip())
    raise ValueError(f"cannot count records: unknown unit '{unit}'")


def schema_problems(path: Path, unit: str, names: list[str], limit: int = 3) -> list[str]:
    """The first few records of `path` that lack one of `names` (fields of JSON records, columns of CSV rows)."""
    u, out = unit.strip(), []
    if not names:
        return out
    if u.startswith(("JSON lines", "JSON object", "items in top-level JSON array")):
        if u.startswith("JSON lines"):
            recs = _json_lines(path)
        else:
            data = json.loads(_text(path))
            recs = [(1, data)] if u.startswith("JSON object") else list(enumerate(data, 1))
        for i, r in recs:
            missing = [n for n in names if not isinstance(r, dict) or n not in r]
            if missing:
                out.append(f"record {i} lacks {missing}")
    elif u.startswith("CSV rows"):
        rows = list(csv.reader(io.StringIO(_text(path), newline="")))
        if "no header" not in u and rows:
            if rows[0] != names:
                out.append(f"header {rows[0]} is not {names}")
            rows = rows[1:]
        out += [f"row {i} has {len(r)} columns, not {len(names)}" for i, r in enumerate(rows, 1) if len(r) != len(names)]
    return out[:limit]


# -- writing -------------------------------------------------------------------------------------
def render(title: str, intro: str, source: list[str], licence: list[str], files: list[FileEntry],
           fields: dict[str, list[str]], notes: list[str] = ()) -> str:
    """A MANIFEST.md in shared/benchmarks' format."""
    out = [f"# {title}", "", intro, "", "## Source", "", *[f"- {s}" for s in source], "", "## License", "",
           *[f"- {s}" for s in licence], "", "## Files", "", "| file | records | unit | bytes | sha256 |",
           "|---|---:|---|---:|---|"]
    out += [f"| `{f.path}` | {f.records} | {f.unit} | {f.bytes} | `{f.sha256}` |" for f in sorted(files, key=lambda f: f.path)]
    out += ["", "## Record format", ""]
    for f in sorted(files, key=lambda f: f.path):
        out += [f"### `{f.path}`", "", f"- Unit: {f.unit}"]
        if fields.get(f.path):
            out.append("- Fields: " + ", ".join(f"`{n}`" for n in fields[f.path]))
        out.append("")
    if notes:
        out += ["## Notes", "", *[f"- {n}" for n in notes], ""]
    return "\n".join(out)


def entry(folder: Path, rel: str, unit: str, records: int) -> FileEntry:
    p = folder / rel
    return FileEntry(rel, records, unit, p.stat().st_size, sha256_file(p))
