"""Curate: the benchmark n-gram index, and the must-show run on C4 with injected duplicates and test items."""

from __future__ import annotations

import gzip
import json
import random

import pytest

from primer.curate.decontam import DecontamFilter, NgramIndex
from primer.curate.document import Document, read_documents
from primer.curate.filters import default_filters
from primer.curate.pipeline import CurateConfig, curate
from primer.curate.steps import Context, run_steps
from primer.errors import PrimerError

Q1 = ("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
      "How many clips did Natalia sell altogether in April and May?")
Q2 = "A man is sitting on a roof. He starts pulling up roofing on a roof."
SHORT = "What is the capital of France?"


def test_index_from_items_overlap_and_short_items(tmp_path):
    idx = NgramIndex.build([("gsm8k", "q1", Q1), ("hellaswag", "h7", Q2), ("trivia", "t1", SHORT)])
    assert idx.item_grams[2] == 0 and idx.unchecked == {"trivia": ["t1"]}  # 6 words < min_words 8: named, unchecked
    assert idx.lengths == [13, 14] or 13 in idx.lengths
    doc = "Homework help! " + Q1.upper().replace(",", " ,") + " Answer: 72. Thanks for reading."
    (m,) = idx.overlap(doc)
    assert (m.task, m.item_id, m.matched, m.grams) == ("gsm8k", "q1", m.grams, m.grams)
    # a short item (14 words < 13? no: 14 >= 13) and a partial overlap
    part = " ".join(Q1.split()[:16])
    (m,) = idx.overlap(part)
    assert 0 < m.matched < m.grams
    assert idx.contaminated("nothing to see here at all, just words about gardening and tomatoes") == []
    assert idx.contaminated(part, min_matches=5) == []
    p = idx.save(tmp_path / "idx.npz")
    back = NgramIndex.load(p)
    assert back.overlap(doc)[0].to_dict() == idx.overlap(doc)[0].to_dict()
    assert back.summary() == idx.summary()
    with pytest.raises(PrimerError, match="not found"):
        NgramIndex.load(tmp_path / "missing.npz")


def test_items_shorter_than_n_are_matched_whole():
    item = "the boy runs down the track and jumps over it"  # 10 words < 13
    idx = NgramIndex.build([("hellaswag", 0, item)])
    assert idx.lengths == [10]
    assert idx.contaminated("Video caption: The boy runs down the track, and jumps over it! Great.")[0].item_id == "0"
    assert idx.contaminated("the boy runs down the track and then jumps over it") == []


def test_similarity_mode_like_cosmopedia():
    idx = NgramIndex.build([("gsm8k", "q1", Q1)], n=10, keep_texts=True)
    copied = "Exercise 3. " + Q1 + " Show your work."
    (m,) = idx.contaminated(copied, similarity=0.5)
    assert m.similarity > 0.9
    # a long document that shares one 10-gram with the item but is otherwise different
    other = ("My friends in April and then she sold half as many clips went to the fair. " * 1) + \
        "The weather was fine and we walked along the river to see the boats and the ducks."
    idx2 = NgramIndex.build([("x", "1", "in april and then she sold half as many clips in may and june too")], n=10,
                            keep_texts=True)
    hits = idx2.overlap(other)
    assert hits and hits[0].similarity < 0.9


def test_decontam_filter_names_items():
    idx = NgramIndex.build([("gsm8k", "q1", Q1), ("hellaswag", "h7", Q2)])
    dropped = []

    class Sink:
        def write(self, doc, extra=None):
            dropped.append((doc.id, extra))

    ctx = Context(dropped=Sink())
    docs = [Document("clean", "A story about gardening. " * 10), Document("dirty", "Quiz: " + Q1)]
    kept = [d.id for d in DecontamFilter(idx).run(docs, ctx)]
    assert kept == ["clean"]
    assert ctx.stats.matches == {"gsm8k/q1": 1}
    assert dropped[0][1]["reason"] == "benchmark:gsm8k" and dropped[0][1]["matched"][0]["item_id"] == "q1"


@pytest.fixture(scope="module")
def bench_index(data_dir, tmp_path_factory):
    """The index over every eval task primer knows (what `curate run --benchmarks` builds)."""
    idx = NgramIndex.from_benchmarks(data_dir)
    path = tmp_path_factory.mktemp("idx") / "decontam.npz"
    idx.save(path)
    return idx, path


@pytest.mark.slow
def test_clean_c4_is_not_flagged(bench_index, data_dir):
    idx, _ = bench_index
    s = idx.summary()
    assert s["items"] > 50_000 and {"gsm8k", "hellaswag", "mmlu_anatomy", "arc_easy"} <= set(s["items_per_task"])
    docs = list(read_documents(data_dir / "c4_sample"))
    flagged = [d.id for d in docs if idx.contaminated(d.text)]
    assert len(flagged) <= 0.01 * len(docs), flagged


