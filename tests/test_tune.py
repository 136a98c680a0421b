"""`primer tune`: assistant masks, packing, bad input, exact resume, LoRA merge, DPO's cached reference.

A tiny primer checkpoint (the debug shape, a byte-level BPE trained here, no chat template) stands in
for a pretrained model: tune gives it ChatML. The bundled SmolLM2 tokenizer checks masks on a real
template.
"""

import json
import shutil

import pytest
import torch
import torch.nn.functional as F

from primer.cli import main as cli_main
from primer.model.tokenizer import Tokenizer
from primer.model.transformer import ModelConfig, Transformer
from primer.tune import DPOConfig, SFTConfig, dpo, sft
from primer.tune.chat import CHATML_TOKENS, encode_chat, ensure_chat_template
from primer.tune.data import SFTBatches
from primer.tune.preference import REF_CACHE, preference_loss, sequence_logps
from primer.weights.checkpoint import load_checkpoint, save_checkpoint

TEXT = ["the cat sat on the mat", "what is two plus two", "two plus two is four", "name a colour", "blue is a colour"]


def chats(n=12):
    out = []
    for i in range(n):
        turns = [{"role": "user", "content": f"what is {i} plus {i}"}, {"role": "assistant", "content": f"{i} plus {i} is {2 * i}"}]
        if i % 3 == 0:
            turns += [{"role": "user", "content": "and twice that"}, {"role": "assistant", "content": f"it is {4 * i}"}]
        out.append({"messages": turns})
    return out


