"""Training throughput: primer's loop vs a plain nanoGPT-style PyTorch loop, same run, same machine.

Both train a GPT of the same shape (layers, width, heads, MLP width, vocabulary, sequence) on the
same random token shard, with the same global batch, micro-batch, precision, thread count,
AdamW and gradient clipping. "Ours" is primer's `Trainer.train_step` (the code `primer train`
runs: memory-mapped batches, lr schedule, accumulation, clipping, fused AdamW where available);
"reference" is nanoGPT's model.py + train.py inner loop written out below (fused QKV, learned
positions, `get_batch` with random offsets). For a Llama-block shape (tiny-8m, small-30m, smollm2-135m)
the reference block is the same plain code with Llama's parts -- RMSNorm, rotary q/k instead of learned
positions, a SwiGLU MLP (three matrices where GELU has two), no biases -- so both loops do the same FLOPs:
against nanoGPT's GELU block ours would do ~1.5x the MLP work a token and lose for that alone. Timed windows alternate ours / reference (`--repeats`),
each after warm-up steps (torch.compile included in warm-up); medians are reported. MFU uses the
same FLOPs-per-token formula for both (primer.train.metrics) and the device's peak.

    python bench/train.py                                    # CPU, a small GPT-2-style shape, fp32
    python bench/train.py --shape gpt2-124m --device cuda --dtype bf16 --compile --seq 1024 --batch 32
    python bench/train.py --shape phi-1.5 --device cuda --dtype bf16 --compile --seq 2048 --batch 8

Prints one line per window, then one JSON line: "ours" and "ref" training tokens/s (medians), their
"ratio" (ours ÷ ref, higher is better), both MFUs, every window and each loop's peak memory in GiB
("peak_mem_gib": the allocator's peak on a GPU, the process's peak resident set on a CPU).

"Ours" also carries what `primer train` does process-wide on CPU (glibc keeps freed memory instead of
unmapping it every step: `primer.train.loop.keep_freed_memory`); the reference process runs with
the defaults, as nanoGPT's train.py would.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from primer.tokens.bpe import byte_tokenizer  # noqa: E402
from primer.model.transformer import SHAPES, ModelConfig, Transformer  # noqa: E402
from primer.tokens.shards import write_token_dir  # noqa: E402
from primer.train.config import TrainConfig, build_model_config  # noqa: E402
from primer.train.distributed import Dist  # noqa: E402
from primer.train.loop import Trainer  # noqa: E402
from primer.train.metrics import device_peak_flops, flops_per_token  # noqa: E402

# --------------------------------------------------------------------------------- nanoGPT (reference)
# Karpathy's nanoGPT model.py, trimmed to training: LayerNorm with bias, fused QKV, SDPA flash
# attention, GELU MLP, learned positions, tied head. MLP width is a parameter (nanoGPT: 4 x n_embd).


class NanoLayerNorm(nn.Module):
    def __init__(self, ndim, bias):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class NanoAttention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c_attn = nn.Linear(c.n_embd, 3 * c.n_embd, bias=c.bias)
        self.c_proj = nn.Linear(c.n_embd, c.n_embd, bias=c.bias)
        self.n_head, self.n_embd = c.n_head, c.n_embd

    def forward(self, x, rope=None):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        if rope is not None:
            q, k = rotate(q, *rope), rotate(k, *rope)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=True)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.c_proj(y)


class NanoMLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.swiglu = c.llama
        self.c_fc = nn.Linear(c.n_embd, (2 if c.llama else 1) * c.hidden, bias=c.bias)  # SwiGLU: gate and up fused
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(c.hidden, c.n_embd, bias=c.bias)

    def forward(self, x):
        if self.swiglu:
            gate, up = self.c_fc(x).chunk(2, dim=-1)
            return self.c_proj(F.silu(gate) * up)
        return self.c_proj(self.gelu(self.c_fc(x)))


class NanoRMSNorm(nn.Module):
    def __init__(self, ndim, eps):
        super().__init__()
        self.weight, self.eps = nn.Parameter(torch.ones(ndim)), eps

    def forward(self, x):
        return F.rms_norm(x, self.weight.shape, self.weight, self.eps)


def rotate(x, cos, sin):
    """Llama's rotary embedding (rotate-half form) on (B, H, T, D)."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


