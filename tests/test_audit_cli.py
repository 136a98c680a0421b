"""`primer audit CHECKPOINT --task ... --corpus ...` prints a verdict per signal with its numbers, and writes
audit.json and audit.png."""

import json

import pytest
import torch

from primer.tokens.bpe import byte_tokenizer
from primer.weights.checkpoint import save_checkpoint
from primer.cli import main
from primer.model.transformer import ModelConfig, Transformer


@pytest.mark.slow
def test_cli_prints_a_verdict_per_signal_and_writes_report(data_dir, tmp_path, capsys):
    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "ckpt", Transformer(ModelConfig.from_name("debug", vocab_size=320)),
                           tokenizer=byte_tokenizer())
    corpus = tmp_path / "corpus.jsonl"
    rows = [json.loads(line) for line in open(data_dir / "arc" / "arc_easy_test.jsonl")][:2]
    # The first two test questions leak into the "training corpus"; the third item stays clean.
    corpus.write_text("".join(json.dumps({"text": r["query"] + " " + r["choices"][r["gold"]]}) + "\n" for r in rows)
                      + json.dumps({"text": "Once upon a time there was a cat."}) + "\n")
    out = tmp_path / "audit"
    rc = main(["audit", str(ckpt), "--task", "arc_easy", "--data-dir", str(data_dir), "--limit", "3",
               "--corpus", str(corpus), "--perturbations", "shuffle", "--signals", "robustness,ngram,permutation",
               "--permutations", "5", "--bootstrap", "200", "--cache", "none", "--out", str(out), "--quiet"])
    assert rc == 0
    text = capsys.readouterr().out
    for signal in ("robustness", "ngram", "permutation"):
        line = next(ln for ln in text.splitlines() if f"] {signal}:" in ln)
        assert any(ch.isdigit() for ch in line.split(":", 1)[1])  # the numbers behind the verdict
    assert "[FLAGGED] ngram: 2/3 items" in text
    res = json.loads((out / "audit.json").read_text())
    assert res["contamination"]["ngram"]["contaminated"] == [0, 1]
    assert {c["name"] for c in res["robustness"]["conditions"]} == {"shuffle"}
    assert (out / "audit.png").stat().st_size > 1000
