"""Curate: documents, readers/writers, bad input, filters and step counts."""

from __future__ import annotations

import gzip
import json

import pytest

from primer.common.jsonl import BadInput
from primer.curate.document import Document, ShardWriter, list_shards, read_documents, read_jsonl_documents
from primer.curate.filters import (BoilerplateFilter, GopherQualityFilter, LineStructureFilter, RepetitionFilter,
                                   StripBoilerplate, default_filters)
from primer.curate.pipeline import CurateConfig, curate
from primer.curate.steps import Context, Filter, run_steps
from primer.errors import PrimerError

GOOD = ("The water cycle describes how water moves between the oceans, the air and the land. "
        "When the sun heats the surface of the sea, water evaporates and rises as vapour. "
        "As the vapour rises it cools and condenses into tiny droplets that form clouds. "
        "When the droplets grow heavy enough they fall back to the ground as rain or snow, "
        "and rivers carry that water back to the sea, where the cycle starts again.")


def _write_jsonl(path, recs, gz=False):
    opener = gzip.open if gz else open
    with opener(path, "wt", encoding="utf-8") as f:
        for r in recs:
            f.write((r if isinstance(r, str) else json.dumps(r)) + "\n")


def test_readers_and_sharded_writer(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    _write_jsonl(src / "a.jsonl", [{"id": "a1", "text": "alpha", "url": "u"}, {"text": "beta"}])
    _write_jsonl(src / "b.jsonl.gz", [{"id": "b1", "text": "gamma"}], gz=True)
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([{"id": "p1", "text": "delta"}]), src / "c.parquet")
    shards = list_shards(src)
    assert [s.kind for s in shards] == ["jsonl", "jsonl", "parquet"]
    assert [s.index for s in shards] == [0, 1, 2]
    docs = list(read_documents(src))
    assert [d.id for d in docs] == ["a1", "a:2", "b1", "p1"]  # missing id -> file stem:line
    assert docs[0].metadata == {"url": "u"}

    txt = tmp_path / "txt"
    txt.mkdir()
    (txt / "one.txt").write_text("first text")
    (txt / "two.txt").write_text("second text")
    assert [(d.id, d.text) for d in read_documents(txt)] == [("one", "first text"), ("two", "second text")]

    out = tmp_path / "out"
    with ShardWriter(out, "part", "jsonl.gz", max_docs=2) as w:
        for d in docs:
            w.write(d)
    assert [p.name for p in w.files] == ["part-00000.jsonl.gz", "part-00001.jsonl.gz"]
    back = list(read_documents(out))
    assert [(d.id, d.text) for d in back] == [(d.id, d.text) for d in docs]
    with ShardWriter(out / "pq", "part", "parquet", max_docs=10) as w:
        for d in docs:
            w.write(d)
    assert [d.text for d in read_documents(out / "pq")] == [d.text for d in docs]


def test_malformed_lines_are_counted_with_file_and_line(tmp_path):
    f = tmp_path / "bad.jsonl"
    _write_jsonl(f, [{"text": GOOD}, '{"text": "unterminated', "[1, 2]", {"body": "no text field"}, "",
                     {"text": 5}, {"text": GOOD + " Again."}])
    bad = BadInput()
    docs = list(read_jsonl_documents(str(f), bad=bad))
    assert len(docs) == 2
    assert bad.count == 4
    assert bad.examples[0].startswith(f"{f}:2: malformed JSON")
    assert f"{f}:3: expected a JSON object" in bad.examples[1]
    assert f"{f}:4: missing field 'text'" in bad.examples[2]
    assert f"{f}:6: field 'text' is not a string" in bad.examples[3]
    # the pipeline does not crash, and reports them
    r = curate(CurateConfig(input=str(f), out=str(tmp_path / "o"), workers=1, heuristics=False), quiet=True)
    assert r.documents_read == 2 and r.bad_input.count == 4
    assert any(":2: malformed JSON" in e for e in r.bad_input.examples)


def test_truncated_gzip_keeps_what_was_read(tmp_path):
    f = tmp_path / "cut.jsonl.gz"
    _write_jsonl(f, [{"text": f"doc {i} " * 50} for i in range(200)], gz=True)
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    bad = BadInput()
    docs = list(read_jsonl_documents(str(f), bad=bad))
    assert 0 < len(docs) < 200
    assert bad.count >= 1 and "unreadable rest of file" in bad.examples[-1]


