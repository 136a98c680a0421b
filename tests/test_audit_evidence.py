"""Fast checks of how the audit decides: the one-sided tests, Holm, the reference check, the four states,
the controls it draws, the cached membership scores -- and that nothing reads "not flagged" where a
signal did not run or saw no data."""

import json

import numpy as np
import pytest
import torch
from scipy import stats as sps

from primer.audit import contamination as C
from primer.audit import stats as S
from primer.audit.controls import choose
from primer.audit.evidence import SignalTest, decide, overall
from primer.audit.result import (
    FLAGGED,
    NO_EVIDENCE,
    NOT_FLAGGED,
    NOT_MEASURED,
    AuditResult,
)
from primer.audit.run import AuditConfig, audit
from primer.eval.lm import PrimerLM
from primer.eval.runner import Cache
from primer.model.transformer import ModelConfig, Transformer
from primer.tokens.bpe import byte_tokenizer


def _lm(seed=0, name="debug"):
    torch.manual_seed(seed)
    return PrimerLM(Transformer(ModelConfig.from_name("debug", vocab_size=320)), byte_tokenizer(), name=name)


def test_one_sided_tests_and_holm():
    rng = np.random.default_rng(0)
    hi, lo = rng.normal(1.5, 1, 40), rng.normal(0, 1, 40)
    c = S.two_sample_greater(hi, lo, iters=500)
    assert c.p == pytest.approx(sps.mannwhitneyu(hi, lo, alternative="greater").pvalue)
    assert c.p < 1e-3 and c.effect == pytest.approx(hi.mean() - lo.mean()) and c.ci[0] < c.effect < c.ci[1]
    assert c.auc == pytest.approx((hi[:, None] > lo[None, :]).mean())
    assert S.two_sample_greater(lo, hi, iters=100).p > 0.99  # one-sided: the other direction is no evidence
    assert S.two_sample_greater([0.0] * 5, [0.0] * 5).p == 1.0
    assert S.two_sample_greater([1.0], [0.0, 1.0]).n == 1  # too little data: p = 1, never a flag
    d = rng.normal(0.5, 1, 30)
    assert S.paired_greater(d, iters=100).p == pytest.approx(sps.wilcoxon(d, alternative="greater").pvalue)
    # scipy.stats.ttest_1samp([.3, 1.2, -.1, .8, .5], 0, alternative="greater").pvalue
    assert S.t_test_greater([0.3, 1.2, -0.1, 0.8, 0.5]) == pytest.approx(0.03524199845510996, abs=1e-9)
    assert S.holm({"a": 0.01, "b": 0.04, "c": 0.03}) == pytest.approx({"a": 0.03, "b": 0.06, "c": 0.06})


def _cmp(p, n=50):
    return S.Comparison("t", n, n, 0.5, (0.1, 0.9), p, 0.8)


def test_reference_check_turns_a_shared_effect_into_no_evidence():
    asked = []

    def ref(p):
        return lambda: asked.append(p) or _cmp(p)

    tests = [SignalTest("mink", "m", "z", cmp=_cmp(1e-6), reference=ref(0.4)),  # the reference does not: flagged
             SignalTest("loss", "l", "n", cmp=_cmp(1e-6), reference=ref(0.01)),  # the reference does too: no evidence
             SignalTest("zlib", "z", "n", cmp=_cmp(0.3), reference=ref(0.0)),  # no rejection: reference not asked
             SignalTest("permutation", "p", "n", cmp=_cmp(1e-6), reference=lambda: "no reference model",
                        reference_required=True)]  # nothing to check with: no evidence
    v = {x.signal: x for x in decide(tests, alpha=0.01)}
    assert v["mink"].state == FLAGGED and v["mink"].p_holm == pytest.approx(4e-6) and v["mink"].reference["p"] == 0.4
    assert v["loss"].state == NO_EVIDENCE and "not exchangeable -- no evidence" in v["loss"].verdict
    assert v["zlib"].state == NOT_FLAGGED and "reference check not needed" in v["zlib"].verdict
    assert v["permutation"].state == NO_EVIDENCE and "nothing checks that the order is exchangeable" in \
        v["permutation"].verdict
    assert sorted(asked) == [0.01, 0.4]  # the reference runs only to check a rejection
    ov = overall(list(v.values()), 0.01)
    assert ov.state == FLAGGED and "from mink" in ov.verdict and "loss" not in ov.verdict.split("(")[0]


def test_holm_keeps_a_borderline_signal_from_flagging():
    tests = [SignalTest(s, s, "z", cmp=_cmp(0.004), reference=lambda: _cmp(0.9)) for s in ("mink", "loss", "zlib")]
    vs = decide(tests, alpha=0.01)
    assert all(v.state == NOT_FLAGGED and v.p_holm == pytest.approx(0.012) for v in vs)
    assert overall(vs, 0.01).state == NOT_FLAGGED


