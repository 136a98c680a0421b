"""Generation: KV-cached batches vs one-by-one and vs full forwards, sampling, stops, streaming, errors, fast path."""

import pytest
import torch

from primer.errors import PrimerError
from primer.model.generate import generate, sample
from primer.model.transformer import KVCache


PROMPTS = [[5, 17, 99, 3, 250, 7, 8], [42], [300, 301, 302, 1, 2], [9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 11]]


def greedy_by_full_forward(model, ids, n):
    ids = list(ids)
    out = []
    with torch.no_grad():
        for _ in range(n):
            t = int(model(torch.tensor([ids]))[0, -1].argmax())
            out.append(t)
            ids.append(t)
    return out


def test_kv_cached_greedy_equals_full_forward(debug_model):
    [r] = generate(debug_model, [PROMPTS[0]], max_new_tokens=10, fast=False)
    assert r.token_ids == greedy_by_full_forward(debug_model, PROMPTS[0], 10)
    assert (r.finish_reason, r.prompt_tokens, r.completion_tokens) == ("length", 7, 10)


def test_batched_equals_one_by_one_greedy(debug_model):
    batched = generate(debug_model, PROMPTS, max_new_tokens=12, fast=False)
    single = [generate(debug_model, [p], max_new_tokens=12, fast=False)[0] for p in PROMPTS]
    assert [r.token_ids for r in batched] == [r.token_ids for r in single]


def test_rows_that_stop_early_leave_the_others_unchanged(debug_model):
    free = generate(debug_model, PROMPTS, max_new_tokens=12, fast=False)
    stop_id = free[0].token_ids[3]  # row 0 ends at step 3; rows are dropped from the batch as they end
    batched = generate(debug_model, PROMPTS, max_new_tokens=12, fast=False, stop_token_ids={stop_id})
    single = [generate(debug_model, [p], max_new_tokens=12, fast=False, stop_token_ids={stop_id})[0] for p in PROMPTS]
    assert [r.token_ids for r in batched] == [r.token_ids for r in single]
    assert batched[0].finish_reason == "stop" and len(batched[0].token_ids) <= 3
    for r, f in zip(batched, free):
        cut = f.token_ids.index(stop_id) if stop_id in f.token_ids else len(f.token_ids)
        assert r.token_ids == f.token_ids[:cut]


def test_seeded_sampling_is_reproducible(debug_model):
    kw = dict(max_new_tokens=16, temperature=1.0, top_p=0.9, top_k=50, fast=False)
    a = generate(debug_model, PROMPTS, seed=123, **kw)
    b = generate(debug_model, PROMPTS, seed=123, **kw)
    c = generate(debug_model, PROMPTS, seed=7, **kw)
    assert [r.token_ids for r in a] == [r.token_ids for r in b]
    assert [r.token_ids for r in a] != [r.token_ids for r in c]
    # row i draws from its own generator: a row's sample does not depend on the rest of the batch
    [alone] = generate(debug_model, [PROMPTS[0]], seed=123, **kw)
    assert alone.token_ids == a[0].token_ids


def test_per_prompt_seeds_follow_the_prompt_not_its_batch(debug_model):
    kw = dict(max_new_tokens=12, temperature=1.0, fast=False)
    both = generate(debug_model, PROMPTS[:2], seed=[11, 22], **kw)
    [first] = generate(debug_model, [PROMPTS[0]], seed=[11], **kw)
    [second] = generate(debug_model, [PROMPTS[1]], seed=[22], **kw)
    assert [both[0].token_ids, both[1].token_ids] == [first.token_ids, second.token_ids]
    with pytest.raises(PrimerError, match="2 seeds for 1 prompts"):
        generate(debug_model, [PROMPTS[0]], seed=[1, 2], **kw)