def write_jsonl(path, rows, extra_lines=()):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "".join(x + "\n" for x in extra_lines))
    return str(path)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A debug-shape primer checkpoint with a BPE tokenizer and no chat template."""
    import tokenizers
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tk = tokenizers.Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator(TEXT * 20, trainer=trainer)
    tok = Tokenizer(tk, bos_token="<|endoftext|>", eos_token="<|endoftext|>")
    torch.manual_seed(0)
    model = Transformer(ModelConfig.from_name("debug", vocab_size=448, block_size=128))
    d = tmp_path_factory.mktemp("base")
    save_checkpoint(d, model, tokenizer=tok)
    return d


def sft_cfg(base, out, data, **kw):
    kw = {"model": str(base), "data": [data], "out_dir": str(out), "max_steps": 6, "batch_size": 4, "lr": 1e-3,
          "max_seq_len": 64, "schedule": "constant", "progress": False, "save_every": 3, "keep_checkpoints": 5,
          "device": "cpu", **kw}
    return SFTConfig(**kw)


def losses(out):
    return {r["step"]: r["loss"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "loss" in r}


def test_chatml_is_added_to_a_model_without_a_template(base):
    ck = load_checkpoint(base)
    assert ck.tokenizer.chat_template is None
    model, tok, changed = ensure_chat_template(ck.model, ck.tokenizer)
    assert changed and all(tok.token_to_id(t) is not None for t in CHATML_TOKENS)
    assert model.cfg.vocab_size >= tok.vocab_size and model.cfg.vocab_size % 64 == 0
    assert torch.equal(model.embed.weight[:448], ck.model.embed.weight)  # old rows untouched
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True)
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert tok.encode(text, add_special_tokens=False)[0] == tok.token_to_id("<|im_start|>")


def test_assistant_mask_is_reply_plus_end_of_turn_on_the_bundled_template(bundled_gguf):
    from gguf import GGUFReader

    tok = Tokenizer.from_gguf(GGUFReader(bundled_gguf))
    msgs = [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "Count to 3."}, {"role": "assistant", "content": "1, 2, 3."}]
    e = encode_chat(tok, msgs)
    trained = [tok.decode([i for i, m in zip(e.ids, e.mask) if m])]
    assert trained == ["Hello!<|im_end|>\n1, 2, 3.<|im_end|>\n"]
    # the same split TRL's prompt-completion tokenization makes: prompt ids, then the completion's
    prompt = tok.apply_chat_template(msgs[:3], add_generation_prompt=True, tokenize=True)
    assert e.ids[: len(prompt)] == prompt and all(e.mask[len(prompt):]) and not any(e.mask[len(prompt) - 3: len(prompt)])


def test_packed_batch_gives_each_conversation_its_unpacked_loss(base):
    ck = load_checkpoint(base)
    model, tok, _ = ensure_chat_template(ck.model, ck.tokenizer)
    examples = [encode_chat(tok, c["messages"]) for c in chats(6)]
    packed = SFTBatches(examples, seq_len=128, batch_size=2, micro_batch_size=2, packing=True, shuffle=False)
    rows = packed.rows(0)
    assert max(len(r) for r in rows) > 1  # several conversations share a row
    x, y, pos, mask, _, _ = packed.micro_batches(0)[0]
    with torch.no_grad():
        per_tok = F.cross_entropy(model(x, pos=pos, attn_mask=mask).transpose(1, 2), y, ignore_index=-100, reduction="none")
        for b, row in enumerate(rows):
            at = 0
            for i in row:
                n = len(examples[i].ids) - 1
                alone_x = torch.tensor([examples[i].ids[:-1]])
                alone_y = torch.tensor([[t if m else -100 for t, m in zip(examples[i].ids[1:], examples[i].mask[1:])]])
                alone = F.cross_entropy(model(alone_x).transpose(1, 2), alone_y, ignore_index=-100, reduction="none")
                assert torch.allclose(per_tok[b, at: at + n], alone[0], atol=1e-5), (b, i)
                at += n


def test_logits_at_trained_positions_only_are_the_full_ones(base):
    """SFT and DPO ask the model for logits at the assistant tokens only (`select`): the same numbers as the
    full (B, T, vocab) logits at those positions, so the losses are unchanged and the rest is never built."""
    ck = load_checkpoint(base)
    model, tok, _ = ensure_chat_template(ck.model, ck.tokenizer)
    examples = [encode_chat(tok, c["messages"]) for c in chats(4)]
    x, y, pos, mask, _, _ = SFTBatches(examples, seq_len=64, batch_size=4, micro_batch_size=4, packing=True,
                                       shuffle=False).micro_batches(0)[0]
    sel = y != -100
    with torch.no_grad():
        full = model(x, pos=pos, attn_mask=mask)
        some = model(x, pos=pos, attn_mask=mask, select=sel)
        assert some.shape == (int(sel.sum()), full.shape[-1])
        assert torch.allclose(some, full[sel], atol=1e-5)
        x, y = x[:, :20], y[:, :20]  # unpacked rows for the DPO sum, one row with no trained token
        y[0] = -100
        lp, n = sequence_logps(model, x, y)
        want = -F.cross_entropy(model(x).transpose(1, 2), y, ignore_index=-100, reduction="none").sum(-1)
    assert torch.allclose(lp, want, atol=1e-4) and n.tolist() == (y != -100).sum(-1).tolist() and lp[0] == 0


def test_chunked_log_probs_have_the_plain_gradients(base, monkeypatch):
    """`target_logps` applies the head a few rows at a time and again in backward: the same log-probs and the
    same gradients (weights, tied head included) as the one-piece logits."""
    import primer.model.loss
    import primer.tune.logps as L

    ck = load_checkpoint(base)
    model, tok, _ = ensure_chat_template(ck.model, ck.tokenizer)
    model.double()
    x, y, pos, mask, _, _ = SFTBatches([encode_chat(tok, c["messages"]) for c in chats(4)], seq_len=64, batch_size=4,
                                       micro_batch_size=4, packing=False, shuffle=False).micro_batches(0)[0]
    monkeypatch.setattr(primer.model.loss, "CPU_CHUNK_ELEMS", 7 * model.cfg.vocab_size)  # several chunks, the last short
    monkeypatch.setattr(primer.model.loss, "CPU_MIN_ROWS", 1)
    got = {}
    for fused in (True, False):
        model.zero_grad()
        lp, sel = L.target_logps(model, x, y, fused=fused)
        (lp * torch.linspace(0.5, 2.0, len(lp), dtype=lp.dtype)).sum().backward()
        got[fused] = lp.detach(), {k: p.grad.clone() for k, p in model.named_parameters()}
    assert sel.sum() > 14 and torch.allclose(got[True][0], got[False][0], atol=1e-10)
    for k, g in got[False][1].items():
        assert torch.allclose(got[True][1][k], g, atol=1e-9), k


def test_chunked_log_probs_under_bf16_autocast_are_the_plain_ones(base):
    """Under autocast the head's matmul is bf16 in both paths and the log-softmax fp32 (autocast had left the fused
    path's logsumexp in bf16: errors of ~0.03 a token, nats over a reply); backward redoes the head under the same
    autocast, so its gradients are the plain path's within bf16 rounding."""
    import primer.tune.logps as L

    ck = load_checkpoint(base)
    model, tok, _ = ensure_chat_template(ck.model, ck.tokenizer)
    x, y, pos, mask, _, _ = SFTBatches([encode_chat(tok, c["messages"]) for c in chats(4)], seq_len=64, batch_size=4,
                                       micro_batch_size=4, packing=False, shuffle=False).micro_batches(0)[0]
    got = {}
    for fused in (True, False):
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            lp, sel = L.target_logps(model, x, y, fused=fused)
        lp.sum().backward()
        got[fused] = lp.detach(), model.lm_head.weight.grad.clone()
    assert got[True][0].dtype == torch.float32
    assert (got[True][0] - got[False][0]).abs().max() < 2e-3
    gf, gp = got[True][1], got[False][1]
    assert (gf - gp).norm() / gp.norm() < 2e-2


