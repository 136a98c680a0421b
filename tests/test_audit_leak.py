"""The controlled experiment: the same tiny model trained on a small corpus twice, once with a set of
GSM8K test items leaked into it (repeated, in canonical order, as a data dump would hold them) and
once clean. The audit must flag the leaked run on n-gram overlap, verbatim completion and the
likelihood tests (Min-K%++, permutation), and flag none of them on the clean run.

Training is a plain AdamW loop over `primer.model.transformer.Transformer` with a byte-level tokenizer, so the
experiment is about the audit, not the training stack; ~150 s per model on 2 quiet cores (the whole
test ~5 min). Fewer steps were tried and rejected: at 250 steps verbatim completion no longer flags
the leaked run (even with 10 repeats), and the clean run's permutation p fell under 0.05 by chance.
"""

import json
import random

import numpy as np
import pytest
import torch

from primer.audit.gsm_numbers import RebuildError, rebuild, substitute
from primer.audit.run import AuditConfig, audit
from primer.tokens.bpe import byte_tokenizer
from primer.eval.lm import PrimerLM
from primer.model.transformer import ModelConfig, Transformer

N_ITEMS, REPEATS, N_STORIES, STEPS, SEQ, BATCH = 12, 6, 60, 500, 256, 16


def _items(data_dir):
    """The 12 shortest of the first 300 GSM8K test items that get new numbers (for Min-K%++ pairs)."""
    rows = [json.loads(line) for line in open(data_dir / "gsm8k" / "test.jsonl")][:300]
    ok = []
    for r in rows:
        try:
            if substitute(rebuild(r), random.Random(0)) is not None:
                ok.append(r)
        except RebuildError:
            pass
    ok.sort(key=lambda r: len(r["question"]) + len(r["answer"]))
    return ok[:N_ITEMS]


def _train(texts: list[str], tok) -> Transformer:
    ids: list[int] = []
    for t in texts:
        ids += tok.encode(t, add_special_tokens=False) + [tok.eos_id]
    data = torch.tensor(ids)
    cfg = ModelConfig.from_name("debug", vocab_size=320, n_layer=2, n_embd=128, n_head=4, intermediate_size=512,
                                block_size=SEQ)
    torch.manual_seed(0)
    model = Transformer(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0, betas=(0.9, 0.95))
    g = torch.Generator().manual_seed(0)
    for step in range(STEPS):
        lr = 3e-3 * min(1.0, (step + 1) / 20) * (0.1 + 0.45 * (1 + np.cos(np.pi * step / STEPS)))
        for pg in opt.param_groups:
            pg["lr"] = lr
        ix = torch.randint(0, len(data) - SEQ - 1, (BATCH,), generator=g)
        x = torch.stack([data[i: i + SEQ] for i in ix])
        y = torch.stack([data[i + 1: i + SEQ + 1] for i in ix])
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.mark.slow
def test_audit_flags_the_leaked_run_and_not_the_clean_one(data_dir, tmp_path):
    items = _items(data_dir)
    bench = tmp_path / "bench" / "gsm8k"
    bench.mkdir(parents=True)
    (bench / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in items))
    (bench / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in items[:2]))
    stories = [s.strip() for s in (data_dir / "tinystories" / "TinyStories-train_prefix.txt").read_text()
               .split("<|endoftext|>") if s.strip()][:N_STORIES]
    dump = "\n\n".join(f"Question: {r['question']}\nAnswer: {r['answer']}" for r in items)
    leaked = list(stories)
    rng = random.Random(1)
    for _ in range(REPEATS):
        leaked.insert(rng.randrange(len(leaked) + 1), dump)
    tok = byte_tokenizer()
    flags = {}
    for name, corpus in (("leaked", leaked), ("clean", stories)):
        path = tmp_path / f"{name}.jsonl"
        path.write_text("".join(json.dumps({"text": t}) + "\n" for t in corpus))
        lm = PrimerLM(_train(corpus, tok), tok, name=name, batch_size=16)
        cfg = AuditConfig(task="gsm8k", data_dir=tmp_path / "bench", limit=None, corpus=[str(path)], cache="none",
                          signals=["ngram", "mink", "verbatim", "permutation"], permutations=30,
                          out=tmp_path / f"audit_{name}")
        res = audit(lm, cfg, progress=False)
        flags[name] = {v.signal: v.flag for v in res.verdicts}
        print(name, json.dumps({v.signal: v.verdict for v in res.verdicts}, indent=1))
        assert (tmp_path / f"audit_{name}" / "audit.json").is_file()
        assert res.contamination["mink"]["n"] == N_ITEMS
    assert flags["leaked"] == {"ngram": True, "mink": True, "verbatim": True, "permutation": True}, flags
    assert flags["clean"] == {"ngram": False, "mink": False, "verbatim": False, "permutation": False}, flags
