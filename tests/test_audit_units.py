"""Fast checks of the audit's statistics, perturbations and contamination helpers (no model training)."""

import json
import random

import numpy as np
import pytest
import torch

from primer.audit import contamination as C
from primer.audit import perturb as P
from primer.audit import stats as S


def test_paired_bootstrap_detects_a_real_drop_and_not_noise():
    rng = np.random.default_rng(0)
    orig = (rng.random(300) < 0.6).astype(float)
    pert = orig.copy()
    flip = rng.choice(np.flatnonzero(orig == 1), 40, replace=False)
    pert[flip] = 0  # 40 of the right answers lost: a 13-point drop
    r = S.paired_bootstrap(orig, pert, iters=1000)
    assert r.drop == pytest.approx(40 / 300)
    assert r.significant and r.drop_ci[0] > 0 and r.p_mcnemar < 1e-9
    assert r.ci_orig[0] < r.acc_orig < r.ci_orig[1]
    same = S.paired_bootstrap(orig, orig, iters=500)
    assert not same.significant and same.drop == 0 and same.p_mcnemar == 1.0
    # Discordant pairs in both directions, balanced: not significant.
    pert2 = orig.copy()
    pert2[flip[:10]] = 0
    pert2[np.flatnonzero(orig == 0)[:10]] = 1
    assert not S.paired_bootstrap(orig, pert2, iters=1000).significant


def test_mcnemar_values():
    # 10 discordant pairs all one way: 2 * 0.5**10
    a, b = np.ones(10), np.zeros(10)
    assert S.mcnemar_exact(a, b) == pytest.approx(2 / 1024)


def test_memorisation_signature_counts_flips_both_ways():
    orig = [1, 1, 1, 0, 0, 1]
    variants = [[0, 0], [1, 0, 0], [1, 1], [1, 1], [0], []]
    sig = S.memorisation_signature(orig, variants)
    assert sig.memorised == [0, 1] and sig.mirror == [3] and sig.n_items == 5 and sig.n_right_orig == 3


def test_names_swap_is_consistent_and_keeps_numbers():
    doc = {"question": "James has 5 apples. James gives Mary 2 apples. How many apples does Mary have?",
           "answer": "Mary has 2 apples.\n#### 2"}
    v = P.swap_names(doc, random.Random(0))
    assert "James" not in v["question"] and "Mary" not in v["question"]
    new_james, new_mary = v["_names"]["James"], v["_names"]["Mary"]
    assert v["question"].count(new_james) == 2 and new_mary in v["answer"]
    assert new_james in P.MALE and new_mary in P.FEMALE
    assert "apples" not in v["question"] and v["answer"].endswith("#### 2")


def test_noop_and_format_perturbations():
    doc = {"question": "A box has 12 pens. Sam takes 3 pens. How many pens are left?"}
    v = P.noop_clause(doc, random.Random(0))
    sents = v["question"].split(". ")
    assert v["question"].endswith("How many pens are left?") and v["_noop"] in v["question"]
    assert len(sents) == 4
    assert P.linebreaks(doc, random.Random(0))["question"].count("\n") == 2
    assert P.reframe("Question: hi\nAnswer:") == "Q: hi\nA:"
    assert P.spacing(doc, random.Random(0))["question"].startswith("  A  box")


def test_option_shuffle_keeps_the_gold_answer():
    from primer.eval.tasks import get_task

    task = get_task("arc_easy")
    doc = {"question": "Which is a gas?", "choices": {"text": ["rock", "oxygen", "iron", "wood"],
                                                      "label": list("ABCD")}, "answerKey": "B", "_n_choices": 4}
    v = P.shuffle_options(doc, random.Random(3))
    t = P.wrap_mc_task(task)
    assert t.doc_to_choice(v)[t.doc_to_target(v)] == "oxygen" and v["_perm"] != [0, 1, 2, 3]
    lt = P.wrap_mc_task(task, lettered=True, labels="1234")
    text = lt.doc_to_text(v)
    assert text.startswith("Question: Which is a gas?\n1. ") and text.endswith("\nAnswer:")
    assert lt.doc_to_choice(v) == ["1", "2", "3", "4"]
    gold = lt.doc_to_target(v)
    assert f"{gold + 1}. oxygen" in text


def test_symbolic_templates_reproduce_gsm8k_and_draw_new_items(data_dir):
    from primer.audit.symbolic import load_templates

    test = [json.loads(line) for line in open(data_dir / "gsm8k" / "test.jsonl")]
    templates, stats = load_templates(data_dir, test)
    print("GSM-Symbolic templates:", stats)
    assert stats["templates"] == 100 and stats["usable"] >= 40
    rng = random.Random(0)
    for idx, t in list(templates.items())[:10]:
        v = t.draw(rng)
        assert v is not None and v["answer"].startswith("#### ")
        assert "{" not in v["question"]


