"""Topics: the shipped subject -> area -> concept tree, topic files, and teacher expansion.

`data/topics.yaml` is hand-written as subject -> area -> list of concepts, plus a few `_cross`
entries that expand a template over a list ("the geography of {x}" x countries). `shipped()`
flattens it into `Topic` leaves (no duplicates; a test checks there are >= 2,000).

`expand()` grows a topic list the phi-1.5 way (its ~20K topics): the teacher is asked for
subtopics of each parent, answers are cleaned (numbering, bullets, sentences dropped), and
near-identical topics are merged (normalized form, then MinHash on character 3-grams, Jaccard
>= 0.8). Expansion appends to a JSONL file one parent at a time, so it resumes like synth.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from importlib import resources
from pathlib import Path

import yaml

from primer.common.files import DirLock
from primer.common.jsonl import BadInput, JsonlAppender, read_jsonl, read_jsonl_lines
from primer.errors import PrimerError
from primer.synth.grid import Topic

_STOP = {"a", "an", "the", "of", "and", "in", "on", "for", "to", "with", "its", "their", "how", "what"}


def load_tree(path: str | Path | None = None) -> dict:
    text = Path(path).read_text() if path else resources.files("primer").joinpath("data/topics.yaml").read_text()
    tree = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # C parser: 10x faster
    if not isinstance(tree, dict):
        raise PrimerError(f"{path or 'topics.yaml'}: expected subject -> area -> [concepts]")
    return tree


def leaves(tree: dict) -> list[Topic]:
    """Flatten the tree; `_cross` entries expand templates. Duplicates (same normalized name) dropped."""
    out: list[Topic] = []
    seen: set[str] = set()

    def add(name: str, subject: str, area: str) -> None:
        name = " ".join(str(name).split())
        key = normalize(name)
        if name and key not in seen:
            seen.add(key)
            out.append(Topic(name, subject, area))

    for subject, areas in tree.items():
        if subject == "_cross":
            continue
        for area, concepts in (areas or {}).items():
            for c in concepts or []:
                add(c, subject, area)
    for cross in tree.get("_cross", []):
        for x in cross["values"]:
            for tpl in cross["templates"]:
                add(tpl.format(x=x), cross["subject"], cross["area"])
    return out


def shipped() -> list[Topic]:
    """Every leaf of the topic tree that ships with primer."""
    return leaves(load_tree())


def select(path: str | Path | None, subjects: Sequence[str] = (), bad: BadInput | None = None,
           strict: bool = False) -> list[Topic]:
    """The topics of a file (default: the shipped tree), only those of `subjects` when given."""
    out = read_topics(path, bad, strict) if path else shipped()
    if subjects:
        want = {s.strip().lower() for s in subjects}
        out = [t for t in out if t.subject.lower() in want]
        if not out:
            raise PrimerError(f"no topics of subject(s) {sorted(want)}; see `primer topics`")
    return out


def normalize(name: str) -> str:
    """Lowercase, punctuation and stop words out, naive singular: 'The Cells' == 'cell'."""
    ws = re.findall(r"[a-z0-9]+", name.lower())
    ws = [w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w for w in ws if w not in _STOP]
    return " ".join(ws)


def read_topics(path: str | Path, bad: BadInput | None = None, strict: bool = False) -> list[Topic]:
    """A topic file: JSONL ({"topic", "subject"?, "area"?} per line, as `primer topics` writes),
    YAML (a tree like the shipped one), or plain text (one topic per line).

    A JSONL line that is malformed or has no "topic" goes to `bad` as `file:line: why`
    (`primer.common.jsonl`'s policy; `strict` stops at it with its file and line)."""
    p = Path(path)
    if not p.is_file():
        raise PrimerError(f"topics file not found: {p}")
    if p.suffix in (".yaml", ".yml"):
        return leaves(load_tree(p))
    if p.suffix == ".jsonl":
        found, skipped = [], BadInput()
        for n, obj in read_jsonl_lines(p, skipped, strict=strict):
            if obj.get("done"):  # expansion's resume markers
                continue
            if not isinstance(obj.get("topic"), str):
                if strict:
                    raise PrimerError(f"{p}:{n}: expected a JSON object with a 'topic' field")
                skipped.add(f"{p}:{n}", "no 'topic' field")
                continue
            found.append(Topic(obj["topic"], obj.get("subject", ""), obj.get("area", "")))
        if bad is not None:
            bad.merge(skipped)
        elif skipped.count:
            print(f"{p}: {skipped.describe()}", file=sys.stderr)
    else:
        lines = (line.strip() for line in p.read_text().splitlines())
        found = [Topic(line) for line in lines if line and not line.startswith("#")]
    out: list[Topic] = []
    seen: set[str] = set()
    for t in found:
        if normalize(t.name) not in seen:
            seen.add(normalize(t.name))
            out.append(t)
    if not out:
        raise PrimerError(f"{p}: no topics in it")
    return out


# ---------------------------------------------------------------------------- expansion

EXPAND_PROMPT = (
    "Give a numbered list of {k} short subtopics of \"{topic}\" for a {subject}course. "
    "Only names, two to five words each."
)


def parse_list(text: str, max_words: int = 8) -> list[str]:
    """Topic names from a teacher's list answer: bullets/numbers stripped, sentences dropped."""
    out = []
    for line in text.splitlines():
        line = re.sub(r"^\s*(?:[-*•]+|\d+[.)]|[a-z][.)])\s*", "", line).strip()
        line = re.sub(r"\*\*|__", "", line)
        line = line.split(":")[0].split(" - ")[0].split(" – ")[0].strip(" .;,\"'")
        if not line or len(line) < 3 or len(line) > 80:
            continue
        if len(line.split()) > max_words or line.endswith("?"):
            continue
        if re.match(r"(?i)(here are|sure|subtopics|certainly|i )", line):
            continue
        out.append(line)
    return out


class TopicDeduper:
    """Rejects a topic whose normalized form was seen, or whose char-3-gram MinHash Jaccard with
    a kept topic is >= threshold."""

    def __init__(self, threshold: float = 0.8, num_perm: int = 64) -> None:
        self.num_perm = num_perm
        self.threshold = threshold
        self.kept: dict[str, object] = {}
        self.norms: set[str] = set()
        try:
            from datasketch import MinHash, MinHashLSH
        except ImportError:  # exact (normalized) matches only
            import warnings

            warnings.warn("datasketch not installed: topic dedup merges exact normalized matches only "
                          "(pip install datasketch for near-duplicates)", stacklevel=2)
            self.lsh = None
            return
        self._MinHash = MinHash
        self.lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)

    def _mh(self, norm: str):
        m = self._MinHash(num_perm=self.num_perm, seed=1)
        s = f" {norm} "
        m.update_batch([s[i : i + 3].encode() for i in range(max(1, len(s) - 2))])
        return m

    def add(self, name: str) -> bool:
        """True (and remembered) when `name` is new."""
        norm = normalize(name)
        if not norm or norm in self.norms:
            return False
        if self.lsh is None:
            self.norms.add(norm)
            return True
        m = self._mh(norm)
        if any(m.jaccard(self.kept[k]) >= self.threshold for k in self.lsh.query(m)):
            return False
        self.norms.add(norm)
        self.kept[norm] = m
        self.lsh.insert(norm, m)
        return True