def test_repeat_penalty_matches_llama_cpp_rule(debug_model):
    """Greedy with the penalty equals greedy over logits penalised by hand (llama.cpp's rule:
    positive logits of already generated tokens divided by it, negative ones multiplied)."""
    penalty, ids, out = 3.0, list(PROMPTS[2]), []
    with torch.no_grad():
        for _ in range(10):
            logits = debug_model(torch.tensor([ids]))[0, -1]
            for t in set(out):
                logits[t] = logits[t] / penalty if logits[t] > 0 else logits[t] * penalty
            out.append(int(logits.argmax()))
            ids.append(out[-1])
    [r] = generate(debug_model, [PROMPTS[2]], max_new_tokens=10, repeat_penalty=penalty, fast=False)
    assert r.token_ids == out
    [plain] = generate(debug_model, [PROMPTS[2]], max_new_tokens=10, fast=False)
    assert r.token_ids != plain.token_ids  # unpenalised greedy repeats tokens this prompt avoids


def test_sampling_filters():
    torch.manual_seed(0)
    logits = torch.randn(3, 100)
    assert torch.equal(sample(logits, 0.0, 0, 1.0, None), logits.argmax(-1))
    assert torch.equal(sample(logits, 1.0, 1, 1.0, None), logits.argmax(-1))  # top-k 1 = greedy
    assert torch.equal(sample(logits, 1.0, 0, 1e-6, None), logits.argmax(-1))  # tiny nucleus = greedy
    top5 = logits.topk(5, dim=-1).indices
    for _ in range(20):
        s = sample(logits, 2.0, 5, 1.0, None)
        assert all(int(s[i]) in top5[i].tolist() for i in range(3))
    # top-p keeps the smallest set of most likely tokens whose mass reaches p
    peaked = torch.tensor([[10.0, 9.0, 0.0, 0.0, 0.0]])
    probs = torch.softmax(peaked, -1)[0]
    assert probs[0] < 0.9 < probs[0] + probs[1]
    seen = {int(sample(peaked, 1.0, 0, 0.9, None)) for _ in range(50)}
    assert seen == {0, 1}


def test_prompt_longer_than_context_names_the_limit(debug_model):
    with pytest.raises(PrimerError, match="prompt 0 is 200 tokens; the model's context is 128 tokens"):
        generate(debug_model, [[1] * 200], max_new_tokens=4)


def test_generation_stops_at_the_context(debug_model):
    [r] = generate(debug_model, [[1] * 120], max_new_tokens=50, fast=False)
    assert r.completion_tokens == 8 and r.finish_reason == "length"


def test_bad_prompt_kinds(debug_model):
    with pytest.raises(PrimerError, match="need a tokenizer"):
        generate(debug_model, ["text without a tokenizer"])
    with pytest.raises(PrimerError, match="empty"):
        generate(debug_model, [[]])


# ------------------------------------------------------------------ the bundled real model


def test_stop_strings_and_streaming(bundled_lm):
    pieces: dict[int, list[str]] = {}
    prompts = ["Count from one to ten: one, two, three,", "List of fruits: apple, banana,"]
    rs = generate(bundled_lm, prompts, max_new_tokens=24, stop=[","],
                  on_token=lambda row, piece: pieces.setdefault(row, []).append(piece))
    for i, r in enumerate(rs):
        assert r.finish_reason == "stop" and "," not in r.text and r.text.strip()
        assert "".join(pieces.get(i, [])) == r.text
    # streaming without stop strings reproduces the text piece by piece
    got: list[str] = []
    [r] = generate(bundled_lm, ["Photosynthesis is"], max_new_tokens=20, on_token=lambda _, p: got.append(p))
    assert "".join(got) == r.text and len(got) > 5


def test_multi_character_stop_string_is_not_streamed(bundled_lm):
    got: list[str] = []
    [free] = generate(bundled_lm, ["The capital of France is"], max_new_tokens=16)
    words = free.text.split()
    stop = " ".join(words[2:4])  # two words in the middle of what greedy decoding writes
    [r] = generate(bundled_lm, ["The capital of France is"], max_new_tokens=16, stop=[stop],
                   on_token=lambda _, p: got.append(p))
    assert r.finish_reason == "stop" and r.text == free.text[: free.text.index(stop)]
    assert "".join(got) == r.text