def test_sft_trains_and_resumes_exactly_after_a_kill(base, tmp_path):
    data = write_jsonl(tmp_path / "c.jsonl", chats())
    full = tmp_path / "full"
    s = sft(sft_cfg(base, full, data, packing=True))
    a = losses(full)
    assert s.steps == 6 and a[6] < a[1]
    ck = load_checkpoint(full / "checkpoints" / "step_0000006")
    assert ck.tokenizer.chat_template is not None and ck.meta["user"]["tune"] == "sft"
    from primer.eval.lm import PrimerLM  # the tuned checkpoint is a chat model `primer eval` can run

    lm = PrimerLM.load(str(full / "checkpoints" / "step_0000006"))
    prompt = lm.chat_prompt([{"role": "user", "content": "what is 1 plus 1"}])
    assert prompt.endswith("<|im_start|>assistant\n") and isinstance(lm.generate([prompt], max_tokens=4)[0], str)
    # "killed" after step 3: keep only that checkpoint and rerun the same command
    part = tmp_path / "part"
    shutil.copytree(full, part)
    shutil.rmtree(part / "checkpoints" / "step_0000006")
    sft(sft_cfg(base, part, data, packing=True))
    b = losses(part)
    assert list(b) == list(range(1, 7))
    for step in range(4, 7):
        assert b[step] == pytest.approx(a[step], abs=1e-6)
    wa = load_checkpoint(full / "checkpoints" / "step_0000006").model.state_dict()
    wb = load_checkpoint(part / "checkpoints" / "step_0000006").model.state_dict()
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)