def test_empty_input_and_missing_text_field_are_clear_errors(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(PrimerError, match="input is empty"):
        curate(CurateConfig(input=str(empty), out=str(tmp_path / "o1"), workers=1), quiet=True)
    wrong = tmp_path / "wrong.jsonl"
    _write_jsonl(wrong, [{"content": GOOD}, {"content": GOOD}])
    with pytest.raises(PrimerError, match="no record has a 'text' field.*--text-key"):
        curate(CurateConfig(input=str(wrong), out=str(tmp_path / "o2"), workers=1), quiet=True)
    r = curate(CurateConfig(input=str(wrong), out=str(tmp_path / "o3"), workers=1, text_key="content",
                            heuristics=False), quiet=True)
    assert r.documents_read == 2 and r.documents_kept == 1  # the second is an exact duplicate
    with pytest.raises(PrimerError, match="input not found"):
        curate(CurateConfig(input=str(tmp_path / "nope"), out=str(tmp_path / "o4")), quiet=True)
    (tmp_path / "emptydir").mkdir()
    with pytest.raises(PrimerError, match="no input files"):
        curate(CurateConfig(input=str(tmp_path / "emptydir"), out=str(tmp_path / "o5")), quiet=True)


def test_hf_datasets_reader(tmp_path):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_list([{"text": "one two", "id": "x"}, {"text": "three", "id": "y"}])
    ds.save_to_disk(str(tmp_path / "ds"))
    assert [d.id for d in read_documents(tmp_path / "ds")] == ["x", "y"]


def test_heuristic_filters_reasons():
    keep = Document("g", "\n\n".join([GOOD] * 1))
    for f in default_filters():
        assert f.check(keep) is True, f.name
    assert GopherQualityFilter().check(Document("s", "too short to keep")) == "gopher:too_few_words"
    assert GopherQualityFilter().check(Document("d", " ".join(["1234 5678 9012 the of and"] * 20))) in (
        "primer:digit_fraction", "gopher:alpha_words")
    assert GopherQualityFilter().check(Document("w", " ".join(["a b c d the of"] * 20))) == "gopher:mean_word_length_low"
    assert BoilerplateFilter().check(Document("l", GOOD + " Lorem ipsum dolor sit amet.")) == "c4:lorem_ipsum"
    boiler = "\n".join(["Please enable JavaScript to view this page.", "We use cookies.", "Privacy Policy", GOOD])
    assert BoilerplateFilter().check(Document("b", boiler)) == "c4:boilerplate_lines"
    rep = Document("r", "\n".join(["Buy cheap watches online today"] * 10 + [GOOD]))
    assert RepetitionFilter().check(rep).startswith("gopher:dup_")
    menu = Document("m", "\n".join(["Home.", "About us.", "Products.", "Contact.", "Blog.", "Shop."] * 3 + [GOOD]))
    assert LineStructureFilter().check(Document("n", "\n".join(["Home", "About us", "Shop"] * 9 + [GOOD]))) == "fineweb:line_punct"
    assert LineStructureFilter().check(menu) == "fineweb:short_lines"


def test_steps_count_per_reason_and_write_dropped():
    class NoDigits(Filter):
        name = "no_digits"

        def check(self, doc):
            return True if not any(c.isdigit() for c in doc.text) else "has_digit"

    dropped = []

    class Sink:
        def write(self, doc, extra=None):
            dropped.append((doc.id, extra))

    docs = [Document("1", "abc"), Document("2", "a1"), Document("3", "b2"), Document("4", "xyz")]
    ctx = Context(dropped=Sink())

    def upper(stream):  # a plain generator function is a step too
        for d in stream:
            yield Document(d.id, d.text.upper(), d.metadata)

    out = list(run_steps(docs, [NoDigits(), upper], ctx))
    assert [d.text for d in out] == ["ABC", "XYZ"]
    s = ctx.stats.to_dict()["steps"]
    assert s["no_digits"] == {"in": 4, "out": 2, "dropped": {"has_digit": 2}}
    assert s["upper"]["in"] == 2 and s["upper"]["out"] == 2
    assert dropped == [("2", {"dropped_by": "no_digits", "reason": "has_digit"}),
                       ("3", {"dropped_by": "no_digits", "reason": "has_digit"})]


def test_strip_boilerplate_edits_lines():
    ctx = Context()
    d = Document("x", "Real content here.\nThis site uses cookies to improve your experience.\nMore content.")
    (out,) = list(StripBoilerplate().run([d], ctx))
    assert out.text == "Real content here.\nMore content."


def test_heuristics_on_c4_sample_keep_most(data_dir):
    docs = list(read_documents(data_dir / "c4_sample"))
    ctx = Context()
    kept = list(run_steps(docs, default_filters(), ctx))
    # C4 is already cleaned; the Gopher rules still drop short pages (< 50 words) and a few repetitive ones
    assert 0.75 < len(kept) / len(docs) < 0.95
    st = ctx.stats.to_dict()["steps"]
    assert st["gopher_quality"]["dropped"]["gopher:too_few_words"] >= 50
