"""Curate: the sharded executor -- resume after a kill, the datatrove engine, the CLI."""

from __future__ import annotations

import argparse
import gzip
import json

import pytest

import primer.curate.pipeline as pl
from primer.curate.document import read_documents
from primer.curate.pipeline import CurateConfig, curate
from primer.errors import PrimerError


@pytest.fixture()
def corpus(data_dir, tmp_path):
    from primer.curate.filters import default_filters
    from primer.curate.steps import Context, run_steps

    docs = list(read_documents(data_dir / "c4_sample"))[:160]
    recs = [{"id": d.id, "text": d.text} for d in docs]
    a, b = [d for d in run_steps(docs, default_filters(), Context())][3:5]  # originals that pass the filters
    recs += [{"id": "copy-a", "text": a.text.upper()}, {"id": "copy-b", "text": b.text + " Share."}]
    d = tmp_path / "in"
    d.mkdir()
    for s in range(4):
        with gzip.open(d / f"part{s}.jsonl.gz", "wt") as f:
            for r in recs[s::4]:
                f.write(json.dumps(r) + "\n")
    return d


def _kept(out):
    return sorted(d.id for d in read_documents(out / "data"))


def test_killed_run_resumes_per_shard(corpus, tmp_path, monkeypatch):
    cfg = CurateConfig(input=str(corpus), out=str(tmp_path / "out"), workers=1)
    real = pl.filter_shard
    calls = []

    def dying(c, shard):
        if len(calls) == 2:
            raise KeyboardInterrupt  # the run is killed while the third shard starts
        calls.append(shard.name)
        real(c, shard)

    monkeypatch.setattr(pl, "filter_shard", dying)
    with pytest.raises(KeyboardInterrupt):
        curate(cfg, quiet=True)
    s1 = tmp_path / "out" / "work" / "filtered"
    done = sorted(p.name for p in s1.glob("*.done"))
    assert done == ["part0.done", "part1.done"]
    stamps = {p: p.stat().st_mtime_ns for p in s1.glob("part[01]*")}

    redone = []

    def spy(c, shard):
        if not (s1 / f"{shard.name}.done").exists():
            redone.append(shard.name)
        real(c, shard)

    monkeypatch.setattr(pl, "filter_shard", spy)
    r = curate(cfg, quiet=True)
    assert redone == ["part2", "part3"]  # finished shards are not redone
    assert stamps == {p: p.stat().st_mtime_ns for p in s1.glob("part[01]*")}
    assert r.resumed_shards == 2
    fresh = curate(CurateConfig(input=str(corpus), out=str(tmp_path / "fresh"), workers=1), quiet=True)
    assert _kept(tmp_path / "out") == _kept(tmp_path / "fresh")
    assert r.steps == fresh.steps
    assert {"copy-a", "copy-b"}.isdisjoint(_kept(tmp_path / "out"))
    # a finished run reruns as a no-op; other settings in the same dir are refused
    assert curate(cfg, quiet=True).documents_kept == r.documents_kept
    with pytest.raises(PrimerError, match="other settings"):
        curate(CurateConfig(input=str(corpus), out=str(tmp_path / "out"), bands=10), quiet=True)
    again = curate(CurateConfig(input=str(corpus), out=str(tmp_path / "out"), bands=10, workers=1, restart=True),
                   quiet=True)
    assert again.resumed_shards == 0


@pytest.mark.slow
def test_datatrove_engine_gives_the_same_result(corpus, tmp_path):
    pytest.importorskip("datatrove")
    local = curate(CurateConfig(input=str(corpus), out=str(tmp_path / "local"), workers=2), quiet=True)
    dt = curate(CurateConfig(input=str(corpus), out=str(tmp_path / "dt"), workers=2, engine="datatrove"), quiet=True)
    assert _kept(tmp_path / "dt") == _kept(tmp_path / "local")
    assert dt.steps == local.steps
    assert (tmp_path / "dt" / "work" / "datatrove" / "filter" / "completions").is_dir()


def test_cli_run_and_counts(corpus, tmp_path, capsys):
    from primer.cli import curate as leaf

    parser = argparse.ArgumentParser()
    leaf.register(parser.add_subparsers(dest="verb"))
    out = tmp_path / "cli"
    args = parser.parse_args(["curate", "run", str(corpus), "--out", str(out), "--workers", "1", "--no-dedup",
                              "--write-dropped", "--out-format", "parquet"])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "gopher_quality" in printed and "dropped" in printed
    stats = json.loads((out / "stats.json").read_text())
    assert "dedup" not in stats["steps"]
    assert stats["documents_kept"] == len(_kept(out))
    assert all(p.endswith(".parquet") for p in stats["output_files"])
    n_dropped = sum(1 for _ in read_documents(out / "dropped"))
    assert n_dropped == stats["documents_read"] - stats["documents_kept"]