def test_bad_input_is_counted_and_named(base, tmp_path):
    rows = chats(4) + [
        {"messages": [{"role": "user", "content": "no reply"}]},
        {"messages": [{"role": "wizard", "content": "x"}, {"role": "assistant", "content": "y"}]},
        {"messages": [{"role": "user", "content": "long " * 200}, {"role": "assistant", "content": "ok"}]},
        {"conversations": [{"from": "human", "value": "name a colour"}, {"from": "gpt", "value": "blue"}]},
    ]
    data = write_jsonl(tmp_path / "bad.jsonl", rows, ["{broken"])
    s = sft(sft_cfg(base, tmp_path / "o", data, max_steps=1, overlong="drop", max_seq_len=128))
    d = s.data
    assert d["used"] == 5 and d["dropped"] == 4
    why = " | ".join(d["dropped_examples"])
    for needle in ("bad.jsonl:5: no assistant turn", "bad.jsonl:6: messages[0] has unknown role 'wizard'",
                   "bad.jsonl:7:", "over max_seq_len 128 (drop)", "bad.jsonl:9: malformed JSON"):
        assert needle in why, why
    assert json.loads((tmp_path / "o" / "data.json").read_text())["dropped"] == 4
    # the assistant reply survives a cut at the end only when the cut leaves some of it: the long prompt cannot
    s = sft(sft_cfg(base, tmp_path / "t", data, max_steps=1, overlong="truncate", max_seq_len=128))
    assert s.data["dropped"] == 4 and s.data["truncated"] == 0


def test_sft_on_scored_pairs_keeps_verified_replies_only(base, tmp_path):
    """Rejection sampling: SFT reads a pair as prompt + chosen, and a record synth scored (it has candidates) only
    through a reply that passed every check and ended; the others are dropped, counted and named."""
    from primer.tune.chat import conversation

    def scored(prompt, cands, scores, ended, how="ifeval_checkers", **kw):
        return {"prompt": prompt, "candidates": cands, "scores": scores, "ended": ended, "scored_by": how, **kw}

    rows = [
        {"prompt": "name a colour", "chosen": "blue", "rejected": "cat"},  # a hand-made pair: its chosen
        scored("what is two plus two", ["4", "four", "five"], [1.0, 1.0, 0.0], [True, True, True],
               chosen="four", rejected="five"),  # the first reply that passed
        scored("say it in capitals", ["OK", "ok"], [1.0, 1.0], [False, True], reason="no_contrast"),  # first that ended
        scored("two plus two", ["four four four", "five"], [1.0, 0.0], [False, True],
               chosen="four four four", rejected="five"),  # passed but cut at the limit
        scored("name a cat", ["tom", "x"], [0.5, 0.0], [True, True], chosen="tom", rejected="x"),  # half passed
        scored("the mat", ["a", "b"], [9.0, 2.0], [True, True], how="teacher_judge", chosen="a", rejected="b"),
    ]
    assert [conversation(r)[-1]["content"] for r in rows[:3]] == ["blue", "4", "ok"]
    data = write_jsonl(tmp_path / "pairs.jsonl", rows)
    d = sft(sft_cfg(base, tmp_path / "o", data, max_steps=1)).data
    assert d["used"] == 3 and d["dropped"] == 3
    for line, how in ((4, "ifeval_checkers"), (5, "ifeval_checkers"), (6, "teacher_judge")):
        assert any(x.startswith(f"{data}:{line}: no sampled reply passed every check of its verifier ({how})")
                   for x in d["dropped_examples"]), d["dropped_examples"]


