"""`primer tune` against TRL (SFTTrainer, DPOTrainer) on the same model, data and order: losses and speed.

Both sides load one HF model dir that primer exports, read the same conversations in the same order
(file order; TRL's sampler is made sequential), fp32, constant learning rate, AdamW (0.9, 0.999, 1e-8,
no weight decay), gradient clipping at 1.0, no packing:
  * SFT: TRL's conversational prompt-completion examples, loss on the completion only (= primer's
    assistant-only loss for single-turn conversations);
  * DPO: sigmoid, beta 0.1, `precompute_ref_log_probs=True` (primer always caches them).

    python bench/tune.py parity --model tiny --steps 20            # per-step loss / reward margin, ours vs TRL
    python bench/tune.py speed --model bundled --steps 6 --repeats 3   # SFT tokens/s + peak RSS, DPO s/step
    python bench/tune.py speed --model bundled --dtype bf16            # both sides in bf16 autocast (AMX CPUs)

Speed runs each side in its own process (peak RSS is the process's), median of --repeats, and ends
with one JSON line {"ours": ..., "ref": ..., "ratio": ...} per measured quantity.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TOPICS = ["the water cycle", "photosynthesis", "prime numbers", "the French revolution", "volcanoes", "magnetism",
          "fractions", "the moon", "electric circuits", "gravity", "cells", "the alphabet", "rainbows", "sound",
          "ecosystems", "the heart"]


def conversations(n: int = 32) -> list[dict]:
    """n single-turn conversations (prompt + completion messages, and the same as one `messages` list)."""
    out = []
    for i in range(n):
        t = TOPICS[i % len(TOPICS)]
        q = f"Explain {t} to a student in {'one' if i % 2 else 'two'} sentence{'s' if i % 2 == 0 else ''}."
        a = (f"{t.capitalize()} is a topic in science lessons number {i}. " * (1 + i % 3)).strip()
        out.append({"prompt": [{"role": "user", "content": q}], "completion": [{"role": "assistant", "content": a}]})
    return out


def pairs(n: int = 32) -> list[dict]:
    out = []
    for i, c in enumerate(conversations(n)):
        wrong = f"I do not know anything about {TOPICS[(i + 5) % len(TOPICS)]}, sorry."
        out.append({"prompt": c["prompt"], "chosen": c["completion"], "rejected": [{"role": "assistant", "content": wrong}]})
    return out


def export_model(which: str, out: Path) -> Path:
    """An HF dir: 'tiny' (the debug shape, SmolLM2's tokenizer and template, random init) or 'bundled' (fp32)."""
    import torch

    from primer.weights.hf import save_hf_dir
    from primer.weights.load import load_model

    ck = load_model("bundled")
    model = ck.model
    if which == "tiny":
        from primer.model.transformer import ModelConfig, Transformer

        torch.manual_seed(0)
        model = Transformer(ModelConfig.from_name("debug", vocab_size=ck.model.cfg.vocab_size, block_size=512,
                                                  n_embd=64, n_head=4, n_kv_head=2, tie_embeddings=True))
    save_hf_dir(model, ck.tokenizer, out, dtype=torch.float32)
    return out


COMMON = dict(lr=1e-4, schedule="constant", warmup_steps=0, weight_decay=0.0, beta1=0.9, beta2=0.999, eps=1e-8,
              grad_clip=1.0, dtype="fp32", device="cpu", shuffle=False, progress=False, log_every=1, save_every=10_000,
              resume=False, seed=0)


def ours(task: str, model_dir: Path, data: Path, out: Path, steps: int, batch: int, dtype: str = "fp32") -> list[dict]:
    from primer.tune import DPOConfig, SFTConfig, dpo, sft

    common = {**COMMON, "dtype": dtype}
    if task == "sft":
        sft(SFTConfig(model=str(model_dir), data=[str(data)], out_dir=str(out), max_steps=steps, batch_size=batch,
                      max_seq_len=512, **common))
    else:
        dpo(DPOConfig(model=str(model_dir), data=[str(data)], out_dir=str(out), max_steps=steps, batch_size=batch,
                      max_seq_len=512, beta=0.1, loss="sigmoid", ref_batch_size=batch, **common))
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def trl(task: str, model_dir: Path, rows: list[dict], out: Path, steps: int, batch: int, dtype: str = "fp32") -> list[dict]:
    import torch
    from datasets import Dataset
    from torch.utils.data import SequentialSampler
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(model_dir)
    common = dict(output_dir=str(out), max_steps=steps, per_device_train_batch_size=batch, learning_rate=COMMON["lr"],
                  lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, adam_beta1=0.9, adam_beta2=0.999,
                  adam_epsilon=1e-8, max_grad_norm=1.0, logging_steps=1, report_to=[], seed=0,
                  # a checkpoint (weights + optimizer) at the last step, as primer writes one: same work, same memory
                  save_strategy="steps", save_steps=steps,
                  bf16=dtype == "bf16", fp16=False, use_cpu=True, dataloader_drop_last=False, disable_tqdm=True)
    ds = Dataset.from_list(rows)
    if task == "sft":
        from trl import SFTConfig, SFTTrainer

        class Trainer(SFTTrainer):
            def _get_train_sampler(self, train_dataset=None):
                return SequentialSampler(train_dataset or self.train_dataset)

        args = SFTConfig(**common, packing=False, completion_only_loss=True, max_length=512)
    else:
        from trl import DPOConfig, DPOTrainer

        class Trainer(DPOTrainer):
            def _get_train_sampler(self, train_dataset=None):
                return SequentialSampler(train_dataset or self.train_dataset)

        args = DPOConfig(**common, beta=0.1, loss_type=["sigmoid"], precompute_ref_log_probs=True, max_length=512)
    from transformers import TrainerCallback

    ends: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, *a, **kw):
            ends.append(time.perf_counter())

    t = Trainer(model=model, args=args, train_dataset=ds, processing_class=tok, callbacks=[Clock()])
    t0 = time.perf_counter()
    t.train()
    rows = [h for h in t.state.log_history if "loss" in h]
    for r, e in zip(rows, ends):
        r["elapsed_s"] = e - t0
    return rows


