"""The training loop: one code path from a 2-core laptop to `torchrun` on many GPUs.

Per optimizer step: the lr from the schedule (a function of the step), `accum` micro-batches of
forward + backward (loss / accum; gradient sync only on the last), clip, AdamW step. fp32 on CPU,
bf16 autocast on GPUs (fp16 with a loss scaler when asked), optional torch.compile and activation
checkpointing. Every `eval_every` steps the held-out loss, every `log_every` a metrics line
(loss, lr, tokens/s, MFU) in OUT/metrics.jsonl, every `save_every` a checkpoint.

Exact resume: the data order is a function of the step (`TrainBatches`), the schedule too, and a
checkpoint holds weights, optimizer moments, RNG and loss scaler; so a run stopped after step k
and resumed computes the same step k+1 as one that never stopped.
"""

from __future__ import annotations

import contextlib
import json
import math
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from primer.common.files import DirLock
from primer.common.provenance import git_sha
from primer.config import check_config, to_dict
from primer.errors import PrimerError
from primer.model.transformer import Transformer
from primer.tokens.shards import TokenDataset
from primer.train.checkpoints import latest_checkpoint, load_trainer_state, load_weights, save_training_checkpoint
from primer.train.config import TrainConfig, build_model_config
from primer.train.data import TrainBatches, ValBatches
from primer.train.distributed import Dist
from primer.train.metrics import MetricsLog, cpu_matrix_units, device_peak_flops, flops_per_token
from primer.train.schedule import schedule_of

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class TrainResult:
    """What `train` returns (and the main process writes as OUT/summary.json)."""

    steps: int
    tokens: int
    params: int
    final_loss: float | None
    """mean training loss of the last log window"""
    val_loss: float | None
    val_curve: list[tuple[int, float]]
    """(step, held-out loss) at every evaluation"""
    loss_curve: list[tuple[int, float]]
    """(step, mean training loss) at every log line"""
    tokens_per_s: float | None
    """median over the log windows after the first (which holds warm-up and compile time)"""
    mfu: float | None
    checkpoint: str | None
    out_dir: str
    samples: list[str]


def train(cfg: TrainConfig, trainer: type[Trainer] | None = None) -> TrainResult:
    """Run (or resume) training as `cfg` says, with `Trainer` or a subclass (`primer tune`); returns a summary."""
    check_config(cfg)
    d = Dist.from_env(cfg.device, cfg.parallel)
    threads = torch.get_num_threads()
    # the main process writes out_dir (metrics, checkpoints), so it alone claims it
    claim = DirLock(cfg.out_dir, "primer tune" if trainer else "primer train") if d.is_main else contextlib.nullcontext()
    try:
        with claim:
            return (trainer or Trainer)(cfg, d).run()
    finally:
        torch.set_num_threads(threads)
        d.close()


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only; the fused kernel where the device has one."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    rest = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    kw = dict(lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)
    try:
        return torch.optim.AdamW(groups, fused=True, **kw)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(groups, foreach=True, **kw)