def norm(c):
    return NanoRMSNorm(c.n_embd, c.eps) if c.llama else NanoLayerNorm(c.n_embd, c.bias)


class NanoBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.ln_1 = norm(c)
        self.attn = NanoAttention(c)
        self.ln_2 = norm(c)
        self.mlp = NanoMLP(c)

    def forward(self, x, rope=None):
        x = x + self.attn(self.ln_1(x), rope)
        return x + self.mlp(self.ln_2(x))


class NanoGPT(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(c.vocab_size, c.n_embd),
            h=nn.ModuleList([NanoBlock(c) for _ in range(c.n_layer)]),
            ln_f=norm(c),
        ))
        if c.llama:
            hd = c.n_embd // c.n_head
            inv = 1.0 / (c.rope_base ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))
            ang = torch.outer(torch.arange(c.block_size, dtype=torch.float32), inv)
            ang = torch.cat((ang, ang), dim=-1)
            self.register_buffer("cos", ang.cos(), persistent=False)
            self.register_buffer("sin", ang.sin(), persistent=False)
        else:
            self.transformer["wpe"] = nn.Embedding(c.block_size, c.n_embd)
        self.lm_head = nn.Linear(c.n_embd, c.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight
        self.apply(self._init_weights)
        for pn, p in self.named_parameters():
            if pn.endswith("c_proj.weight"):
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * c.n_layer))

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx, targets):
        b, t = idx.size()
        x, rope = self.transformer.wte(idx), None
        if self.c.llama:
            rope = (self.cos[:t], self.sin[:t])
        else:
            x = x + self.transformer.wpe(torch.arange(0, t, dtype=torch.long, device=idx.device))
        for block in self.transformer.h:
            x = block(x, rope)
        x = self.transformer.ln_f(x)
        logits = self.lm_head(x)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
        return logits, loss

    def configure_optimizers(self, weight_decay, learning_rate, betas, device_type):
        params = [p for p in self.parameters() if p.requires_grad]
        groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
                  {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
        fused = "fused" in inspect.signature(torch.optim.AdamW).parameters and device_type == "cuda"
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, **({"fused": True} if fused else {}))


class RefLoop:
    """nanoGPT train.py's inner loop: get_batch from a memmap, accumulation, clip, step."""

    def __init__(self, mcfg: ModelConfig, shard: Path, *, seq, batch, micro, dtype, device, compile, seed):
        from types import SimpleNamespace

        c = SimpleNamespace(vocab_size=mcfg.vocab_size, block_size=seq, n_layer=mcfg.n_layer, n_head=mcfg.n_head,
                            n_embd=mcfg.n_embd, hidden=mcfg.intermediate_size, bias=mcfg.bias,
                            llama=mcfg.mlp == "swiglu", eps=mcfg.norm_eps, rope_base=mcfg.rope_base)
        if c.llama and (mcfg.n_kv_head != mcfg.n_head or mcfg.rotary_dim != mcfg.head_dim or mcfg.parallel_residual):
            raise SystemExit(f"the reference has no grouped-query / partial-rotary / parallel Llama block: {mcfg}")
        torch.manual_seed(seed)
        self.device, self.seq, self.micro, self.accum = device, seq, micro, batch // micro
        self.model = NanoGPT(c).to(device)
        self.opt = self.model.configure_optimizers(0.1, 3e-4, (0.9, 0.95), device.type)
        self.fwd = torch.compile(self.model) if compile else self.model
        ptdtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
        self.ctx = torch.autocast(device.type, dtype=ptdtype) if ptdtype != torch.float32 else torch.autocast(
            device.type, enabled=False)
        self.scaler = torch.amp.GradScaler(device.type, enabled=(dtype == "fp16"))
        self.data = np.memmap(shard, dtype=np.uint16, mode="r", offset=256)
        self.rng = np.random.default_rng(seed)

    def get_batch(self):
        ix = self.rng.integers(len(self.data) - self.seq - 1, size=self.micro)
        x = torch.stack([torch.from_numpy(self.data[i : i + self.seq].astype(np.int64)) for i in ix])
        y = torch.stack([torch.from_numpy(self.data[i + 1 : i + 1 + self.seq].astype(np.int64)) for i in ix])
        if self.device.type == "cuda":
            return x.pin_memory().to(self.device, non_blocking=True), y.pin_memory().to(self.device, non_blocking=True)
        return x, y

    def train_step(self, it):
        lr = 3e-4 * 0.5 * (1 + math.cos(math.pi * min(1.0, it / 1000)))
        for g in self.opt.param_groups:
            g["lr"] = lr
        X, Y = self.get_batch()
        for _ in range(self.accum):
            with self.ctx:
                _, loss = self.fwd(X, Y)
                loss = loss / self.accum
            X, Y = self.get_batch()
            self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.opt)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.scaler.step(self.opt)
        self.scaler.update()
        self.opt.zero_grad(set_to_none=True)
        return loss.detach(), None