# ------------------------------------------------------------------------------------------- parity


def parity(model: str, steps: int, batch: int = 8, work: Path | None = None) -> dict:
    """Per-step SFT loss and DPO loss / reward margin, primer vs TRL, and the largest relative differences."""
    work = Path(work or tempfile.mkdtemp(prefix="primer-bench-tune-"))
    mdir = export_model(model, work / "hf")
    res: dict = {"bench": "tune-parity", "model": model, "steps": steps, "batch": batch}
    chats = conversations(32)
    sft_file = work / "chats.jsonl"
    sft_file.write_text("".join(json.dumps({"messages": c["prompt"] + c["completion"]}) + "\n" for c in chats))
    a = ours("sft", mdir, sft_file, work / "ours-sft", steps, batch)
    b = trl("sft", mdir, chats, work / "trl-sft", steps, batch)
    res["sft"] = {"ours": [r["loss"] for r in a], "trl": [r["loss"] for r in b]}
    pr = pairs(32)
    dpo_file = work / "pairs.jsonl"
    dpo_file.write_text("".join(json.dumps(p) + "\n" for p in pr))
    a = ours("dpo", mdir, dpo_file, work / "ours-dpo", steps, batch)
    b = trl("dpo", mdir, pr, work / "trl-dpo", steps, batch)
    res["dpo"] = {"ours": [r["loss"] for r in a], "trl": [r["loss"] for r in b],
                  "ours_margin": [r["reward_margin"] for r in a], "trl_margin": [r["rewards/margins"] for r in b]}

    def worst(x, y, floor):
        return max(abs(p - q) / max(abs(q), floor) for p, q in zip(x, y))

    res["max_rel_diff"] = {"sft_loss": worst(res["sft"]["ours"], res["sft"]["trl"], 1e-8),
                           "dpo_loss": worst(res["dpo"]["ours"], res["dpo"]["trl"], 1e-8),
                           # the margin starts at 0 (policy == reference): relative to its final scale
                           "dpo_margin": worst(res["dpo"]["ours_margin"], res["dpo"]["trl_margin"],
                                               max(abs(v) for v in res["dpo"]["trl_margin"]))}
    return res


# ------------------------------------------------------------------------------------------- speed


def worker(args) -> int:
    """One timed run in this process: prints {"seconds", "steps", "tokens", "peak_rss_mb"}."""
    import torch

    torch.set_num_threads(args.threads)
    rows = conversations(32) if args.task == "sft" else pairs(32)
    work = Path(args.work)
    out = work / f"{args.side}-{args.task}-{os.getpid()}"
    data = work / f"{args.task}.jsonl"
    if args.side == "ours":
        h = ours(args.task, Path(args.model_dir), data, out, args.steps, args.batch, args.dtype)
    else:
        h = trl(args.task, Path(args.model_dir), rows, out, args.steps, args.batch, args.dtype)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    shutil.rmtree(out, ignore_errors=True)  # its checkpoint (weights + AdamW moments: 1.6 GB for the bundled model)
    print(json.dumps({"history": h, "peak_rss_mb": rss}))
    return 0


def step_seconds(history: list[dict]) -> list[float]:
    """Seconds per step after the first (warm-up), from the time each step ended."""
    t = [r["elapsed_s"] for r in history]
    return [b - a for a, b in zip(t, t[1:])]


