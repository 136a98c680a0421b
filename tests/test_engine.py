"""The decode engine: requests joining a running batch, cancel, batch-independent text, stop strings
that span tokens, and the context limit as an explicit finish reason."""

import pytest
import torch

from primer.errors import PrimerError
from primer.model.engine import Engine
from primer.model.generate import generate
from primer.model.sampling import Detokenizer, SamplingParams

PROMPTS = [[5, 17, 99, 3, 250, 7, 8], [42], [300, 301, 302, 1, 2], [9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 11]]


def record(out: dict, events) -> None:
    """Fold events into per request id: tokens, text, and its final event."""
    for ev in events:
        r = out.setdefault(ev.rid, {"ids": [], "text": "", "final": None})
        assert r["final"] is None, "an event after the final one"
        if ev.token_id is not None:
            r["ids"].append(ev.token_id)
        r["text"] += ev.text
        if ev.finish_reason:
            r["final"] = ev


def drain(eng: Engine, out: dict | None = None, steps: int | None = None) -> dict:
    """Step until done (or `steps` steps), recording every event."""
    out = {} if out is None else out
    n = 0
    while eng.has_work() and (steps is None or n < steps):
        n += 1
        record(out, eng.step())
    return out


def alone(model, prompt, fast, **kw) -> list[int]:
    return generate(model, [prompt], fast=fast, **kw)[0].token_ids


def test_a_request_joins_the_running_batch_at_the_next_step(debug_model):
    eng = Engine(debug_model, max_batch=4, fast=False)
    a = eng.submit(PROMPTS[0], SamplingParams(max_new_tokens=12))
    got = drain(eng, steps=3)
    assert len(got[a]["ids"]) == 3 and eng.active() == 1
    b = eng.submit(PROMPTS[2], SamplingParams(max_new_tokens=5))
    assert eng.waiting() == 1
    events = eng.step()
    assert sorted(e.rid for e in events) == [a, b] and eng.active() == 2 and eng.waiting() == 0
    record(got, events)
    drain(eng, got)
    assert got[a]["ids"] == alone(debug_model, PROMPTS[0], False, max_new_tokens=12)
    assert got[b]["ids"] == alone(debug_model, PROMPTS[2], False, max_new_tokens=5)
    assert (got[b]["final"].finish_reason, got[b]["final"].completion_tokens, got[b]["final"].prompt_tokens) == \
        ("length", 5, 5)


def test_cancel_frees_the_slot_at_once(debug_model):
    eng = Engine(debug_model, max_batch=2, fast=False)
    ids = [eng.submit(p, SamplingParams(max_new_tokens=10)) for p in PROMPTS[:3]]
    got = drain(eng, steps=2)
    assert eng.active() == 2 and eng.waiting() == 1
    assert eng.cancel(ids[0]) and eng.active() == 1  # slot 0 freed; slot 1's row moved into it
    events = eng.step()
    assert ids[0] not in {e.rid for e in events} and eng.active() == 2 and eng.waiting() == 0
    record(got, events)
    assert not eng.cancel(ids[0])
    drain(eng, got)
    assert got[ids[0]]["final"] is None
    assert got[ids[1]]["ids"] == alone(debug_model, PROMPTS[1], False, max_new_tokens=10)
    assert got[ids[2]]["ids"] == alone(debug_model, PROMPTS[2], False, max_new_tokens=10)
    w = eng.submit(PROMPTS[3])
    assert eng.cancel(w) and not eng.has_work()  # a waiting request is dropped too


def test_mixed_settings_in_one_batch_match_each_request_alone(debug_model):
    """Greedy, sampled (seeded) and penalised requests share a batch; each gives what it gives alone."""
    settings = [dict(max_new_tokens=9), dict(max_new_tokens=11, temperature=1.0, top_p=0.9, seed=5),
                dict(max_new_tokens=7, repeat_penalty=2.0), dict(max_new_tokens=8, temperature=0.7, top_k=20, seed=9)]
    eng = Engine(debug_model, max_batch=3, fast=False)
    rids = [eng.submit(p, SamplingParams(**s)) for p, s in zip(PROMPTS, settings)]
    got = drain(eng)
    for rid, p, s in zip(rids, PROMPTS, settings):
        assert got[rid]["ids"] == alone(debug_model, p, False, **s)


def test_samples_of_one_prompt_share_its_prefill(debug_model):
    """Four seeded samples of one prompt (preference sampling's shape) beside another prompt: the
    prompt is prefilled once (the twins copy its slot's positions and logits, also when they are admitted
    steps later, after rows moved), and each sample is the text it gets alone."""
    eng = Engine(debug_model, max_batch=3, fast=False)
    prefilled = []
    real_prefill = eng.runner.prefill

    def counted(group, *rest):
        prefilled.extend(list(ids) for _, ids in group)
        return real_prefill(group, *rest)

    eng.runner.prefill = counted
    runs = [(PROMPTS[0], dict(max_new_tokens=n, temperature=1.0, seed=s)) for n, s in ((3, 1), (10, 2), (4, 3), (4, 4))]
    runs.insert(1, (PROMPTS[2], dict(max_new_tokens=6, temperature=1.0, seed=9)))
    rids = [eng.submit(p, SamplingParams(**kw)) for p, kw in runs]
    got = drain(eng)
    assert prefilled == [PROMPTS[0], PROMPTS[2]]  # the last two samples waited for a slot and still shared
    for rid, (p, kw) in zip(rids, runs):
        assert got[rid]["ids"] == alone(debug_model, p, False, **kw)
    assert len({tuple(got[r]["ids"]) for r in rids[:1] + rids[2:]}) > 1  # the seeds do sample differently


