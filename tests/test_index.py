"""`primer index`: chunking keeps exact offsets, BM25 finds what it should, bad input is counted and named."""

import json

import pytest

from primer.cli import main as cli_main
from primer.common.jsonl import BadInput
from primer.errors import PrimerError
from primer.index.bm25 import Index, IndexConfig, build_index
from primer.index.documents import Document, chunk_document, chunk_spans, input_files, read_documents
from primer.index.prompt import chat_query, passages_block, with_passages

pytest.importorskip("bm25s")

LONG = " ".join(f"w{i}" for i in range(130))
TEXT = f"First paragraph, short.\n\nSecond one is here.\n  \n{LONG}\n\n\nLast   words."


def test_chunks_pack_paragraphs_split_long_ones_and_keep_offsets():
    spans = chunk_spans(TEXT, chunk_words=50, overlap_words=10)
    chunks = [TEXT[s:e] for s, e in spans]
    assert chunks[0] == "First paragraph, short.\n\nSecond one is here."  # packed: 7 words fit in 50
    windows = chunks[1:-1]
    assert [len(c.split()) for c in windows] == [50, 50, 50]  # 130 words, stride 40: 0-50, 40-90, 80-130
    assert windows[0].split()[-10:] == windows[1].split()[:10]  # the overlap
    assert windows[-1].split()[-1] == "w129"
    assert chunks[-1] == "Last   words."
    doc = Document("d1", "T", TEXT, "x.txt")
    for c in chunk_document(doc, 50, 10):
        assert TEXT[c.start:c.end] == c.text and c.doc_id == "d1" and c.title == "T"
    with pytest.raises(PrimerError, match="overlap_words"):
        chunk_spans(TEXT, 10, 10)


def test_inputs_jsonl_squad_text_and_folders(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.jsonl").write_text(
        json.dumps({"id": "x", "title": "Ex", "text": "alpha beta"}) + "\n"
        + "{not json\n" + json.dumps({"body": "no text field"}) + "\n" + json.dumps({"text": "  "}) + "\n"
        + json.dumps({"text": "gamma"}) + "\n")
    (tmp_path / "docs" / "notes.md").write_text("delta epsilon")
    (tmp_path / "docs" / "image.png").write_bytes(b"\x89PNG")
    (tmp_path / "docs" / "bad.txt").write_bytes(b"\xff\xfe oops")
    squad = {"data": [{"title": "Art", "paragraphs": [{"context": "zeta eta", "qas": []}, {"context": ""}]}]}
    (tmp_path / "s.json").write_text(json.dumps(squad))
    files, skipped = input_files([tmp_path / "docs", tmp_path / "s.json"])
    assert [f.name for f in skipped] == ["image.png"]
    bad = BadInput()
    docs = list(read_documents(files, bad))
    assert [(d.id, d.title, d.text) for d in docs] == [
        ("x", "Ex", "alpha beta"), ("a.jsonl:5", "a.jsonl:5", "gamma"),
        (str(tmp_path / "docs" / "notes.md"), "notes", "delta epsilon"), ("Art/0", "Art", "zeta eta")]
    assert bad.count == 5  # malformed JSON, no text field, empty text, bad UTF-8, empty SQuAD paragraph
    named = " | ".join(bad.examples)
    assert "a.jsonl:2" in named and "a.jsonl:3" in named and "a.jsonl:4" in named and "bad.txt" in named
    with pytest.raises(PrimerError, match="not found"):
        input_files([tmp_path / "nope"])
    with pytest.raises(PrimerError, match="unsupported file type"):
        input_files([tmp_path / "docs" / "image.png"])


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("idx")
    docs = [
        {"id": "fox", "title": "Foxes", "text": "The red fox runs through the forest at night.\n\nFoxes eat mice."},
        {"id": "sea", "title": "Oceans", "text": "The Pacific Ocean is the largest ocean on Earth."},
        {"id": "tea", "title": "Tea", "text": "Green tea is brewed from unoxidised leaves."},
    ]
    (d / "docs.jsonl").write_text("".join(json.dumps(x) + "\n" for x in docs))
    summary = build_index([d / "docs.jsonl"], d / "idx", IndexConfig(chunk_words=10, overlap_words=2))
    assert summary.documents == 3 and summary.chunks == 4 and summary.bad_input.count == 0
    return d / "idx"


def test_search_finds_the_right_chunk_with_offsets(index_dir):
    idx = Index.load(index_dir)
    [hit, *rest] = idx.search("Which ocean is the largest?", k=3)
    assert (hit.doc_id, hit.title, hit.rank) == ("sea", "Oceans", 1) and hit.score > 0
    assert all(h.doc_id != "sea" for h in rest)
    [fox] = idx.search("what do foxes eat", k=1)  # stemming: foxes -> fox, eat
    assert fox.text == "Foxes eat mice." and fox.start == 47 and fox.end == 62
    assert idx.search("zzzz unknownword", k=5) == []  # nothing shares a word: no hits, not noise
    assert len(idx.search("the", k=10)) == 0  # stopwords only
    assert len(idx.search_many(["ocean", "tea"], k=10)[1]) == 1  # k larger than the index is fine
    assert "Oceans (sea, characters 0-48)" in hit.cite()