def test_epochs_decide_the_steps(base, tmp_path, capsys):
    """--epochs replaces --max-steps: ceil(epochs x rows of an epoch / batch size); an SFT row is a conversation
    (with packing, a packed row: fewer of them), a DPO row a pair. A step budget that repeats the data more than
    TRL's default 3 epochs says so."""
    data = write_jsonl(tmp_path / "c.jsonl", chats(12))
    sft(sft_cfg(base, tmp_path / "m", data, max_steps=5, progress=True))
    assert "passes over" not in capsys.readouterr().out  # 20 rows of 12: under 3 epochs, nothing said
    sft(sft_cfg(base, tmp_path / "n", data, max_steps=12, progress=True))
    out = capsys.readouterr().out
    assert "primer tune: 12 steps of 4 are 4 passes over the 12 rows of this data; --epochs N" in out
    s = sft(sft_cfg(base, tmp_path / "a", data, epochs=2.0, max_steps=1, save_every=100))
    assert s.steps == 6 and (tmp_path / "a" / "checkpoints" / "step_0000006").is_dir()
    rows = json.loads((tmp_path / "a" / "metrics.jsonl").read_text().splitlines()[-1])
    assert rows["step"] == 6 and rows["epoch"] == pytest.approx(2.0)
    packed = sft(sft_cfg(base, tmp_path / "p", data, epochs=1.0, packing=True, max_seq_len=128))
    # 12 conversations pack into 8 rows of 128 tokens: 2 steps of 4 rows (not 3), the 733 tokens of one epoch
    assert packed.steps == 2 and packed.tokens == 733
    pairs = [{"prompt": f"what is {i} plus {i}", "chosen": f"{2 * i}", "rejected": f"{2 * i + 1}"} for i in range(10)]
    d = dpo(DPOConfig(model=str(base), data=[write_jsonl(tmp_path / "p.jsonl", pairs)], out_dir=str(tmp_path / "d"),
                      epochs=1.5, batch_size=4, progress=False, device="cpu"))
    assert d.steps == 4  # 15 pairs' worth in steps of 4


def test_cli_says_what_is_wrong_and_exits_2(base, tmp_path, capsys):
    only_bad = write_jsonl(tmp_path / "none.jsonl", [{"messages": [{"role": "user", "content": "x"}]}])
    rc = cli_main(["tune", "sft", str(base), "--data", only_bad, "--out-dir", str(tmp_path / "o"), "--no-progress"])
    assert rc == 2 and "no usable examples" in capsys.readouterr().err
    pairs = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "q", "chosen": "same", "rejected": "same"}])
    rc = cli_main(["tune", "dpo", str(base), "--data", pairs, "--out-dir", str(tmp_path / "d"), "--no-progress"])
    assert rc == 2 and "chosen equals rejected" in capsys.readouterr().err


def test_lora_trains_adapters_only_and_checkpoints_merged_weights(base, tmp_path):
    data = write_jsonl(tmp_path / "c.jsonl", chats())
    out = tmp_path / "lora"
    s = sft(sft_cfg(base, out, data, lora_rank=4, lora_alpha=8.0, max_steps=4, save_every=2, lr=1e-2))
    info = json.loads((out / "config.json").read_text())
    assert 0 < info["trainable_params"] < info["num_params"] / 10
    merged = load_checkpoint(out / "checkpoints" / "step_0000004").model
    orig = load_checkpoint(base).model
    assert not torch.allclose(merged.blocks[0].attn.q_proj.weight, orig.blocks[0].attn.q_proj.weight)
    assert torch.equal(merged.blocks[0].attn_norm.weight, orig.blocks[0].attn_norm.weight)  # not a LoRA target
    state = torch.load(out / "checkpoints" / "step_0000004" / "trainer.pt", weights_only=False)
    assert state["lora"] and all(".lora_" in k for k in state["lora"])
    assert s.final_loss is not None
    # killed after step 2: the base comes from MODEL again, the adapters and optimizer from the checkpoint
    part = tmp_path / "part"
    shutil.copytree(out, part)
    shutil.rmtree(part / "checkpoints" / "step_0000004")
    sft(sft_cfg(base, part, data, lora_rank=4, lora_alpha=8.0, max_steps=4, save_every=2, lr=1e-2))
    assert losses(part) == pytest.approx(losses(out), abs=1e-6)
    again = load_checkpoint(part / "checkpoints" / "step_0000004").model
    assert torch.allclose(again.blocks[0].attn.q_proj.weight, merged.blocks[0].attn.q_proj.weight, atol=1e-6)