def test_chat_prompt_ends_with_end_of_turn(bundled_lm):
    [r] = generate(bundled_lm, [[{"role": "user", "content": "What is 2+2? Answer in one sentence."}]],
                   max_new_tokens=64)
    assert r.finish_reason == "stop" and r.completion_tokens < 64 and "4" in r.text
    assert r.prompt_tokens > 10  # the chat template (system turn + markers) was applied


@pytest.mark.parametrize("act8", [False, True])  # act8: int8 activation rows, what decode steps run
def test_fast_decoder_tracks_the_fp32_reference(bundled_lm, act8):
    from primer.model.quant import fast_decoder

    model, tok = bundled_lm.model, bundled_lm.tokenizer
    dec = fast_decoder(model)
    # the file's Q4_1 / Q8_0 blocks, not a re-quantization: primer's kernel, or torch's where it cannot build
    assert dec.kinds() in ({"q4": 120, "q8": 1}, {"int4": 120, "int4x2": 1})
    ids = torch.tensor([tok.encode("The quick brown fox jumps over the lazy dog because it wanted to see "
                                   "what was on the other side of the river, where the grass was greener.")])
    T = ids.shape[1]
    with torch.no_grad():
        ref = model(ids)[0]
        cache = KVCache(model.cfg, 1, T)
        dec(ids[:, :4], cache=cache)  # prefill (dense fp32), then one token at a time (int kernels)
        steps = torch.cat([dec(ids[:, i: i + 1], cache=cache, act8=act8)[0] for i in range(4, T)])
    agree = (steps.argmax(-1) == ref[4:].argmax(-1)).float().mean()
    assert agree >= 0.9
    p, q = torch.softmax(steps, -1), torch.softmax(ref[4:], -1)
    assert 0.5 * (p - q).abs().sum(-1).mean() < 0.03  # mean total-variation distance
    if "q4" in dec.kinds() and not act8:  # primer's kernel, fp32 activations: the reference up to rounding
        assert (steps - ref[4:]).abs().max() < 1e-3


def test_fast_path_batched_equals_one_by_one(bundled_lm):
    prompts = ["The sun is a", "Water boils at", "My favourite book is about a"]
    batched = generate(bundled_lm, prompts, max_new_tokens=12)
    single = [generate(bundled_lm, [p], max_new_tokens=12)[0] for p in prompts]
    assert [r.token_ids for r in batched] == [r.token_ids for r in single]


@pytest.fixture(scope="module")
def packed_lm(bundled_gguf):
    """load_model("bundled", decode_only=True): the packed decoder built straight from the file."""
    from primer.weights.load import load_model

    return load_model("bundled", decode_only=True)


def test_decode_only_load_gives_the_fast_paths_logits_and_tokens(bundled_lm, packed_lm):
    """The decoder packed straight from the GGUF computes what the fp32 model's fast path computes,
    bit for bit (the same blocks, embedding rows and rotary tables), on primer's kernels or torch's."""
    from primer.model.quant import FastDecoder, fast_decoder

    dec, ref = packed_lm.model, fast_decoder(bundled_lm.model)
    assert isinstance(dec, FastDecoder) and dec.kinds() == ref.kinds()
    ids = torch.tensor([bundled_lm.tokenizer.encode("Bees make honey from the nectar of flowers, and they")])
    outs = []
    for d in (dec, ref):
        cache = KVCache(d.cfg, 1, ids.shape[1])
        steps = [d(ids[:, :6], cache=cache)[0]] + [d(ids[:, i: i + 1], cache=cache)[0] for i in range(6, ids.shape[1])]
        outs.append(torch.cat(steps))
    assert torch.equal(outs[0], outs[1])
    prompts = ["The sun is a", [{"role": "user", "content": "Name a fruit."}]]
    got = generate(packed_lm, prompts, max_new_tokens=24)
    want = generate(bundled_lm, prompts, max_new_tokens=24)
    assert [r.token_ids for r in got] == [r.token_ids for r in want]
    assert all(r.completion_tokens > 0 for r in got)


