"""The controlled experiment, one per task family: ONE tiny model trained on TinyStories with the first 50
test items of ARC-Challenge (multiple choice), HellaSwag (cloze) and GSM8K (generative) leaked into its
data -- each item pasted 20 times at random places, a leak in shuffled order -- and ONE clean twin
trained the same way without them. Both are audited WITHOUT the corpus, on the corpus-free signals
against the audit's own controls (the neighbouring 50 items of the split; GSM8K: 50 train items):

  * the leaked model is flagged on at least one corpus-free signal at Holm-adjusted p < 0.01, per family
    (the reference model checking each rejection is the clean twin: a model trained without the items);
  * the clean twin is flagged on none (its reference: its own checkpoint two thirds into training), and
    the false-positive check (`calibrate`) runs its signals over 5 further 50-item slices per family and
    flags nothing: the observed rate is printed;
  * the n-gram look-up, given each corpus, finds the leak in the leaked corpus and nothing in the clean one.

Training is a plain AdamW loop over `primer.model.transformer.Transformer` with a byte-level tokenizer,
so the experiment is about the audit, not the training stack. Both models and the audits are shared by
the tests through module fixtures (the time is in the README).
"""

import copy
import json
import random

import numpy as np
import pytest
import torch

from primer.audit.result import FLAGGED
from primer.audit.run import AuditConfig, audit
from primer.audit.signals import CORPUS_FREE
from primer.eval.lm import PrimerLM
from primer.eval.tasks import get_task
from primer.model.transformer import ModelConfig, Transformer
from primer.tokens.bpe import byte_tokenizer

FAMILIES = {"multiple_choice": "arc_challenge", "cloze": "hellaswag", "generative": "gsm8k"}
N_ITEMS, COPIES, N_STORIES, STEPS, SEQ, BATCH = 50, 20, 280, 330, 256, 16
EARLY = 2 * STEPS // 3


def _train(texts: list[str], tok, snapshot_at: int | None = None) -> tuple[Transformer, Transformer | None]:
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
    early = None
    for step in range(STEPS):
        if step == snapshot_at:
            early = copy.deepcopy(model).eval()
        lr = 3e-3 * min(1.0, (step + 1) / 20) * (0.1 + 0.45 * (1 + np.cos(np.pi * step / STEPS)))
        for pg in opt.param_groups:
            pg["lr"] = lr
        ix = torch.randint(0, len(data) - SEQ - 1, (BATCH,), generator=g)
        x = torch.stack([data[i: i + SEQ] for i in ix])
        y = torch.stack([data[i + 1: i + SEQ + 1] for i in ix])
        loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), early


@pytest.fixture(scope="module")
def experiment(data_dir, tmp_path_factory):
    """The leaked and clean corpora, and the models trained on them (the clean run's early checkpoint too)."""
    tmp = tmp_path_factory.mktemp("leak")
    stories = [s.strip() for s in (data_dir / "tinystories" / "TinyStories-train_prefix.txt").read_text()
               .split("<|endoftext|>") if s.strip()][:N_STORIES]
    leak = []
    for name in FAMILIES.values():
        task = get_task(name)
        leak += [task.example_text(d) for d in task.docs(data_dir)[:N_ITEMS]]
    leaked = list(stories)
    rng = random.Random(1)
    for text in leak * COPIES:  # each copy on its own, at a random place: the leak in shuffled order
        leaked.insert(rng.randrange(len(leaked) + 1), text)
    tok = byte_tokenizer()
    corpora = {}
    for name, texts in (("leaked", leaked), ("clean", stories)):
        corpora[name] = tmp / f"{name}.jsonl"
        corpora[name].write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    leaked_model, _ = _train(leaked, tok)
    clean_model, early = _train(stories, tok, snapshot_at=EARLY)
    # batch 16: the configuration measured at 330 training steps (360 s on 2 quiet cores); 64 was not run
    lms = {"leaked": PrimerLM(leaked_model, tok, name="leaked", batch_size=16),
           "clean": PrimerLM(clean_model, tok, name="clean", batch_size=16),
           "clean_early": PrimerLM(early, tok, name=f"clean@{EARLY}", batch_size=16)}
    return {"lms": lms, "corpora": corpora, "tmp": tmp, "leaked_fraction": len(leak) * COPIES / len(leaked)}


def _cfg(task, tmp, **kw):
    return AuditConfig(task=task, limit=N_ITEMS, signals=list(CORPUS_FREE), cache=tmp / "cache.sqlite", **kw)


@pytest.fixture(scope="module")
def audits(experiment, data_dir):
    lms, tmp = experiment["lms"], experiment["tmp"]
    out = {}
    for family, task in FAMILIES.items():
        out[family, "leaked"] = audit(lms["leaked"], _cfg(task, tmp, data_dir=data_dir, out=tmp / f"leaked_{task}"),
                                      progress=False, reference=lms["clean"])
        out[family, "clean"] = audit(lms["clean"], _cfg(task, tmp, data_dir=data_dir, out=tmp / f"clean_{task}"),
                                     progress=False, reference=lms["clean_early"], clean=lms["clean"])
    return out


def _show(res):
    from primer.audit.report import signal_table

    print(f"{res.model['name']} on {res.task}:", *signal_table(res), sep="\n")


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_leaked_model_is_flagged_without_the_corpus(audits, family):
    res = audits[family, "leaked"]
    _show(res)
    flagged = [v for v in res.verdicts if v.flag]
    assert flagged and all(v.combined and v.p_holm < 0.01 for v in flagged), res.verdicts
    assert res.overall.state == FLAGGED and res.overall.verdict.startswith("contamination evidence from")
    assert len(res.contamination["likelihood"]["audited"]["items"]) == N_ITEMS
    assert (res.files["json"] and res.files["plot"])


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_clean_twin_is_flagged_on_nothing_over_six_slices(audits, family):
    res = audits[family, "clean"]
    _show(res)
    assert not [v for v in res.verdicts if v.flag], res.verdicts
    assert res.overall.state != FLAGGED
    cal = res.calibration
    print(f"false-positive check, {FAMILIES[family]}: {cal.flagged}/{len(cal.slices)} slices flagged "
          f"(observed rate {cal.rate:.0%}); per signal {cal.per_signal}")
    assert len(cal.slices) == 5 and cal.flagged == 0 and not any(cal.per_signal.values()), cal


@pytest.mark.slow
def test_ngram_lookup_finds_the_leak_in_the_leaked_corpus_only(experiment, data_dir):
    for name in ("leaked", "clean"):
        res = audit(experiment["lms"][name], AuditConfig(task="gsm8k", data_dir=data_dir, limit=N_ITEMS,
                                                          signals=["ngram"], corpus=[str(experiment["corpora"][name])]),
                    progress=False)
        [ng] = res.verdicts
        assert ng.flag == (name == "leaked"), ng.verdict
        assert res.contamination["ngram"]["corpus_docs"] >= N_STORIES