def expand(
    parents: Sequence[Topic],
    teacher,
    out_path: str | Path,
    per_topic: int = 10,
    sampling=None,
    progress: bool = True,
) -> dict:
    """Ask `teacher` for subtopics of each parent; append new, non-duplicate ones to `out_path`.

    Resumable: parents already recorded in the file are skipped. Returns counts.
    """
    from primer.teachers import Sampling

    sampling = sampling or Sampling(max_tokens=200, temperature=0.7)
    out_path = Path(out_path)
    with DirLock.for_file(out_path, "primer topics --expand"):
        return _expand(parents, teacher, out_path, per_topic, sampling, progress)


def _expand(parents, teacher, out_path: Path, per_topic: int, sampling, progress: bool) -> dict:
    dedup = TopicDeduper()
    done_parents: set[str] = set()
    for t in parents:  # parents themselves count as known, so children never repeat them
        dedup.add(t.name)
    for rec in (read_jsonl(out_path, strict=True, repair=True) if out_path.exists() else ()):
        if rec.get("done"):
            done_parents.add(rec["parent"])
        elif rec.get("topic"):
            dedup.add(rec["topic"])
    todo = [p for p in parents if p.name not in done_parents]
    stats = {"parents": len(parents), "parents_done_before": len(parents) - len(todo), "new": 0, "duplicates": 0}

    def items() -> Iterator:
        for i, p in enumerate(todo):
            subj = f"{p.subject} " if p.subject else ""
            yield i, EXPAND_PROMPT.format(k=per_topic, topic=p.name, subject=subj)

    from tqdm import tqdm

    bar = tqdm(total=len(todo), unit="topic", disable=not progress, desc="expanding")
    with JsonlAppender(out_path) as out:
        for i, comp in teacher.imap(items(), sampling.with_seed(sampling.seed)):
            p = todo[i]
            names = parse_list(comp.text)[:per_topic]
            recs = []
            for name in names:
                if dedup.add(name):
                    recs.append({"topic": name, "subject": p.subject, "area": p.name, "parent": p.name})
                    stats["new"] += 1
                else:
                    stats["duplicates"] += 1
            recs.append({"parent": p.name, "done": True, "answered": len(names)})  # resume marker
            out.write_many(recs)
            bar.update(1)
    bar.close()
    return stats


def iter_subjects(topics: Iterable[Topic]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for t in topics:
        counts[t.subject] = counts.get(t.subject, 0) + 1
    return counts