def test_a_decode_only_model_has_no_exact_path(packed_lm):
    with pytest.raises(PrimerError, match="decode_only"):
        generate(packed_lm, ["The sun is a"], max_new_tokens=2, fast=False)


CENSUS = """
import gc, json, resource, torch
from primer.model.generate import generate
from primer.weights.load import load_model
lm = load_model("bundled", decode_only=True)
generate(lm, ["The sun is a"], max_new_tokens=8)
gc.collect()
storages, floats = {}, []
for o in gc.get_objects():
    if isinstance(o, torch.Tensor) and o.device.type == "cpu":
        st = o.untyped_storage()
        storages[st.data_ptr()] = st.nbytes()
        if o.is_floating_point():
            floats.append(list(o.shape))
print(json.dumps({"bytes": sum(storages.values()), "float_shapes": floats,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def test_decode_only_load_holds_no_fp32_weights(bundled_gguf):
    """In a fresh process, every tensor alive after a decode-only load and a generation: about the file's
    own size in all (the packed blocks), and no fp32 tensor of a weight matrix's shape."""
    import json
    import os
    import subprocess
    import sys

    from primer.model import kernels
    from primer.weights.gguf_io import config_from_gguf, open_gguf

    if kernels.load() is None:
        pytest.skip(f"torch's fallback runs prompts on dense fp32 weights ({kernels.why_not()})")
    r = subprocess.run([sys.executable, "-c", CENSUS], capture_output=True, text=True, timeout=300, env=os.environ)
    assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    cfg = config_from_gguf(open_gguf(bundled_gguf))
    C, V, kv = cfg.n_embd, cfg.vocab_size, cfg.n_kv_head * cfg.head_dim
    weight_shapes = {(V, C), (C, C), (kv, C), (C + 2 * kv, C), (cfg.intermediate_size, C),
                     (2 * cfg.intermediate_size, C), (C, cfg.intermediate_size)}
    assert not [s for s in got["float_shapes"] if tuple(s) in weight_shapes]
    # the fp32 model alone is 4 bytes a parameter (540 MB here); the packed blocks are the file's size
    assert got["bytes"] < 1.15 * bundled_gguf.stat().st_size, got["bytes"]


@pytest.mark.slow
def test_the_fast_path_without_primers_kernels(bundled_lm):  # (skips where the bundled model is absent)
    """Where the kernels cannot build (no AVX-512, no compiler), the fast path runs on torch's int4/int8
    kernels: this file's and the engine's fast-path tests again, with PRIMER_NO_KERNELS=1 forcing it."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    tests = Path(__file__).parent
    env = {**os.environ, "PRIMER_NO_KERNELS": "1"}
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "fast and not without",
                        str(tests / "test_generate.py"), str(tests / "test_engine.py")],
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert " passed" in r.stdout and "skipped" not in r.stdout, r.stdout[-1000:]


def test_top_p_draws_do_not_depend_on_the_batch():
    """A peaked row (its nucleus within the top-p candidates) batched with flat rows (nuclei wider than
    them, sorted whole): each row's chain of seeded draws equals the chain it draws alone. Before, one wide
    row sent every row of its batch down the full sort, and a row's generator then moved on differently."""
    torch.manual_seed(0)
    logits = torch.randn(4, 4096) * torch.tensor([[40.0], [1.0], [6.0], [1.0]])
    gens = [torch.Generator().manual_seed(s) for s in range(4)]
    batched = [sample(logits, 1.0, 0, 0.95, gens).tolist() for _ in range(30)]
    for i in range(4):
        g = torch.Generator().manual_seed(i)
        assert [sample(logits[i: i + 1], 1.0, 0, 0.95, [g]).item() for _ in range(30)] == [b[i] for b in batched]