def test_verbatim_metrics_and_min_k_plus_plus():
    assert C.rouge_l("a b c d".split(), "a b c d".split()) == 1.0
    assert C.rouge_l("a x c d".split(), "a b c d".split()) == pytest.approx(0.75)
    a, b = C.split_half("one two three four five six")
    assert a == "one two three " and b == "four five six"
    stats = {"logp": np.array([-1.0, -2.0, -0.5, -3.0, -0.1]), "mu": np.zeros(5), "sigma": np.ones(5)}
    assert C.min_k_plus_plus(stats, k=0.4) == pytest.approx(-2.5)


def test_token_stats_match_a_direct_computation():
    from primer.tokens.bpe import byte_tokenizer
    from primer.eval.lm import PrimerLM
    from primer.model.transformer import ModelConfig, Transformer

    torch.manual_seed(0)
    m = Transformer(ModelConfig.from_name("debug", vocab_size=320))
    tok = byte_tokenizer()
    lm = PrimerLM(m, tok, name="t")
    st = C.token_stats(lm, ["hello world", "ab"])
    ids = [lm.prefix_token_id] + tok.encode("hello world", add_special_tokens=False)
    with torch.no_grad():
        logp = torch.log_softmax(m(torch.tensor([ids[:-1]])).float(), -1)[0]
    assert np.allclose(st[0]["logp"], logp.gather(-1, torch.tensor(ids[1:]).unsqueeze(-1)).squeeze(-1).numpy(), atol=1e-5)
    mu = (logp.exp() * logp).sum(-1).numpy()
    assert np.allclose(st[0]["mu"], mu, atol=1e-5) and len(st[1]["logp"]) == 2
    # The rolling log-likelihood the permutation test uses agrees with the token stats.
    assert lm.loglikelihood_rolling(["hello world"])[0] == pytest.approx(float(st[0]["logp"].sum()), abs=1e-3)


def test_a_drop_against_a_chance_level_baseline_is_reported_but_not_counted():
    """HellaSwag in lettered format is at chance for SmolLM2-135M; an option shuffle moved it 26.5% -> 17.0%
    through position bias. The verdict shows that drop and does not flag it; above chance it flags."""
    from primer.audit.report import table, verdicts
    from primer.audit.result import AuditResult, Baseline, Condition, Robustness

    cond = Condition("shuffle", "options reordered", "mcf", content=True, n=200, acc_orig=0.265, acc_pert=0.17,
                     drop=0.095, drop_ci=(0.015, 0.17), ci_orig=(0.205, 0.33), ci_pert=(0.12, 0.225), significant=True,
                     p_mcnemar=0.023, p_bootstrap=0.02, baseline_at_chance=True)
    result = AuditResult(model={"name": "m"}, task="hellaswag", n_items=200, config={}, robustness=Robustness(
        metric="acc_norm", shots=0, chance=0.25, conditions=[cond],
        baselines={"mcf": Baseline(n=200, acc=0.265, ci=(0.205, 0.33), at_chance=True)}))
    [rob] = [v for v in verdicts(result) if v.signal == "robustness"]
    assert rob.state == "no evidence"  # nothing counted: no evidence, never "not flagged"
    assert "0 of 0 content perturbations" in rob.verdict and "does not beat chance (25.0%)" in rob.verdict
    assert "26.5%->17.0%" in rob.verdict and "not counted: its baseline (mcf)" in rob.verdict
    assert "chance (guessing) 25.0%" in table(result)
    cond.baseline_at_chance = False
    [rob] = [v for v in verdicts(result) if v.signal == "robustness"]
    assert rob.flag and "1 of 1 content perturbations" in rob.verdict


def test_a_rerun_answers_from_the_cache(data_dir, tmp_path, monkeypatch):
    """The audit caches model answers by default, in ~/.cache/primer (an interrupted audit resumes): a
    second run asks the model nothing and reports the same conditions."""
    from dataclasses import replace

    from primer.audit.run import AuditConfig, audit
    from primer.tokens.bpe import byte_tokenizer
    from primer.eval.lm import PrimerLM
    from primer.model.transformer import ModelConfig, Transformer

    monkeypatch.setenv("HOME", str(tmp_path))
    torch.manual_seed(0)
    lm = PrimerLM(Transformer(ModelConfig.from_name("debug", vocab_size=320)), byte_tokenizer(), name="debug")
    asked = []
    real = lm.loglikelihood
    lm.loglikelihood = lambda reqs: asked.append(len(reqs)) or real(reqs)
    cfg = AuditConfig(task="arc_easy", data_dir=data_dir, limit=4, perturbations=["shuffle"], signals=["robustness"],
                      bootstrap=100, out=tmp_path / "first")
    first = audit(lm, cfg, progress=False)
    assert sum(asked) >= 3 * 4 * 4  # original, lettered, shuffled: 4 items x 4 options
    asked.clear()
    second = audit(lm, replace(cfg, out=tmp_path / "second"), progress=False)
    assert sum(asked) == 0
    assert (tmp_path / ".cache" / "primer" / "eval-cache.sqlite").is_file()
    assert second.robustness.conditions == first.robustness.conditions