def _inject(data_dir, out_dir, seed=7):
    """C4 sample + exact copies + edited near-copies + GSM8K/HellaSwag test items inside clean pages."""
    from primer.eval.tasks import iter_decontam_items
    from test_curate_dedup import edit_copy

    rng = random.Random(seed)
    docs = list(read_documents(data_dir / "c4_sample"))
    ok = {d.id for d in run_steps(docs, default_filters(), Context())}  # pages that pass the heuristics
    pool = [i for i, d in enumerate(docs) if d.id in ok and len(d.text.split()) >= 100]
    rng.shuffle(pool)
    exact_src, near_src, dirty = pool[:30], pool[30:110], pool[110:150]
    gsm = [it.parts[0] for it in iter_decontam_items(data_dir, ["gsm8k"])]  # question + worked answer
    hs = [it.parts[0] for it in iter_decontam_items(data_dir, ["hellaswag"])]  # context + correct ending
    items = [("gsm8k", i, gsm[i]) for i in rng.sample(range(len(gsm)), 20)]
    items += [("hellaswag", i, hs[i]) for i in rng.sample(range(len(hs)), 20)]
    # GSM8K pages carry the question and its worked answer, as a homework site would (the solved item)
    recs = [{"id": d.id, "text": d.text} for d in docs]
    expect_item = {}
    for (task, i, text), j in zip(items, dirty):
        paras = recs[j]["text"].split("\n")
        k = rng.randrange(1, max(2, len(paras)))
        block = text
        recs[j]["text"] = "\n".join(paras[:k] + [block] + paras[k:])
        expect_item[recs[j]["id"]] = f"{task}/{i}"
    extra = []
    for n, i in enumerate(exact_src):
        extra.append({"id": f"exact-{n}", "text": "  " + docs[i].text.replace(". ", ".  ") + "\n", "src": docs[i].id})
    for n, i in enumerate(near_src):
        extra.append({"id": f"near-{n}", "text": edit_copy(docs[i].text, rng), "src": docs[i].id})
    rng.shuffle(extra)
    allrecs = recs + extra
    out_dir.mkdir(parents=True, exist_ok=True)
    per = len(allrecs) // 4 + 1  # four input files: four shards
    for s in range(4):
        with gzip.open(out_dir / f"part{s}.jsonl.gz", "wt") as f:
            for r in allrecs[s * per : (s + 1) * per]:
                f.write(json.dumps(r) + "\n")
    return expect_item, extra, {d.id for d in docs}


@pytest.mark.slow
def test_must_show_c4_with_injected_duplicates_and_test_items(bench_index, data_dir, tmp_path):
    """Injected exact/near duplicates and GSM8K/HellaSwag items in C4: dups found, items dropped and named."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    expect_item, extra, clean_ids = _inject(data_dir, tmp_path / "in")
    _, index_path = bench_index
    out = tmp_path / "out"
    r = curate(CurateConfig(input=str(tmp_path / "in"), out=str(out), decontam_index=str(index_path), workers=2,
                            write_dropped=True), quiet=True)
    dropped = {}
    for p in sorted((out / "dropped").glob("*.jsonl.gz")):
        with gzip.open(p, "rt") as f:
            for line in f:
                rec = json.loads(line)
                dropped[rec["id"]] = rec
    # every injected test item: dropped by decontamination, and the report names the item
    for doc_id, item in expect_item.items():
        rec = dropped[doc_id]
        assert rec["dropped_by"] == "decontam", (doc_id, rec["reason"])
        assert item in [f"{m['task']}/{m['item_id']}" for m in rec["matched"]]
        assert r.benchmark_items_matched.get(item, 0) >= 1
    # clean documents dropped by decontamination: <= 1% (of those that reached it)
    dec = r.steps["decontam"]
    clean_dec = [i for i, rec in dropped.items() if rec["dropped_by"] == "decontam" and i not in expect_item]
    assert len(clean_dec) <= 0.01 * dec["in"], clean_dec
    # duplicates: exact copies all found, near copies >= 95% (the originals come first and are kept)
    reached = [e for e in extra if e["id"] in dropped and dropped[e["id"]]["dropped_by"] == "dedup"
               or e["id"] not in dropped]
    ex = [e for e in reached if e["id"].startswith("exact")]
    near = [e for e in reached if e["id"].startswith("near")]
    found_ex = sum(dropped.get(e["id"], {}).get("duplicate_of") == e["src"] for e in ex)
    found_near = sum(dropped.get(e["id"], {}).get("duplicate_of") == e["src"] for e in near)
    print(f"\nexact copies found {found_ex}/{len(ex)}; near copies found {found_near}/{len(near)}; "
          f"test items dropped and named {len(expect_item)}/{len(expect_item)}; clean docs dropped by "
          f"decontamination {len(clean_dec)}/{dec['in']}")
    assert found_ex == len(ex) == 30
    assert found_near >= 0.95 * len(near) and len(near) >= 70
    # no original C4 page is removed as a duplicate
    assert not [i for i, rec in dropped.items() if i in clean_ids and rec["dropped_by"] == "dedup"]
    assert r.documents_read == 1000 + len(extra)