def test_context_limit_is_an_explicit_length_finish(debug_model):
    eng = Engine(debug_model, fast=False)  # the debug shape's context is 128 tokens
    rid = eng.submit([1] * 125, SamplingParams(max_new_tokens=50))
    final = drain(eng)[rid]["final"]
    assert (final.finish_reason, final.prompt_tokens, final.completion_tokens) == ("length", 125, 3)
    with pytest.raises(PrimerError, match="prompt is 128 tokens; the model's context is 128 tokens"):
        eng.submit([1] * 128)
    small = Engine(debug_model, max_len=32, fast=False)
    rid = small.submit([1] * 30, SamplingParams(max_new_tokens=50))
    assert drain(small)[rid]["final"].completion_tokens == 2
    rid = small.submit([1] * 3, SamplingParams(max_new_tokens=0))
    assert drain(small)[rid]["final"].finish_reason == "length"


# ------------------------------------------------------------------ the bundled real model


def test_fast_path_text_alone_equals_text_in_a_changing_batch(bundled_lm):
    """Requests arrive while others decode, finish at different steps, and rows move between slots;
    each greedy text equals the text the same prompt gets alone."""
    prompts = ["The sun is a", "Water boils at", "My favourite book is about a", "Once upon a time"]
    lengths = [6, 14, 9, 12]
    eng = Engine(bundled_lm, max_batch=2, fast=True)
    rids = [eng.submit(prompts[0], SamplingParams(max_new_tokens=lengths[0], ignore_eos=True))]
    got = drain(eng, steps=2)
    rids += [eng.submit(p, SamplingParams(max_new_tokens=n, ignore_eos=True)) for p, n in zip(prompts[1:], lengths[1:])]
    drain(eng, got)
    for rid, p, n in zip(rids, prompts, lengths):
        assert got[rid]["ids"] == alone(bundled_lm, p, True, max_new_tokens=n, ignore_eos=True)
        assert got[rid]["final"].completion_tokens == n


def test_fast_path_prompts_admitted_together_decode_as_they_do_alone(bundled_lm):
    """Six requests admitted in one step, two of them samples of one prompt, one ending at its first token:
    the five fresh prompts share one packed prefill where primer's kernels run (one by one elsewhere), the
    twin copies its prompt's slot, and every text is the one it gets alone."""
    from primer.model import kernels

    prompts = ["The sun is a", "Water boils at", "The sun is a", "My favourite book is about a", "Rivers", "Once"]
    kws = [dict(max_new_tokens=n, temperature=t, seed=i, ignore_eos=True)
           for i, (n, t) in enumerate(zip([8, 6, 8, 1, 7, 9], [0.0, 0.0, 1.0, 0.0, 0.8, 0.0]))]
    eng = Engine(bundled_lm, max_batch=6, fast=True)
    groups, packed = [], []
    real, real_packed = eng.runner.prefill, eng.runner.forward.prefill
    eng.runner.prefill = lambda group, *a: groups.append([ids for _, ids in group]) or real(group, *a)
    eng.runner.forward.prefill = lambda ps, *a: packed.append(len(ps)) or real_packed(ps, *a)
    try:
        rids = [eng.submit(p, SamplingParams(**kw)) for p, kw in zip(prompts, kws)]
        got = drain(eng)
    finally:
        del eng.runner.forward.prefill  # the decoder is cached per model: the other tests get the real one
    tok = bundled_lm.tokenizer
    assert groups == [[tok.encode(p) for i, p in enumerate(prompts) if i != 2]]
    assert packed == ([5] if kernels.load() is not None else [])
    for rid, p, kw in zip(rids, prompts, kws):
        assert got[rid]["ids"] == alone(bundled_lm, p, True, **kw)
        assert got[rid]["final"].completion_tokens == kw["max_new_tokens"]


def test_stop_string_across_token_boundaries_is_never_streamed(bundled_lm):
    tok = bundled_lm.tokenizer
    text = "Hello world, the café is open until midnight 🌙 tonight."
    ids = tok.encode(text, add_special_tokens=False)
    for stop in ["lo wor", "é is", "🌙", "midnight 🌙 t"]:
        assert not any(stop in tok.decode([i]) for i in ids)  # the stop string spans tokens
        d = Detokenizer(tok, [stop])
        pieces = []
        for i in ids:
            pieces.append(d.add(i))
            if d.hit:
                break
        assert d.hit and "".join(pieces) == text[: text.index(stop)]
        assert all("\ufffd" not in p for p in pieces)  # a character split over tokens is held back whole


def test_cache_grows_to_the_requests_horizon_and_keeps_its_positions(debug_model):
    """SlotCache: doubling, but never past the horizon the engine gives (prompt + new tokens of its running
    requests), one layer at a time with every position kept."""
    from primer.model.engine import SlotCache

    c = SlotCache(debug_model.cfg, 2, 128, torch.float32, torch.device("cpu"))
    c.reserve(10, horizon=40)
    assert c.capacity == 40  # not the 64 a first reservation takes
    marks = [torch.randn_like(t) for t in c.k + c.v]
    for t, m in zip(c.k + c.v, marks):
        t.copy_(m)
    c.reserve(41, horizon=50)
    assert c.capacity == 50 and all(t.shape[2] == 50 for t in c.k + c.v)
    assert all(torch.equal(t[:, :, :40], m) for t, m in zip(c.k + c.v, marks))
    c.reserve(60)
    assert c.capacity == 100  # no horizon: doubling
    eng = Engine(debug_model, max_batch=4, fast=False)
    for p in PROMPTS[:3]:
        eng.submit(p, SamplingParams(max_new_tokens=7))
    drain(eng)
    assert eng.runner.cache.capacity == max(len(p) for p in PROMPTS[:3]) + 7