def test_a_signal_that_did_not_run_or_saw_nothing_never_reads_not_flagged():
    tests = [SignalTest("verbatim", "v", "r", why_not="no audited item is long enough"),
             SignalTest("mink", "m", "z", why_not="rewritten controls need a reference model",
                        state_if_not_run=NOT_MEASURED)]
    vs = decide(tests, 0.01)
    assert [v.state for v in vs] == [NO_EVIDENCE, NOT_MEASURED]
    assert all(v.verdict.startswith(v.state) for v in vs)
    ov = overall(vs, 0.01)
    assert ov.state == NO_EVIDENCE and "no signal could speak" in ov.verdict


def test_memorisation_with_no_item_right_on_the_original_is_no_evidence():
    from primer.audit.report import verdicts
    from primer.audit.result import Robustness

    mem = {"n_items": 20, "n_right_orig": 0, "memorised": [], "mirror": [3], "rate": 0.0, "mirror_rate": 0.05,
           "p_excess": 1.0, "pooled": ["numbers"], "examples": []}
    result = AuditResult(model={"name": "m"}, task="gsm8k", n_items=20, config={},
                         robustness=Robustness(metric="em", shots=5, baselines={}, conditions=[],
                                               memorisation={"original": mem}))
    v = {x.signal: x for x in verdicts(result)}
    assert v["robustness"].state == NOT_MEASURED
    assert v["memorisation"].state == NO_EVIDENCE and v["memorisation"].verdict.startswith("no evidence:")
    mem["n_right_orig"], mem["memorised"] = 6, [1, 2, 4]
    mem["p_excess"] = 0.125
    assert {x.signal: x for x in verdicts(result)}["memorisation"].state == NOT_FLAGGED


