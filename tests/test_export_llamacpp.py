"""What `primer export` writes, llama.cpp runs as primer does (llama-cpp-python on the same files).

Both block shapes go checkpoint -> `primer export --quant f16` -> llama.cpp, compared with primer's
own forward of the checkpoint: teacher-forced top-1 agreement >= 99% over >= 1,000 WikiText-2
positions and identical greedy continuations on >= 9 of 10 prompts. The Llama shape is the real
SmolLM2-135M-Instruct saved as a primer checkpoint; the phi shape is a small phi-1.5-style model
trained here for 200 steps on the TinyStories sample (random weights would make every position a
near-tie). llama.cpp also tokenizes and renders the chat template exactly as primer does. llama.cpp runs
on its plain CPU path (`primer.weights.llamacpp.open_llama`: its AMX path is wrong for 4-bit weights).
"""

from pathlib import Path

import numpy as np
import pytest
import torch

llama_cpp = pytest.importorskip("llama_cpp")

from primer.cli import main as cli_main  # noqa: E402
from primer.model.generate import generate  # noqa: E402
from primer.weights.checkpoint import save_checkpoint  # noqa: E402
from primer.weights.llamacpp import open_llama  # noqa: E402
from primer.weights.load import load_model  # noqa: E402

WINDOW, WINDOWS = 256, 4  # 4 x 255 = 1,020 predicted positions
PROMPTS = ["The history of the city", "In 1998, the band", "The species is found in", "He was born in",
           "The game was released", "Photosynthesis is", "Once upon a time", "The river flows",
           "During the war, the", "The album received"]


def llama(path, **kw):
    return open_llama(path, n_ctx=WINDOW, n_batch=WINDOW, n_threads=2, seed=0, verbose=False, **kw)


def teacher_forced_top1(model, llm, ids: list[int]) -> tuple[float, int]:
    agree = n = 0
    for w in range(WINDOWS):
        window = ids[w * WINDOW: (w + 1) * WINDOW]
        llm.reset()
        llm.eval(window)
        theirs = torch.from_numpy(np.array(llm.scores[: len(window)], dtype=np.float32))[:-1]
        with torch.no_grad():
            ours = model(torch.tensor([window]))[0][:-1]
        agree += int((ours.argmax(-1) == theirs.argmax(-1)).sum())
        n += ours.shape[0]
    return agree / n, n


def greedy_same(model, tok, llm, max_tokens: int = 24) -> int:
    same = 0
    for p in PROMPTS:
        [ours] = generate((model, tok), [p], max_new_tokens=max_tokens, temperature=0.0, fast=False)
        theirs = llm.create_completion(p, max_tokens=max_tokens, temperature=0.0, top_k=1)["choices"][0]["text"]
        same += ours.text == theirs
    return same


def check_agreement(ckpt, tmp_path, data_dir) -> None:
    out = tmp_path / "model-f16.gguf"
    assert cli_main(["export", str(ckpt), "--quant", "f16", "-o", str(out)]) == 0
    model, tok, _ = load_model(ckpt)
    text = (data_dir / "wikitext2" / "wikitext-2-raw-test.txt").read_text(encoding="utf-8")[:60_000]
    ids = tok.encode(text, add_special_tokens=False)
    llm = llama(out, logits_all=True)
    try:
        top1, n = teacher_forced_top1(model, llm, ids)
        same = greedy_same(model, tok, llm)
        # llama.cpp splits text into the same ids (special tokens parsed, no BOS added by either)
        sample = text[:4000] + "<|im_start|>user\nhi<|im_end|>"
        assert llm.tokenize(sample.encode(), add_bos=False, special=True) == tok.encode(sample, add_special_tokens=False)
    finally:
        llm.close()
    print(f"{ckpt.name}: top-1 agreement {top1:.4f} over {n} positions, greedy identical on {same}/10")
    assert n >= 1000 and top1 >= 0.99, top1
    assert same >= 9, same


@pytest.mark.slow
def test_llama_shape_checkpoint_runs_in_llama_cpp(tmp_path, data_dir, bundled_gguf):
    model, tok, _ = load_model(bundled_gguf)
    ckpt = save_checkpoint(tmp_path / "smollm2", model, tok)
    check_agreement(ckpt, tmp_path, data_dir)


@pytest.mark.slow
def test_phi_shape_checkpoint_runs_in_llama_cpp(tmp_path, data_dir):
    from primer.tokens.bpe import train_bpe
    from primer.tokens.shards import write_token_dir
    from primer.train import TrainConfig, train

    stories = [s for s in (data_dir / "tinystories" / "TinyStories-train_prefix.txt").read_text().split("<|endoftext|>") if s.strip()]
    tok = train_bpe(stories[:1500], 1024)
    ids = np.array([i for s in stories[:1500] for i in tok.encode(s) + [tok.eos_id]], dtype=np.int64)
    write_token_dir(tmp_path / "tokens", tok, {"train": ids, "val": ids[:5000]})
    cfg = TrainConfig(data=str(tmp_path / "tokens"), out_dir=str(tmp_path / "run"), model="debug-phi",
                      model_overrides=dict(n_embd=128, n_head=4, n_layer=2, intermediate_size=512, block_size=256),
                      seq_len=128, batch_size=16, max_steps=200, lr=3e-3, warmup_steps=10, eval_every=0,
                      save_every=0, progress=False, threads=2, seed=0)
    s = train(cfg)
    assert s.final_loss < 4.5  # it learned something: not a near-uniform model
    check_agreement(Path(s.checkpoint), tmp_path, data_dir)


@pytest.mark.slow
def test_four_bit_export_and_chat_template_in_llama_cpp(tmp_path, bundled_gguf):
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    out = tmp_path / "smol-q4_0.gguf"
    assert cli_main(["export", "bundled", "--quant", "q4_0", "-o", str(out)]) == 0
    model, tok, _ = load_model(out)  # primer reads the 4-bit file it wrote
    llm = llama(out, logits_all=True)
    try:
        ids = tok.encode("The tower is 324 metres tall, about the same height as an 81-storey building. " * 6,
                         add_special_tokens=False)[:WINDOW]
        llm.reset()
        llm.eval(ids)
        theirs = torch.from_numpy(np.array(llm.scores[: len(ids)], dtype=np.float32))
        with torch.no_grad():
            ours = model(torch.tensor([ids]))[0]
        # llama.cpp multiplies 4-bit weights with 8-bit activations: argmaxes part only at near-ties
        assert (ours.argmax(-1) == theirs.argmax(-1)).float().mean() >= 0.95
        messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi!"},
                    {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "2+2?"}]
        meta = llm.metadata
        fmt = Jinja2ChatFormatter(meta["tokenizer.chat_template"], eos_token=tok.eos_token, bos_token=tok.bos_token)
        assert fmt(messages=messages).prompt == tok.apply_chat_template(messages, add_generation_prompt=True)
    finally:
        llm.close()
