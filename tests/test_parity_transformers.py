"""Parity with transformers loading the same bundled GGUF (both dequantized, fp32).

max |logit difference| <= 1e-3 over 20 prompts, and our greedy 64-token continuations are
transformers' own greedy choices (checked teacher-forced: at every step transformers' argmax is
the token we generated, which is what its greedy decoding would produce) on at least 19 of 20.
"""

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("accelerate", reason="transformers needs accelerate to load GGUF files")

PROMPTS = [
    "The history of the printing press",
    "Photosynthesis is the process by which",
    "def fibonacci(n):",
    "The capital of Australia is",
    "Once upon a time, in a small village,",
    "Water boils at 100 degrees Celsius because",
    "The three laws of motion are",
    "A good way to learn a new language is",
    "In 1969, astronauts",
    "The mitochondria is",
    "To make a cup of tea, first",
    "Prime numbers are",
    "The French Revolution began",
    "Machine learning models learn from",
    "The largest planet in our solar system",
    "Shakespeare wrote",
    "An apple a day",
    "The Pythagorean theorem states that",
    "Climate change is caused by",
    "My favourite recipe for pancakes",
]


@pytest.fixture(scope="module")
def models():
    from transformers import AutoModelForCausalLM

    from primer.weights.bundled import bundled_gguf_path
    from primer.errors import PrimerError
    from primer.weights.load import load_model

    try:
        path = bundled_gguf_path()
    except PrimerError as e:
        pytest.skip(str(e))
    ours = load_model("bundled")
    hf = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()
    return ours, hf


@pytest.mark.slow
def test_logits_and_greedy_continuations_match_transformers(models):
    from primer.model.generate import generate

    (model, tok, _), hf = models
    worst, same = 0.0, 0
    conts = generate((model, tok), PROMPTS, max_new_tokens=64, fast=False, ignore_eos=True, batch_size=20)
    for prompt, cont in zip(PROMPTS, conts):
        ids = torch.tensor([tok.encode(prompt)])
        with torch.no_grad():
            ours = model(ids)
            theirs = hf(ids).logits
        worst = max(worst, float((ours - theirs).abs().max()))
        full = torch.tensor([tok.encode(prompt) + cont.token_ids])
        with torch.no_grad():
            hf_choice = hf(full).logits[0, ids.shape[1] - 1: -1].argmax(-1)
        same += hf_choice.tolist() == cont.token_ids
    print(f"transformers parity: max |delta logit| {worst:.2e}, identical greedy continuations {same}/20")
    assert worst <= 1e-3, f"max |delta logit| {worst:.2e}"
    assert same >= 19, f"identical greedy continuations on {same}/20 prompts"
