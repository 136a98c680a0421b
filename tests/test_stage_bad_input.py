"""A malformed input line is never skipped silently: every stage counts it and names it (`file:line: why`)
in its summary, the report shows it, and a stage's strict mode stops at it with the file and line.
Every stage reads JSONL through the one reader, `primer.common.jsonl`.

The stages run through their `primer run` adapters on tiny inputs; the synth test uses the fake teacher
of the synth tests (the test is about our counting, not the teacher's text)."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from synth_helpers import FakeTeacher

from primer.common.jsonl import BadInput
from primer.errors import PrimerError
from primer.pipeline import stages as S
from primer.pipeline.spec import RunConfig, StageContext
from primer.config import to_dict
from primer.pipeline.summaries import CurateSummary, TrainSummary, read_summary

BAD = '{"text": "a line cut in the middle\n'  # what a malformed line usually is
GOOD = ("The water cycle describes how water moves between the oceans, the air and the land. When the sun heats "
        "the sea, water evaporates and rises as vapour, cools, and condenses into the droplets that form clouds.")


def _ctx(run_dir: Path, stage: str, inputs: dict[str, Path] | None = None, summaries: dict | None = None) -> StageContext:
    out = run_dir / stage
    out.mkdir(parents=True, exist_ok=True)
    return StageContext(run_dir=run_dir, out_dir=out, inputs=inputs or {}, summaries=summaries or {},
                        recipe=SimpleNamespace(run=RunConfig(eval_batch_size=4)), log=lambda s: None)


def _jsonl(path: Path, lines: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(x if isinstance(x, str) else json.dumps(x) + "\n" for x in lines))
    return path


def _round_trip(summary, stage: str):
    """What the runner stores in stage.json and reads back for the next stages and the report."""
    back = read_summary(type(summary), json.loads(json.dumps(to_dict(summary))), stage)
    assert back == summary
    return back


def _names_line(bad: BadInput, path_end: str, line: int) -> bool:
    return bad.count == 1 and re.search(rf"{re.escape(path_end)}:{line}: malformed JSON", bad.examples[0]) is not None


def _curate_summary(files: list[Path]) -> CurateSummary:
    return CurateSummary(web_input=None, sources={}, documents_in=0, documents_kept=0, rejects={}, edu_scores=None,
                         edu_threshold=None, dedup=None, dedup_settings=None, decontam=None, samples=[],
                         data=[str(f) for f in files], bad_input=BadInput())


def test_synth_counts_a_bad_topics_line_and_strict_stops_at_it(tmp_path, monkeypatch):
    import primer.synth.run as synth_run

    topics = _jsonl(tmp_path / "topics.jsonl", [{"topic": "Photosynthesis", "subject": "biology"}, BAD,
                                                {"topic": "Adding fractions", "subject": "math"}])
    monkeypatch.setattr(synth_run, "make_teacher", lambda cfg: FakeTeacher())
    cfg = synth_run.SynthConfig(n=3, topics=topics, progress=False, min_words=20)
    s = _round_trip(S.run_synth(cfg, _ctx(tmp_path / "run", "synth")), "synth")
    assert s.documents == 3 and _names_line(s.bad_input, "topics.jsonl", 2)
    saved = json.loads((tmp_path / "run" / "synth" / "summary.json").read_text())
    assert saved["bad_input"]["count"] == 1 and ":2: malformed JSON" in saved["bad_input"]["examples"][0]
    with pytest.raises(PrimerError, match=rf"{re.escape(str(topics))}:2: malformed JSON"):
        synth_run.synth(dataclasses.replace(cfg, out=tmp_path / "strict", strict=True), teacher=FakeTeacher())


def test_curate_counts_a_bad_line_and_strict_stops_at_it(tmp_path):
    from primer.curate.pipeline import CurateConfig

    synth_dir = tmp_path / "run" / "synth"
    _jsonl(synth_dir / "data-00000.jsonl", [{"id": "a", "text": GOOD}, BAD, {"id": "b", "text": GOOD + " Again."}])
    cfg = CurateConfig(workers=1, heuristics=False, dedup=False)
    s = _round_trip(S.run_curate(cfg, _ctx(tmp_path / "run", "curate", {"synth": synth_dir})), "curate")
    assert s.documents_in == 2 and s.documents_kept == 2
    assert _names_line(s.bad_input, "data-00000.jsonl", 2)
    with pytest.raises(PrimerError, match=r"data-00000\.jsonl:2: malformed JSON"):
        S.run_curate(dataclasses.replace(cfg, strict=True), _ctx(tmp_path / "strict", "curate", {"synth": synth_dir}))


def test_tokenize_counts_a_bad_line_and_strict_stops_at_it(tmp_path):
    from primer.tokens.shards import TokenizeConfig, tokenize_corpus

    docs = _jsonl(tmp_path / "curated" / "docs.jsonl",
                  [{"text": f"{GOOD} Story {i}."} for i in range(30)] + [BAD] + [{"text": "The end."}])
    cfg = TokenizeConfig(vocab_size=300, val_fraction=0.1)
    s = _round_trip(S.run_tokenize(cfg, _ctx(tmp_path / "run", "tokenize", {"curate": docs.parent},
                                             {"curate": _curate_summary([docs])})), "tokenize")
    assert s.train_documents + s.val_documents == 31
    assert _names_line(s.bad_input, "docs.jsonl", 31)
    assert json.loads((tmp_path / "run" / "tokenize" / "tokens.json").read_text())["bad_input"]["count"] == 1
    with pytest.raises(PrimerError, match=r"docs\.jsonl:31: malformed JSON"):
        tokenize_corpus(TokenizeConfig(inputs=[str(docs)], out=str(tmp_path / "strict"), vocab_size=300, strict=True),
                        progress=False)


def test_train_repairs_a_torn_metrics_line_on_resume_and_stops_at_a_damaged_one(tmp_path, capsys):
    """metrics.jsonl is append-only and read back on resume: a torn last line (a kill mid-write) is cut and
    reported; a line damaged anywhere else stops the resume, naming the file and line."""
    from test_train import cfg_for, make_token_dir

    tokens = make_token_dir(tmp_path / "tokens", n_train=40, n_val=8)
    run_dir = tmp_path / "run"
    cfg = cfg_for(tokens, run_dir / "train", max_steps=4, save_every=2, eval_every=0)
    first: TrainSummary = S.run_train(cfg, _ctx(run_dir, "train", {"tokenize": tokens}))
    assert first.steps == 4
    metrics = run_dir / "train" / "metrics.jsonl"
    good = metrics.read_text()
    metrics.write_text(good + '{"step": 5, "lo')
    again = _round_trip(S.run_train(dataclasses.replace(cfg, max_steps=6), _ctx(run_dir, "train", {"tokenize": tokens})),
                        "train")
    assert again.steps == 6
    assert "metrics.jsonl: removed a torn last line" in capsys.readouterr().err
    steps = [json.loads(x)["step"] for x in metrics.read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 4, 5, 6, 6]  # nothing lost, nothing twice past the resumed step
    lines = metrics.read_text().splitlines(keepends=True)
    lines[1] = "not json\n"
    metrics.write_text("".join(lines))
    with pytest.raises(PrimerError, match=r"metrics\.jsonl:2: malformed JSON"):
        S.run_train(dataclasses.replace(cfg, max_steps=8), _ctx(run_dir, "train", {"tokenize": tokens}))


def test_eval_stops_at_a_bad_benchmark_line_with_file_and_line(tmp_path):
    from primer.eval.runner import EvalConfig, evaluate

    _jsonl(tmp_path / "data" / "piqa" / "valid.jsonl",
           [{"goal": "How do I open a jar?", "sol1": "Twist the lid.", "sol2": "Eat it."}, {"goal": "x", "sol1": "a",
                                                                                           "sol2": "b"}, BAD])
    (tmp_path / "data" / "piqa" / "valid-labels.txt").write_text("0\n1\n0\n")
    cfg = EvalConfig(tasks=["piqa"], data_dir=tmp_path / "data", cache="none")
    with pytest.raises(PrimerError, match=r"piqa/valid\.jsonl:3: malformed JSON.*fix or remove that line"):
        evaluate(None, cfg, progress=False)  # a benchmark file is read strictly, before any model is asked


def test_audit_counts_a_bad_corpus_line_and_strict_stops_at_it(tmp_path, data_dir):
    from primer.audit.run import AuditConfig, audit
    from primer.model.transformer import ModelConfig, Transformer
    from primer.tokens.bpe import byte_tokenizer
    from primer.weights.checkpoint import save_checkpoint

    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "ckpt", Transformer(ModelConfig.from_name("debug", vocab_size=320)),
                           tokenizer=byte_tokenizer())
    corpus = _jsonl(tmp_path / "corpus.jsonl", [{"text": "Once upon a time there was a cat."}, BAD])
    cfg = AuditConfig(task="arc_easy", data_dir=data_dir, limit=3, signals=["ngram"], cache="none")
    summaries = {"train": SimpleNamespace(checkpoint=str(ckpt)), "curate": _curate_summary([corpus])}
    s = _round_trip(S.run_audit(cfg, _ctx(tmp_path / "run", "audit", {"train": ckpt, "curate": tmp_path}, summaries)),
                    "audit")
    assert [c.signal for c in s.contamination] == ["ngram", "overall"]  # each verdict, then the combined one
    assert _names_line(s.bad_input, "corpus.jsonl", 2)
    with pytest.raises(PrimerError, match=rf"{re.escape(str(corpus))}:2: malformed JSON"):
        audit(str(ckpt), dataclasses.replace(cfg, corpus=[str(corpus)], strict=True), progress=False)


def test_report_names_the_bad_lines_of_a_stage(tmp_path):
    from report_fixture import make_run_dir

    from primer.pipeline.report import render

    html = render(make_run_dir(tmp_path / "run"))
    assert "curate: 2 input lines could not be read" in html
    assert "000-c4.jsonl:7: malformed JSON" in html and "000-c4.jsonl:9: missing field" in html