def test_dpo_caches_reference_and_reports_rewards(base, tmp_path):
    data = write_jsonl(tmp_path / "c.jsonl", chats())
    sft(sft_cfg(base, tmp_path / "sft", data, max_steps=3))
    model = tmp_path / "sft" / "checkpoints" / "step_0000003"
    pairs = [{"prompt": f"what is {i} plus {i}", "chosen": f"{i} plus {i} is {2 * i}", "rejected": f"it is {2 * i + 1}"}
             for i in range(8)]
    pdata = write_jsonl(tmp_path / "p.jsonl", pairs)
    cfg = DPOConfig(model=str(model), data=[pdata], out_dir=str(tmp_path / "dpo"), max_steps=4, batch_size=4,
                    lr=1e-3, schedule="constant", save_every=2, keep_checkpoints=5, progress=False, device="cpu")
    dpo(cfg)
    rows = [json.loads(x) for x in (tmp_path / "dpo" / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["loss"] == pytest.approx(0.6931, abs=2e-3)  # policy == reference at step 1: -log sigmoid(0)
    for k in ("reward_margin", "reward_accuracy", "reward_chosen", "reward_rejected", "logps_chosen", "logps_rejected"):
        assert k in rows[-1]
    assert rows[-1]["reward_margin"] > rows[0]["reward_margin"] and rows[-1]["loss"] < rows[0]["loss"]
    cache = tmp_path / "dpo" / REF_CACHE
    assert torch.load(cache, weights_only=True)["logps"].shape == (8, 2)
    # resume after step 2: the reference comes from the cache, the steps after it repeat exactly
    part = tmp_path / "part"
    shutil.copytree(tmp_path / "dpo", part)
    shutil.rmtree(part / "checkpoints" / "step_0000004")
    dpo(DPOConfig(**{**cfg.__dict__, "out_dir": str(part)}))
    b = [json.loads(x) for x in (part / "metrics.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in b] == pytest.approx([r["loss"] for r in rows], abs=1e-6)
    cache.unlink()
    shutil.rmtree(tmp_path / "dpo" / "checkpoints" / "step_0000004")
    with pytest.raises(Exception, match="reference log-probs"):
        dpo(cfg)


def test_preference_losses_match_their_formulas():
    pc, pr, rc, rr = torch.tensor([-4.0]), torch.tensor([-6.0]), torch.tensor([-5.0]), torch.tensor([-5.5])
    loss, margin = preference_loss("sigmoid", 0.1, pc, pr, rc, rr, torch.tensor([4]), torch.tensor([2]))
    assert margin.item() == pytest.approx(0.1 * ((1.0) - (-0.5)))
    assert loss.item() == pytest.approx(-F.logsigmoid(torch.tensor(0.15)).item())
    loss, _ = preference_loss("ipo", 0.1, pc, pr, rc, rr, torch.tensor([4]), torch.tensor([2]))
    assert loss.item() == pytest.approx((1.0 / 4 - (-0.5) / 2 - 1 / 0.2) ** 2)


@pytest.mark.slow
def test_two_gloo_processes_match_one(base, tmp_path):
    """`torchrun` DDP on 2 CPU processes: the same per-step SFT losses (token mean over the global batch) as 1 process."""
    import os
    import subprocess
    import sys

    data = write_jsonl(tmp_path / "c.jsonl", chats())
    sft(sft_cfg(base, tmp_path / "one", data, packing=True, threads=1))
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "primer", "tune",
           "sft", str(base), f"--data={data}", f"--out-dir={out}", "--max-steps=6", "--batch-size=4", "--lr=1e-3",
           "--max-seq-len=64", "--schedule=constant", "--no-progress", "--save-every=3", "--device=cpu",
           "--threads=1", "--packing"]
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]
    a, b = losses(tmp_path / "one"), losses(out)
    assert list(a) == list(b)
    for step in a:
        assert b[step] == pytest.approx(a[step], abs=1e-5), (step, a, b)