# --------------------------------------------------------------------------------- harness
# Each loop runs in its own process (as `primer train` and nanoGPT's train.py would), so process-wide
# settings (threads, allocator) belong to the loop that makes them. The parent alternates windows.


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(loop, first_step: int, steps: int, device) -> float:
    """Seconds for `steps` optimizer steps (after a sync), forcing the last loss to be computed."""
    sync(device)
    t = time.perf_counter()
    for s in range(first_step, first_step + steps):
        loss = loop.train_step(s)[0]
    float(loss)
    sync(device)
    return time.perf_counter() - t


def build(which: str, a: dict):
    device = torch.device(a["device"])
    if a["threads"]:
        torch.set_num_threads(a["threads"])
    cfg = TrainConfig(**a["train_config"])
    if which == "ours":
        return Trainer(cfg, Dist.from_env(a["device"]))
    mcfg = build_model_config(cfg, 259)
    return RefLoop(mcfg, Path(a["shard"]), seq=cfg.seq_len, batch=cfg.batch_size, micro=cfg.micro_batch_size,
                   dtype=a["dtype"], device=device, compile=cfg.compile, seed=cfg.seed)


def worker(which: str, a: dict, conn) -> None:
    """Serve ("warm", n) / ("window", n) / ("stop",) requests with seconds taken."""
    try:
        loop = build(which, a)
        device = torch.device(a["device"])
        step = 0
        while True:
            msg = conn.recv()
            if msg[0] == "stop":
                if device.type == "cuda":
                    mem = torch.cuda.max_memory_allocated() / 2**30
                else:  # the process's peak resident set (KiB): weights, optimizer, activations, allocator
                    mem = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
                conn.send(("ok", mem))
                return
            n = msg[1]
            dt = timed(loop, step, n, device)
            step += n
            conn.send(("ok", dt))
    except BaseException as e:  # report, then let the parent stop
        import traceback

        conn.send(("error", f"{which}: {type(e).__name__}: {e}\n{traceback.format_exc()[-3000:]}"))