def speed(model: str, steps: int, repeats: int, batch: int, threads: int, dtype: str = "fp32") -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="primer-bench-tune-") as tmp:
        return _speed(Path(tmp), model, steps, repeats, batch, threads, dtype)


def _speed(work: Path, model: str, steps: int, repeats: int, batch: int, threads: int, dtype: str) -> list[dict]:
    mdir = export_model(model, work / "hf")
    (work / "sft.jsonl").write_text("".join(json.dumps({"messages": c["prompt"] + c["completion"]}) + "\n"
                                            for c in conversations(32)))
    (work / "dpo.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs(32)))
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(mdir)
    # tokens per SFT step, counted once the same way for both sides (the rendered conversations, unpadded)
    lens = [len(tok(tok.apply_chat_template(c["prompt"] + c["completion"], tokenize=False), add_special_tokens=False)
                ["input_ids"]) for c in conversations(32)]
    results: dict = {(t, s): [] for t in ("sft", "dpo") for s in ("ours", "trl")}
    for task in ("sft", "dpo"):
        for _ in range(repeats):  # interleaved, so a drift in the machine's speed hits both sides alike
            for side in ("ours", "trl"):
                t0 = time.perf_counter()
                p = subprocess.run([sys.executable, __file__, "worker", "--side", side, "--task", task, "--model-dir",
                                    str(mdir), "--work", str(work), "--steps", str(steps), "--batch", str(batch),
                                    "--threads", str(threads), "--dtype", dtype], capture_output=True, text=True)
                if p.returncode:
                    raise SystemExit(f"{side} {task} failed:\n{p.stderr[-3000:]}")
                r = json.loads(p.stdout.strip().splitlines()[-1])
                r["wall_s"] = time.perf_counter() - t0
                results[(task, side)].append(r)
    out = []
    per_step = [sum(lens[(s * batch + j) % 32] for j in range(batch)) for s in range(steps)]
    for task in ("sft", "dpo"):
        med = {}
        for side in ("ours", "trl"):
            secs = [statistics.median(step_seconds(r["history"])) for r in results[(task, side)]]
            med[side] = {"s_per_step": statistics.median(secs),
                         "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in results[(task, side)])}
        if task == "sft":
            tps = {s: statistics.mean(per_step[1:]) / med[s]["s_per_step"] for s in med}
            out.append({"bench": "tune", "what": "sft tokens/s", "model": model, "ours": round(tps["ours"], 1),
                        "ref": round(tps["trl"], 1), "ratio": round(tps["ours"] / tps["trl"], 3),
                        "s_per_step": {s: round(med[s]["s_per_step"], 3) for s in med}})
            out.append({"bench": "tune", "what": "sft peak RSS MB", "model": model,
                        "ours": round(med["ours"]["peak_rss_mb"]), "ref": round(med["trl"]["peak_rss_mb"]),
                        "ratio": round(med["ours"]["peak_rss_mb"] / med["trl"]["peak_rss_mb"], 3)})
        else:
            out.append({"bench": "tune", "what": "dpo s/step (precomputed reference)", "model": model,
                        "ours": round(med["ours"]["s_per_step"], 3), "ref": round(med["trl"]["s_per_step"], 3),
                        "ratio": round(med["ours"]["s_per_step"] / med["trl"]["s_per_step"], 3)})
            out.append({"bench": "tune", "what": "dpo peak RSS MB", "model": model,
                        "ours": round(med["ours"]["peak_rss_mb"]), "ref": round(med["trl"]["peak_rss_mb"]),
                        "ratio": round(med["ours"]["peak_rss_mb"] / med["trl"]["peak_rss_mb"], 3)})
    return [{**o, "dtype": dtype} for o in out]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["parity", "speed", "worker"])
    ap.add_argument("--model", default="tiny", choices=["tiny", "bundled"])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"], help="speed: compute precision of both sides")
    ap.add_argument("--output", default=None)
    ap.add_argument("--side"), ap.add_argument("--task"), ap.add_argument("--model-dir"), ap.add_argument("--work")
    args = ap.parse_args(argv)
    if args.mode == "worker":
        return worker(args)
    import torch

    torch.set_num_threads(args.threads)
    if args.mode == "parity":
        res = parity(args.model, args.steps, args.batch)
        if args.output:
            Path(args.output).write_text(json.dumps(res, indent=1) + "\n")
        print(json.dumps({"bench": "tune-parity", **res["max_rel_diff"]}))
        return 0
    for line in speed(args.model, args.steps, args.repeats, args.batch, args.threads, args.dtype):
        print(json.dumps(line))
    return 0


if __name__ == "__main__":
    sys.exit(main())