def test_prompt_template():
    hits = [{"title": "A", "text": " one "}, {"title": "B", "text": "two"}]
    assert passages_block(hits) == "[1] A\none\n\n[2] B\ntwo"
    assert with_passages("Question: q\nAnswer:", hits) == "Background:\n[1] A\none\n\n[2] B\ntwo\n\nQuestion: q\nAnswer:"
    assert with_passages("Q", []) == "Q"


def test_a_follow_up_is_searched_with_the_question_before_it(index_dir):
    idx = Index.load(index_dir)
    turns = ["Tell me about the Pacific.", "How big is it?"]
    assert idx.search(turns[-1], k=1) == []  # alone, the follow-up shares no word with any passage
    [hit] = idx.search(chat_query(turns), k=1)
    assert hit.doc_id == "sea"
    assert chat_query(["an old question", "foxes?", "And tea?"]) == "foxes?\nAnd tea?"  # two turns at most
    assert idx.search(chat_query(["Tell me about foxes.", "Is green tea brewed?"]), k=1)[0].doc_id == "tea"


def test_cli_build_and_search(tmp_path, index_dir, capsys):
    (tmp_path / "a.txt").write_text("Kyoto was the capital of Japan for over a thousand years.")
    assert cli_main(["index", "build", str(tmp_path / "a.txt"), "-o", str(tmp_path / "i"), "--no-progress"]) == 0
    assert cli_main(["index", "search", str(tmp_path / "i"), "old capital of Japan", "-k", "2"]) == 0
    out = capsys.readouterr().out
    assert "[1] a (" in out and "Kyoto" in out
    assert cli_main(["index", "search", str(tmp_path / "i"), "capital", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[0])["doc_id"] == str(tmp_path / "a.txt")
    # a rebuild replaces the index whole; a directory that is not an index is never overwritten
    assert cli_main(["index", "build", str(tmp_path / "a.txt"), "-o", str(tmp_path / "i"), "--no-progress"]) == 0
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("mine")
    assert cli_main(["index", "build", str(tmp_path / "a.txt"), "-o", str(tmp_path / "other")]) == 2
    assert "not a primer index" in capsys.readouterr().err and (tmp_path / "other" / "keep.txt").exists()
    assert cli_main(["index", "search", str(tmp_path / "other"), "x"]) == 2
    assert "primer index build" in capsys.readouterr().err
    (tmp_path / "empty.jsonl").write_text("{broken\n")
    assert cli_main(["index", "build", str(tmp_path / "empty.jsonl"), "-o", str(tmp_path / "j")]) == 2
    assert "empty.jsonl:1" in capsys.readouterr().err


def test_chat_with_index_puts_passages_in_and_cites_them(tmp_path, bundled_gguf, capsys, monkeypatch):
    import io
    import sys

    docs = [{"id": "sb50", "title": "Super Bowl 50", "text": "Super Bowl 50 decided the champion of the National "
             "Football League for the 2015 season. The American Football Conference (AFC) champion Denver Broncos "
             "defeated the National Football Conference (NFC) champion Carolina Panthers 24-10."},
            {"id": "tea", "title": "Tea", "text": "Green tea is brewed from unoxidised leaves."}]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    build_index([tmp_path / "d.jsonl"], tmp_path / "idx")
    monkeypatch.setattr(sys, "stdin", io.StringIO("What was the score of Super Bowl 50?\n"))
    assert cli_main(["chat", "--index", str(tmp_path / "idx"), "--passages", "2", "--max-tokens", "24"]) == 0
    out = capsys.readouterr().out
    reply, _, sources = out.partition("  source [1]")
    assert reply.strip() and "Super Bowl" in reply  # the model answered about the passage's topic
    assert sources.startswith(" Super Bowl 50 (sb50, characters 0-") and "Tea" not in out  # tea shares no word
    # "answers from the passage", measured as likelihood rather than a greedy string: a greedy reply is
    # decided by float rounding that differs between CPUs (CI's machine wrote a different 24 tokens)
    from primer.eval.lm import PrimerLM
    from primer.index.bm25 import Index
    from primer.index.prompt import with_passages

    lm = PrimerLM.load(str(bundled_gguf))
    question = "What was the score of Super Bowl 50?"
    hits = Index.load(tmp_path / "idx").search(question, k=2)
    prompts = [question, with_passages(question, hits)]
    (closed, _), (opened, _) = lm.loglikelihood(
        [(lm.chat_prompt([{"role": "user", "content": p}]) + "The score was", " 24-10.") for p in prompts])
    assert opened > closed + 2.0, (closed, opened)  # only the passage knows it