def keep_freed_memory() -> bool:
    """glibc: keep freed blocks in the process instead of unmapping them (Linux CPU training).

    Every step frees and reallocates the same large activation and gradient buffers; by default
    glibc returns blocks over its mmap threshold to the kernel, which then zero-fills fresh pages
    on the next step. Raising the mmap and trim thresholds removes most of those page faults
    (about a fifth of a small model's CPU step time here); the cost is that the process keeps its
    peak memory until it exits. Returns whether the setting took.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if platform.system() != "Linux" or not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
        return bool(libc.mallopt(M_MMAP_THRESHOLD, 1 << 30)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 1 << 30))
    except (OSError, AttributeError):
        return False


class Trainer:
    """The loop. Pretraining is this class; `primer tune` subclasses it and overrides the hooks below
    (data, model, loss, checkpoint weights), so SFT and DPO share its steps, accumulation, clipping,
    precision, metrics, progress, checkpoints, exact resume and torchrun layouts."""

    keep_freed = True
    """On a CPU, `keep_freed_memory()`: faster steps for a higher peak RSS (see there)."""
    bf16_hint = True
    """Say at the start when fp32 runs on a CPU with AMX bf16 tiles (bf16 is the fast setting there)."""

    def __init__(self, cfg, dist: Dist):
        self.cfg, self.dist = cfg, dist
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        dev = dist.device
        if dev.type == "cpu" and self.keep_freed:
            keep_freed_memory()
        self.device = dev
        W = dist.world_size
        if cfg.batch_size % W:
            raise PrimerError(f"batch_size {cfg.batch_size} does not split over {W} processes")
        per_rank = cfg.batch_size // W
        self.micro = min(cfg.micro_batch_size or per_rank, per_rank)
        if per_rank % self.micro:
            raise PrimerError(f"{per_rank} sequences per process do not split into micro-batches of {self.micro}")
        self.accum = per_rank // self.micro
        if cfg.dtype == "auto":
            bf16_ok = dev.type == "cuda" and torch.cuda.is_bf16_supported()
            self.dtype = torch.bfloat16 if bf16_ok else torch.float32
        else:
            self.dtype = DTYPES[cfg.dtype]
        if dev.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self.resume_from = latest_checkpoint(cfg.out_dir) if cfg.resume else None
        self.setup_data()  # tokenizer, seq_len, batches, val, max_steps, tokens_per_step
        torch.manual_seed(cfg.seed)
        model = self.build_model()  # the module to train (its Transformer at self.mcfg's shape)
        model.gradient_checkpointing = cfg.activation_checkpointing
        self.model = model
        compute = self.dtype if self.dtype != torch.float32 else None
        self.wrapped, autocast = dist.wrap(model, compute_dtype=compute, compile=cfg.compile)
        self.autocast = (
            torch.autocast(dev.type, dtype=self.dtype) if (autocast and compute) else contextlib.nullcontext()
        )
        self.optimizer = make_optimizer(model, cfg, dev)
        self.scaler = None
        if self.dtype == torch.float16:
            if dist.parallel == "fsdp":
                from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler

                self.scaler = ShardedGradScaler(dev.type)
            else:
                self.scaler = torch.amp.GradScaler(dev.type)
        self.lr_at = schedule_of(cfg, self.max_steps)
        self.flops_per_token = flops_per_token(self.mcfg, self.seq_len)
        self.peak = device_peak_flops(dev, self.dtype, cfg.peak_tflops) * W
        self.step = 0
        self.tokens_seen = 0
        self.val_curve: list[tuple[int, float]] = []
        self.loss_curve: list[tuple[int, float]] = []
        self.speeds: list[tuple[bool, float]] = []
        if self.resume_from is not None:
            self._load(self.resume_from)

    # ------------------------------------------------------------------------------ hooks (pretraining)

    def setup_data(self) -> None:
        """Token shards -> self.tokenizer, mcfg, seq_len, batches, val, max_steps, tokens_per_step."""
        cfg, dist = self.cfg, self.dist
        self.data = TokenDataset(cfg.data)
        self.tokenizer = self.data.tokenizer()
        self.mcfg = build_model_config(cfg, self.data.vocab_size)
        self.seq_len = cfg.seq_len or self.mcfg.block_size
        W = dist.world_size
        tokens_per_step = cfg.batch_size * self.seq_len
        self.max_steps = math.ceil(cfg.max_tokens / tokens_per_step) if cfg.max_tokens else cfg.max_steps
        self.tokens_per_step = tokens_per_step
        self.batches = TrainBatches(self.data, seq_len=self.seq_len, batch_size=cfg.batch_size,
                                    micro_batch_size=self.micro, rank=dist.rank, world_size=W, seed=cfg.seed)
        # No held-out split (val_fraction = 0 at tokenize time): train without validation.
        self.val = ValBatches(self.data, seq_len=self.seq_len, micro_batch_size=self.micro,
                              max_windows=cfg.eval_batches * cfg.batch_size, rank=dist.rank,
                              world_size=W) if self.data.num_tokens("val") else None

    def build_model(self) -> torch.nn.Module:
        """A random init of the shape (or init_from's weights); a resumed run loads its checkpoint later."""
        with torch.device(self.device):
            model = Transformer(self.mcfg)
        if self.resume_from is None and self.cfg.init_from:
            self._check_tokenizer(Path(self.cfg.init_from))
            model.load_state_dict(load_weights(Path(self.cfg.init_from), self.mcfg, "init_from checkpoint"))
        return model

    def forward_loss(self, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(this micro-batch's share of the step loss, its shares of extra step metrics)."""
        x, y = batch
        nonblock = self.device.type == "cuda"
        with self.autocast:
            loss = self.wrapped(x.to(self.device, non_blocking=nonblock), y.to(self.device, non_blocking=nonblock))
        return loss / self.accum, {}

    def prepare_step(self, micro: list) -> list:
        """This process's micro-batches of a step, before any forward (a hook for step-wide normalisers)."""
        return micro

    def step_tokens(self, micro: list) -> int:
        """Tokens this process trained on in one step (throughput; all processes are summed)."""
        return self.tokens_per_step // self.dist.world_size

    def check_resume(self, ckpt: Path, state: dict) -> None:
        self._check_tokenizer(ckpt)
        if state.get("batch_size") != self.cfg.batch_size or state.get("seq_len") != self.seq_len:
            raise PrimerError(
                f"{ckpt} was trained with batch_size {state.get('batch_size')} x seq_len {state.get('seq_len')}; "
                f"resuming with {self.cfg.batch_size} x {self.seq_len} would change the data order. "
                f"Keep them, or start a new out_dir (or pass --no-resume)"
            )

    def resume_weights(self, ckpt: Path, state: dict) -> dict[str, torch.Tensor]:
        """The full state dict of `self.model` to resume from (pretraining: the checkpoint's weights)."""
        return load_weights(ckpt, self.mcfg, "checkpoint")

    def checkpoint_weights(self, msd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict]:
        """(the Transformer weights a checkpoint dir holds, extra trainer state) from `self.model`'s full state."""
        return msd, {}

    def checkpoint_meta(self) -> dict:
        return {"train_config": to_dict(self.cfg)}

    # ------------------------------------------------------------------------------ state

    def _check_tokenizer(self, ckpt: Path) -> None:
        from primer.weights.checkpoint import read_meta

        theirs = read_meta(ckpt).get("tokenizer_hash")
        if theirs and theirs != self.data.tokenizer_hash:
            raise PrimerError(
                f"{ckpt} was trained with tokenizer {theirs[:12]} but {self.cfg.data} was tokenized with "
                f"{self.data.tokenizer_hash[:12]}; re-tokenize with: primer tokenize ... --tokenizer {ckpt}"
            )

    def _load(self, ckpt: Path) -> None:
        state = load_trainer_state(ckpt)
        self.check_resume(ckpt, state)
        msd = self.resume_weights(ckpt, state)
        self.dist.load_full_state(self.model, self.optimizer, msd, state["optimizer"])
        self.step = state["step"]
        self.tokens_seen = state.get("tokens_seen", self.step * getattr(self, "tokens_per_step", 0))
        torch.set_rng_state(state["rng"]["cpu"])
        if self.device.type == "cuda" and state["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.val_curve = [tuple(v) for v in state.get("val_curve", [])]
        self.loss_curve = [tuple(v) for v in state.get("loss_curve", [])]

    def save(self) -> Path | None:
        msd, osd = self.dist.full_state(self.model, self.optimizer)  # collective: every process
        path = None
        if self.dist.is_main:
            weights, extra = self.checkpoint_weights(msd)
            state = {
                **extra,
                "tokens_seen": self.tokens_seen,
                "step": self.step,
                "optimizer": osd,
                "rng": {"cpu": torch.get_rng_state(),
                        "cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None},
                "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                "batch_size": self.cfg.batch_size,
                "seq_len": self.seq_len,
                "val_curve": self.val_curve,
                "loss_curve": self.loss_curve,
            }
            meta = {
                "step": self.step,
                "tokens": self.tokens_seen,
                "val_loss": self.val_curve[-1][1] if self.val_curve else None,
                **self.checkpoint_meta(),
            }
            path = save_training_checkpoint(self.cfg.out_dir, self.step, self.mcfg, weights, state, self.tokenizer,
                                            meta, self.cfg.keep_checkpoints)
        self.dist.barrier()
        return path

    # ------------------------------------------------------------------------------ steps

    def train_step(self, step: int) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, torch.Tensor]]:
        """One optimizer step; returns (this process's step loss, grad norm, extra step metrics)."""
        lr = self.lr_at(step)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        micro = self.prepare_step(self.batches.micro_batches(step))
        total = torch.zeros((), device=self.device)
        stats: dict[str, torch.Tensor] = {}
        for i, batch in enumerate(micro):
            with self.dist.grad_sync(self.wrapped, i == len(micro) - 1):
                loss, extra = self.forward_loss(batch)
                (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
            total += loss.detach()
            for k, v in extra.items():
                stats[k] = stats.get(k, 0) + v.detach()
        self.tokens_seen += self.step_tokens(micro) * self.dist.world_size
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        norm = None
        if self.cfg.grad_clip > 0:
            norm = torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad],
                                                  self.cfg.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return total, norm, stats

    @torch.no_grad()
    def evaluate(self) -> float:
        self.wrapped.eval()
        acc = torch.zeros(2, dtype=torch.float64, device=self.device)
        for x, y in self.val:
            with self.autocast:
                loss = self.wrapped(x.to(self.device), y.to(self.device))
            acc[0] += loss.double() * x.shape[0]
            acc[1] += x.shape[0]
        self.wrapped.train()
        self.dist.all_reduce_sum(acc)
        return float(acc[0] / acc[1])

    # ------------------------------------------------------------------------------ run

    def run_info(self) -> dict:
        """config.json of the run directory."""
        return {
            "train_config": to_dict(self.cfg),
            "model_config": self.mcfg.to_dict(),
            "num_params": self.model_params,
            "seq_len": self.seq_len, "micro_batch_size": self.micro, "grad_accum": self.accum,
            "world_size": self.dist.world_size, "parallel": self.dist.parallel,
            "device": str(self.device), "dtype": str(self.dtype).removeprefix("torch."),
            "max_steps": self.max_steps, "tokens_per_step": getattr(self, "tokens_per_step", None),
            "flops_per_token": self.flops_per_token, "peak_flops": self.peak,
            "data": {k: v for k, v in to_dict(self.data.meta).items() if k != "config"} if hasattr(self, "data") else None,
            "git_sha": git_sha(), "torch": torch.__version__, "python": platform.python_version(),
            "resumed_from": str(self.resume_from) if self.resume_from else None,
        }

    def run(self) -> TrainResult:
        cfg, d = self.cfg, self.dist
        out = Path(cfg.out_dir)
        main = d.is_main
        self.model_params = sum(p.numel() for p in self.model.parameters())
        if main:
            out.mkdir(parents=True, exist_ok=True)
            (out / "config.json").write_text(json.dumps(self.run_info(), indent=2) + "\n")
        log = MetricsLog(out / "metrics.jsonl", self.step if self.resume_from else None, enabled=main)
        from tqdm import tqdm

        bar = tqdm(total=self.max_steps, initial=self.step, unit="step", disable=not (main and cfg.progress),
                   dynamic_ncols=True)
        if main and cfg.progress and self.bf16_hint and cfg.dtype == "auto" and self.device.type == "cpu" and (
            cpu_matrix_units(torch.bfloat16) == "amx"
        ):
            # fp32 stays the CPU default (the ecosystem's, and the numbers users compare against);
            # the AMX tiles are worth saying out loud: up to ~2x a step (bench/train.py, README).
            bar.write("this CPU has AMX bf16 tiles: dtype = \"bf16\" (autocast; weights and optimizer stay fp32) "
                      "trains up to ~2x faster than fp32 here, the more tokens a step the more")
        start_step = self.step
        t0 = time.perf_counter()
        last_t, last_step = t0, self.step
        saved_at = None
        window_loss = torch.zeros((), device=self.device)
        window_stats: dict[str, torch.Tensor] = {}
        last_tokens = self.tokens_seen
        while self.step < self.max_steps:
            loss, norm, stats = self.train_step(self.step)
            window_loss += loss
            for k, v in stats.items():
                window_stats[k] = window_stats.get(k, 0) + v
            self.step += 1
            s = self.step
            last = s == self.max_steps
            if s % cfg.log_every == 0 or last:
                n = s - last_step
                d.all_reduce_sum(window_loss)
                mean_loss = float(window_loss) / (n * d.world_size)
                if self.device.type == "cuda":
                    torch.cuda.synchronize()
                now = time.perf_counter()
                tps = (self.tokens_seen - last_tokens) / (now - last_t)
                mfu = tps * self.flops_per_token / self.peak
                self.speeds.append((last_step == start_step, tps))
                self.loss_curve.append((s, mean_loss))
                row = dict(step=s, loss=round(mean_loss, 6), lr=self.lr_at(s - 1), tokens=self.tokens_seen,
                           tokens_per_s=round(tps, 1), mfu=round(mfu, 5), epoch=round(self.batches.epoch_of(s), 4),
                           elapsed_s=round(now - t0, 2))
                for k, v in window_stats.items():
                    row[k] = round(float(d.all_reduce_sum(v.clone().double())) / (n * d.world_size), 6)
                window_stats = {}
                if norm is not None:
                    row["grad_norm"] = round(float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm), 5)
                log.write(**row)
                bar.set_postfix(loss=f"{mean_loss:.4f}", tok_s=f"{tps:,.0f}", refresh=False)
                window_loss.zero_()
                last_t, last_step, last_tokens = now, s, self.tokens_seen
            bar.update(1)
            paused = False
            if self.val is not None and ((cfg.eval_every and s % cfg.eval_every == 0) or last):
                v = self.evaluate()
                self.val_curve.append((s, v))
                log.write(step=s, val_loss=round(v, 6), tokens=self.tokens_seen)
                if main and cfg.progress:
                    bar.write(f"step {s}: val loss {v:.4f}")
                paused = True
            if (cfg.save_every and s % cfg.save_every == 0) or last:
                saved_at = self.save()
                paused = True
            if paused:
                last_t = time.perf_counter()  # eval/checkpoint time is not training throughput
        bar.close()
        if saved_at is None and self.max_steps > 0 and start_step == self.max_steps:
            saved_at = latest_checkpoint(cfg.out_dir)
        samples = self.write_samples(saved_at) if (main and getattr(cfg, "samples", 0) > 0 and saved_at) else []
        # The first log window holds warm-up (and compile) time: it counts only when it is all there is.
        steady = [t for first, t in self.speeds if not first] or [t for _, t in self.speeds]
        tps = statistics.median(steady) if steady else None
        summary = TrainResult(
            steps=self.step,
            tokens=self.tokens_seen,
            params=self.model_params,
            final_loss=self.loss_curve[-1][1] if self.loss_curve else None,
            val_loss=self.val_curve[-1][1] if self.val_curve else None,
            val_curve=self.val_curve,
            loss_curve=self.loss_curve,
            tokens_per_s=tps,
            mfu=tps * self.flops_per_token / self.peak if tps else None,
            checkpoint=str(saved_at) if saved_at else None,
            out_dir=str(out),
            samples=samples,
        )
        if main:
            (out / "summary.json").write_text(json.dumps(to_dict(summary), indent=2) + "\n")
            if self.val_curve:
                plot_curves(out, self.loss_curve, self.val_curve)
        return summary

    def write_samples(self, ckpt: Path) -> list[str]:
        from primer.weights.checkpoint import load_checkpoint
        from primer.train.sample import sample

        cfg = self.cfg
        model = load_checkpoint(ckpt, device=self.device).model
        if self.device.type == "cuda" and self.dtype != torch.float32:
            model = model.to(self.dtype)
        tok = self.tokenizer
        eot = self.data.eot_id
        gen = torch.Generator().manual_seed(cfg.seed)
        texts = []
        for _ in range(cfg.samples):
            ids = sample(model, [eot], max_new_tokens=cfg.sample_tokens, stop_ids={eot} | tok.stop_ids,
                         temperature=cfg.sample_temperature, top_k=cfg.sample_top_k, generator=gen)
            texts.append(tok.decode(ids, skip_special_tokens=True).strip())
        sep = "\n\n" + "-" * 72 + "\n\n"
        (Path(cfg.out_dir) / "samples.txt").write_text(sep.join(texts) + "\n")
        return texts


def plot_curves(out: Path, loss_curve, val_curve) -> None:
    """OUT/loss.png: training and validation loss against step."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    if loss_curve:
        ax.plot(*zip(*loss_curve), label="train", lw=1)
    ax.plot(*zip(*val_curve), "o-", label="validation", lw=1.5, ms=3)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "loss.png", dpi=120)
    plt.close(fig)