class Remote:
    def __init__(self, which: str, a: dict):
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        self.which = which
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=worker, args=(which, a, child), daemon=True)
        self.proc.start()

    def ask(self, *msg):
        self.conn.send(msg)
        status, value = self.conn.recv()
        if status == "error":
            raise SystemExit(value)
        return value

    def stop(self):
        mem = self.ask("stop")
        self.proc.join(timeout=60)
        return mem


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", default="gpt2-124m", help="registry shape (GPT-2 style shapes compare like for like)")
    ap.add_argument("--overrides", default=None,
                    help="shape overrides NAME=V,...; default on CPU: n_layer=4,n_head=4,n_embd=256,"
                    "intermediate_size=1024,vocab_size=8192")
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8, help="sequences per optimizer step")
    ap.add_argument("--micro", type=int, default=None, help="sequences per forward/backward (default: batch)")
    ap.add_argument("--steps", type=int, default=5, help="optimizer steps per timed window")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first (compile happens here)")
    ap.add_argument("--repeats", type=int, default=3, help="timed windows per loop, alternating")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads in both loops")
    ap.add_argument("--compile", action="store_true", help="torch.compile both models")
    ap.add_argument("--activation-checkpointing", action="store_true", help="ours only (memory, not speed)")
    ap.add_argument("--sequential", action="store_true",
                    help="run all of ours, then all of the reference (shapes where two models do not fit at once)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    device = torch.device(a.device)
    micro = a.micro or a.batch
    overrides = a.overrides
    if overrides is None and device.type == "cpu":
        overrides = "n_layer=4,n_head=4,n_embd=256,intermediate_size=1024,vocab_size=8192"
    ov = dict(kv.split("=", 1) for kv in overrides.split(",")) if overrides else {}
    vocab = int(ov.pop("vocab_size", SHAPES[a.shape].vocab_size))

    work = Path(tempfile.mkdtemp(prefix="bench_train_"))
    rng = np.random.default_rng(a.seed)
    n_tokens = max(200_000, (a.warmup + a.steps * a.repeats) * a.batch * (a.seq + 1) + 10_000)
    write_token_dir(work / "tokens", byte_tokenizer(), {"train": rng.integers(0, 259, n_tokens),
                                                        "val": rng.integers(0, 259, 4 * (a.seq + 1))})
    tcfg = dict(data=str(work / "tokens"), out_dir=str(work / "run"), model=a.shape, model_overrides=ov,
                vocab_size=vocab, seq_len=a.seq, batch_size=a.batch, micro_batch_size=micro, max_steps=10**6,
                lr=3e-4, warmup_steps=0, schedule="cosine", dtype=a.dtype, compile=a.compile,
                activation_checkpointing=a.activation_checkpointing, device=a.device, seed=a.seed, progress=False,
                eval_batches=1)
    mcfg = build_model_config(TrainConfig(**tcfg), 259)
    fpt = flops_per_token(mcfg, a.seq)
    ptdtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[a.dtype]
    if a.threads:
        torch.set_num_threads(a.threads)
    peak = device_peak_flops(device, ptdtype)
    tokens = a.steps * a.batch * a.seq
    spec = {"device": a.device, "threads": a.threads, "dtype": a.dtype, "train_config": tcfg,
            "shard": str(work / "tokens" / "train_000000.bin")}

    results: dict[str, list[float]] = {"ours": [], "reference": []}
    mem: dict[str, float] = {}

    def warm(r: Remote):
        t = time.perf_counter()
        r.ask("warm", a.warmup)
        print(f"{r.which:9s} build + warm-up {time.perf_counter() - t:.1f}s", flush=True)

    def window(r: Remote):
        tps = tokens / r.ask("window", a.steps)
        results[r.which].append(tps)
        print(f"{r.which:9s} {tps:12,.0f} tok/s  MFU {tps * fpt / peak:6.2%}", flush=True)

    def stop(r: Remote):
        m = r.stop()
        if m is not None:
            mem[r.which] = round(m, 2)

    if a.sequential:
        for which in ("ours", "reference"):
            r = Remote(which, spec)
            warm(r)
            for _ in range(a.repeats):
                window(r)
            stop(r)
    else:
        remotes = [Remote(w, spec) for w in ("ours", "reference")]
        for r in remotes:
            warm(r)
        for _ in range(a.repeats):
            for r in remotes:
                window(r)
        for r in remotes:
            stop(r)

    ours, ref = statistics.median(results["ours"]), statistics.median(results["reference"])
    with torch.device("meta"):
        n_params = Transformer(mcfg).num_params()
    out = {
        "bench": "train", "shape": a.shape, "overrides": overrides, "vocab_size": vocab,
        "params": n_params, "flops_per_token": fpt,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu x{torch.get_num_threads()}",
        "dtype": a.dtype, "compile": a.compile, "seq": a.seq, "batch": a.batch, "micro": micro,
        "steps_per_window": a.steps, "repeats": a.repeats, "sequential": a.sequential,
        "ours": round(ours, 1), "ref": round(ref, 1), "unit": "tokens/s", "ratio": round(ours / ref, 3),
        "ours_mfu": round(ours * fpt / peak, 4), "ref_mfu": round(ref * fpt / peak, 4),
        "peak_tflops": round(peak / 1e12, 2), "torch": torch.__version__,
        "ours_windows": [round(x, 1) for x in results["ours"]],
        "ref_windows": [round(x, 1) for x in results["reference"]],
    }
    if mem:
        out["peak_mem_gib"] = mem
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
