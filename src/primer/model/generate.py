"""Text generation for a list of prompts: sampling, stop strings, streaming, one result per prompt.

    from primer.weights.load import load_model
    from primer.model.generate import generate
    lm = load_model("bundled")
    [r] = generate(lm, ["Photosynthesis is"], max_new_tokens=64)                  # greedy
    rs = generate(lm, [[{"role": "user", "content": "Hi"}]], temperature=0.7, top_p=0.9, seed=1)
    generate(lm, prompts, on_token=lambda row, piece: print(piece, end=""))        # streaming

A prompt is a string (encoded as the tokenizer does by default), a chat (a list of
{"role", "content"} messages, rendered with the model's chat template and a generation prompt),
or a list of token ids. `generate` submits every prompt to one `primer.model.engine.Engine` and
steps it until all are done: up to `batch_size` prompts decode together, a finished prompt's slot
goes to the next waiting one at once, and a prompt's continuation does not depend on what it is
batched with.

Speed: on CPU the engine runs `primer.model.quant.FastDecoder` (the GGUF's own Q4/Q8 blocks; with
primer's kernels, activations quantized to int8 per block of 32 as llama.cpp does); `fast=False`
runs the reference fp32 `Transformer.forward`, which evaluation and the parity tests use. A process
that only generates loads with `load_model(spec, decode_only=True)`: the decoder alone, packed from
the file, the same tokens, about a quarter of the memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

from primer.errors import PrimerError
from primer.model.engine import Engine, Prompt, encode_prompt, unpack_lm
from primer.model.sampling import SamplingParams, check_sampling, sample

__all__ = ["GenerationResult", "generate", "encode_prompt", "sample", "check_sampling", "Prompt"]


@dataclass
class GenerationResult:
    text: str
    """Generated text (stop string and stop token not included)."""
    token_ids: list[int] = field(default_factory=list)
    """Generated token ids (a stop token is not included)."""
    finish_reason: str = "length"
    """"stop" (a stop token or stop string ended it) or "length" (max tokens or the context ran out)."""
    prompt_tokens: int = 0
    completion_tokens: int = 0


def generate(
    lm,
    prompts: Prompt | Sequence[Prompt],
    *,
    max_new_tokens: int = 256,
    max_tokens: int | None = None,
    temperature: float = 0.0,
    top_k: int = 0,
    top_p: float = 1.0,
    stop: Sequence[str] = (),
    seed: int | Sequence[int | None] | None = None,
    repeat_penalty: float = 1.0,
    on_token: Callable[[int, str], None] | None = None,
    batch_size: int = 32,
    stop_token_ids: set[int] | None = None,
    ignore_eos: bool = False,
    fast: bool | str = "auto",
    tokenizer=None,
) -> list[GenerationResult]:
    """Continue each prompt; one `GenerationResult` per prompt, in order.

    lm: `load_model(...)`'s result, a (model, tokenizer) pair, or a bare Transformer (+ tokenizer=).
    max_new_tokens (alias max_tokens): most tokens generated per prompt (the context may cut it).
    temperature <= 0 is greedy; top_k 0 and top_p 1 disable those filters.
    stop: strings that end a row (not included in its text); stop tokens default to the
        tokenizer's EOS / end-of-turn ids (`ignore_eos=True` disables them, for benchmarks).
    seed: row i samples from torch.Generator seeded with seed + i, or with seed[i] when one seed per
        prompt is given (None: nondeterministic). Either way a row's text does not depend on its batch.
    repeat_penalty: llama.cpp's penalty on tokens this row has already generated (1.0 = off):
        positive logits are divided by it, negative ones multiplied.
    on_token(row, text_piece): called as text becomes final, row = the prompt's index.
    batch_size: prompts decoded together.
    fast: "auto" uses the int4/int8 CPU decoder when available; False runs exact fp32 forward.
    """
    model, tok = unpack_lm(lm, tokenizer)
    if max_tokens is not None:
        max_new_tokens = max_tokens
    check_sampling(max_new_tokens, temperature, top_k, top_p, repeat_penalty)
    if isinstance(prompts, str) or (isinstance(prompts, list) and prompts and isinstance(prompts[0], (dict, int))):
        prompts = [prompts]  # one prompt given bare
    encoded = [encode_prompt(tok, p) for p in prompts]
    ctx = model.cfg.block_size
    for i, ids in enumerate(encoded):
        if not ids:
            raise PrimerError(f"prompt {i} is empty after tokenization")
        if len(ids) >= ctx:
            raise PrimerError(
                f"prompt {i} is {len(ids)} tokens; the model's context is {ctx} tokens (shorten the prompt)"
            )
    if seed is None or isinstance(seed, int):
        seeds = [None if seed is None else int(seed) + i for i in range(len(encoded))]
    else:
        seeds = list(seed)
        if len(seeds) != len(encoded):
            raise PrimerError(f"generate: {len(seeds)} seeds for {len(encoded)} prompts (give one seed, or one per prompt)")
    if (stop or on_token is not None) and tok is None:
        raise PrimerError("generate: stop strings and streaming need a tokenizer")
    if not encoded:
        return []
    # the cache never needs more positions than the longest prompt plus its new tokens
    need = max(len(ids) for ids in encoded) + max(1, max_new_tokens)
    engine = Engine((model, tok), max_batch=min(max(1, batch_size), len(encoded)), max_len=min(ctx, need), fast=fast)
    stops = None if stop_token_ids is None else frozenset(stop_token_ids)
    row = {}
    for i, ids in enumerate(encoded):
        params = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                                stop=tuple(stop), repeat_penalty=repeat_penalty, seed=seeds[i],
                                stop_token_ids=stops, ignore_eos=ignore_eos)
        row[engine.submit(ids, params)] = i
    results = [GenerationResult("", [], "length", len(ids), 0) for ids in encoded]
    while engine.has_work():
        for ev in engine.step():
            i = row[ev.rid]
            r = results[i]
            if ev.token_id is not None:
                r.token_ids.append(ev.token_id)
            if ev.text:
                r.text += ev.text
                if on_token is not None:
                    on_token(i, ev.text)
            if ev.finish_reason is not None:
                r.finish_reason, r.completion_tokens = ev.finish_reason, ev.completion_tokens
    return results
