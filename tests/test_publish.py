"""`primer publish`: a real mini run (bundled teacher + C4 pages, one with a planted PIQA item) published,
loaded back with `datasets`, and its overlap certificate naming the planted item; the one-line errors."""

from __future__ import annotations

import json

import pytest

from primer.curate.decontam import normalize
from primer.errors import PrimerError
from primer.eval.tasks import iter_decontam_items
from primer.pipeline.runner import load_recipe, run_recipe
from primer.pipeline.stages import STAGES
from primer.publish.run import COLUMNS, PublishConfig, publish

RECIPE = """
[run]
name = "publish-mini"
[synth]
teacher = "bundled"
n = 4
max_tokens = 96
min_words = 10         # keep the teacher's short documents: the test is about their provenance
batch_size = 4
fsync = false
[curate]
input = "{web}"
benchmarks = ""        # decontamination off, so the planted item reaches the corpus and the certificate
workers = 1
out_format = "jsonl"
"""


@pytest.fixture(scope="module")
def mini_run(data_dir, bundled_gguf, tmp_path_factory):
    from primer.curate.document import read_documents

    tmp = tmp_path_factory.mktemp("publish")
    pages = [d for d in read_documents(data_dir / "c4_sample") if len(d.text.split()) > 150][:30]
    item = next(it for it in iter_decontam_items(data_dir, ["piqa"]) if len(normalize(it.parts[0]).split()) >= 12)
    words = pages[0].text.split(" ")
    planted = " ".join(words[:60] + [item.parts[0]] + words[60:])
    with open(tmp / "web.jsonl", "w") as f:
        f.writelines(json.dumps({"id": f"c4-{i}", "text": planted if i == 0 else p.text}) + "\n"
                     for i, p in enumerate(pages))
    (tmp / "recipe.toml").write_text(RECIPE.format(web=tmp / "web.jsonl"))
    stages = [s for s in STAGES if s.name in ("synth", "curate")]
    run_recipe(load_recipe(tmp / "recipe.toml", stages), tmp / "run", stages=stages, log=lambda s: None,
               write_report=False)
    return tmp, item


@pytest.mark.slow
def test_publish_round_trip_loads_with_datasets_and_certifies_the_planted_item(mini_run, data_dir):
    datasets = pytest.importorskip("datasets")
    tmp, item = mini_run
    stats = json.loads((tmp / "run" / "curate" / "stats.json").read_text())
    r = publish(PublishConfig(run_dir=str(tmp / "run"), out=str(tmp / "pub"), benchmarks=str(data_dir)),
                log=lambda s: None)
    ds = datasets.load_dataset("parquet", data_dir=str(tmp / "pub"))["train"]
    assert len(ds) == r.documents == stats["documents_kept"]
    assert list(ds.column_names) == list(COLUMNS)
    rows = ds.to_list()
    synth = [x for x in rows if x["source"] == "synth"]
    web = [x for x in rows if x["source"] == "web"]
    assert synth and web and len(web) <= 30
    for x in synth:  # the teacher's provenance, carried from the synth record
        assert x["teacher"] and x["prompt_id"] and x["format"] and x["audience"]
        assert json.loads(x["sampling"])["temperature"] is not None and json.loads(x["metadata"])["prompt"]
    assert all(x["teacher"] is None and x["verification_status"] is None for x in web)
    assert "c4-0" in {x["id"] for x in web}
    # the certificate: every benchmark, with n; the planted item by its id, the document and the span
    cert = json.loads((tmp / "pub" / "overlap_certificate.json").read_text())
    bench = {b["benchmark"]: b for b in cert["benchmarks"]}
    assert {"piqa", "mmlu", "boolq", "gsm8k"} <= set(bench) and bench["piqa"]["n"] == 8
    over = {h["item_id"]: h for h in bench["piqa"]["overlapping_items"]}
    assert item.item_id in over and "c4-0" in over[item.item_id]["doc_ids"]
    assert normalize(item.parts[0]) in over[item.item_id]["span"]
    assert bench["piqa"]["unchecked"] == len(bench["piqa"]["unchecked_items"]) > 0
    card = (tmp / "pub" / "README.md").read_text()
    assert card.startswith("---\nlicense: other\nlanguage:\n- en\nsize_categories:\n- n<1K\ntask_categories:\n")
    assert f"piqa/{item.item_id}" in card and "## Overlap certificate" in card and '"curate"' in card


def test_publish_errors_are_one_line(tmp_path, data_dir):
    with pytest.raises(PrimerError, match="not a primer run directory"):
        publish(PublishConfig(run_dir=str(tmp_path), out=str(tmp_path / "o")))
    (tmp_path / "run.json").write_text(json.dumps({
        "primer_version": "0", "recipe_path": "r.toml", "recipe": {}, "command": "primer run", "git_sha": None,
        "packages": {}, "hardware": {}, "started": "now", "status": "done"}))
    with pytest.raises(PrimerError, match="has no curate stage: publish reads the curated corpus"):
        publish(PublishConfig(run_dir=str(tmp_path), out=str(tmp_path / "o")))


def test_missing_benchmark_data_says_how_to_get_it(tmp_path, monkeypatch):
    from primer.publish import run as publish_run

    with pytest.raises(PrimerError, match="benchmark directory not found: .*primer data pull"):
        publish_run._data_dir(PublishConfig(run_dir="r", benchmarks=str(tmp_path / "nowhere")))
    monkeypatch.setattr(publish_run, "benchmark_dir", lambda explicit=None: None)
    with pytest.raises(PrimerError, match="no benchmark data .*primer data pull.*--benchmarks embedded"):
        publish_run._data_dir(PublishConfig(run_dir="r"))