def test_ngram_on_an_empty_corpus_is_no_evidence_in_the_cli(data_dir, tmp_path, capsys):
    """`primer audit --signals ngram --corpus EMPTY.jsonl` printed "[not flagged] ngram ... in one of 0 corpus
    documents"; with no document read it is "no evidence", in its line, the table and the overall verdict."""
    from primer.cli import main
    from primer.weights.checkpoint import save_checkpoint

    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "ckpt", Transformer(ModelConfig.from_name("debug", vocab_size=320)),
                           tokenizer=byte_tokenizer())
    empty = tmp_path / "EMPTY.jsonl"
    empty.write_text("")
    rc = main(["audit", str(ckpt), "--task", "arc_easy", "--data-dir", str(data_dir), "--limit", "5",
               "--signals", "ngram", "--corpus", str(empty), "--cache", "none", "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "[no evidence] ngram: no evidence: 0 corpus documents were read" in out
    assert "not flagged" not in out
    assert "[no evidence] overall" in out
    row = next(ln for ln in out.splitlines() if ln.strip().startswith("ngram "))
    assert "no evidence" in row


def test_permutation_and_verbatim_say_no_evidence_without_enough_data(data_dir):
    lm = _lm()
    # ARC-Easy items 13-15 are short: no second half reaches 8 words, so there is nothing to complete.
    res = audit(lm, AuditConfig(task="arc_easy", data_dir=data_dir, start=13, limit=3,
                                signals=["permutation", "verbatim"], reference="none", cache="none"), progress=False)
    v = {x.signal: x for x in res.verdicts}
    assert v["permutation"].state == NO_EVIDENCE and "needs at least 4 items (3 audited)" in v["permutation"].verdict
    assert v["verbatim"].state == NO_EVIDENCE and "no audited item is long enough" in v["verbatim"].verdict
    assert res.overall.state == NO_EVIDENCE and "not flagged" not in res.overall.verdict
    res = audit(lm, AuditConfig(task="arc_easy", data_dir=data_dir, limit=8, signals=["permutation"],
                                permutation_shards=1, permutations=20, reference="none", cache="none"), progress=False)
    [pv] = res.verdicts
    assert pv.state == NO_EVIDENCE and "smallest attainable p = 1/21" in pv.verdict


def test_controls_are_the_neighbouring_block_another_split_or_rewrites(data_dir):
    from primer.audit.run import build_variants
    from primer.audit.suites import suite_for
    from primer.eval.tasks import get_task

    arc = get_task("arc_challenge")
    all_docs = [{**d, "_index": i} for i, d in enumerate(arc.docs(data_dir))]
    c = choose(arc, all_docs[:50], all_docs, data_dir, "auto", 0)
    assert c.kind == "heldout" and [d["_index"] for d in c.docs] == list(range(50, 100))
    end = all_docs[-30:]
    assert [d["_index"] for d in choose(arc, end, all_docs, data_dir, "heldout", 0).docs] == \
        list(range(len(all_docs) - 60, len(all_docs) - 30))
    gsm = get_task("gsm8k")
    gdocs = [{**d, "_index": i} for i, d in enumerate(gsm.docs(data_dir)[:20])]
    c = choose(gsm, gdocs, gdocs, data_dir, "auto", 0)
    assert c.kind == "split" and len(c.docs) == 20 and all(d["_split"] == "train" for d in c.docs)
    assert choose(gsm, gdocs, gdocs, data_dir, "auto", 0).docs == c.docs  # seeded
    suite = suite_for(gsm)
    cfg = AuditConfig(task="gsm8k")
    c = choose(gsm, gdocs, gdocs, data_dir, "rewrite", 0, build_variants(gsm, gdocs, suite, cfg), suite)
    assert c.paired and len(c.pairs) >= 15 and len(c.docs) == len(c.pairs)
    for i, d in zip(c.pairs, c.docs):
        assert d["_index"] == gdocs[i]["_index"] and d["question"] != gdocs[i]["question"]


def test_membership_scores_are_per_byte_and_cached(tmp_path):
    lm = _lm()
    texts = ["Question: what is two plus two?\nAnswer: four", "Once upon a time"]
    cache = Cache(tmp_path / "c.sqlite")
    first = C.membership_scores(lm, texts, cache=cache)
    st = C.token_stats(lm, texts)
    assert first[0]["loss"] == pytest.approx(float(st[0]["logp"].sum()) / len(texts[0].encode()), rel=1e-5)
    assert first[0]["zlib"] == pytest.approx(float(st[0]["logp"].sum()) / C.zlib_bits(texts[0]), rel=1e-5)
    assert first[1]["mink"] == pytest.approx(C.min_k_plus_plus(st[1], 0.2), rel=1e-5)
    lm.model = None  # a second call must not need the model
    assert C.membership_scores(lm, texts, cache=cache) == first


def test_audit_json_records_states_controls_and_the_reference(data_dir, tmp_path):
    lm, ref = _lm(0, "a"), _lm(1, "r")
    res = audit(lm, AuditConfig(task="arc_easy", data_dir=data_dir, limit=8, signals=["mink", "loss"], cache="none",
                                out=tmp_path), progress=False, reference=ref)
    assert {v.signal for v in res.verdicts} == {"mink", "loss"} and res.files["plot"]
    rec = json.loads((tmp_path / "audit.json").read_text())
    assert rec["controls"]["kind"] == "heldout" and rec["controls"]["items"] == list(range(8, 16))
    assert rec["reference"] == "r"
    assert {v["signal"]: v["state"] for v in rec["verdicts"]}.keys() == {"mink", "loss"}
    assert rec["overall"]["state"] in (FLAGGED, NOT_FLAGGED)
    lk = rec["contamination"]["likelihood"]
    assert len(lk["audited"]["items"]) == 8 and len(lk["reference"]["controls"]) == 8  # for the per-item plot
    assert (tmp_path / "audit.png").stat().st_size > 1000
    same = audit(lm, AuditConfig(task="arc_easy", data_dir=data_dir, limit=8, signals=["mink"], cache="none"),
                 progress=False, reference=lm)
    assert same.reference == "the reference model is the audited model"
    assert isinstance(same, AuditResult)


def test_calibrate_runs_the_signals_on_a_known_clean_model_over_five_other_slices(data_dir):
    """`--calibrate reference`: the reference model (which never saw anything) audited on 5 further slices,
    decided exactly as the audit decides; the table prints the observed false-positive rate."""
    from primer.audit.report import table

    lm, ref = _lm(0, "a"), _lm(1, "r")
    res = audit(lm, AuditConfig(task="arc_easy", data_dir=data_dir, limit=8, signals=["mink", "loss", "zlib"],
                                calibrate="reference", cache="none", bootstrap=200), progress=False, reference=ref)
    cal = res.calibration
    assert cal.model == "r" and len(cal.slices) == 5 and cal.alpha == 0.01
    # heldout controls: each slice brings its neighbouring block, and none touches the audited items or controls
    assert [s.start for s in cal.slices] == [16, 32, 48, 64, 80]
    assert all(set(s.states) == {"mink", "loss", "zlib"} for s in cal.slices)
    assert cal.rate == cal.flagged / 5 and set(cal.per_signal) == {"mink", "loss", "zlib"}
    assert f"false-positive check on r (known clean), 5 slices of 8 items: {cal.flagged}/5 flagged" in table(res)
