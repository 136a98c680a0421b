"""DPO and IPO on the same loop, with the reference log-probs computed once and cached on disk.

Before the first step, the model as loaded (the reference policy) scores every pair once --
log p(chosen | prompt) and log p(rejected | prompt), summed over the reply's tokens as the chat
template renders them -- and writes them to OUT/ref_logps.pt with a fingerprint of the model
and data. Training then keeps one model in memory (TRL's most common DPO complaint is the second,
reference copy); a resumed run reads the cache instead of scoring again (the weights have moved).

Per pair, with ratios r_c = log pi(c) - log ref(c) and r_r likewise:
  * sigmoid (DPO): -log sigmoid(beta (r_c - r_r))
  * ipo: ((r_c / |c| - r_r / |r|) - 1 / (2 beta))^2, log-ratios averaged over reply tokens (as TRL does)
Logged per step: loss, reward margin beta (r_c - r_r), preference accuracy (margin > 0), the chosen and
rejected rewards, and the policy's chosen/rejected log-probs.
"""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path

import torch
import torch.nn.functional as F

from primer.errors import PrimerError
from primer.tune.chat import BadRecord, encode_reply, preference, read_records
from primer.tune.config import DPOConfig
from primer.tune.data import PairBatches
from primer.tune.logps import target_logps
from primer.tune.trainer import TuneTrainer

REF_CACHE = "ref_logps.pt"


def sequence_logps(model, x: torch.Tensor, y: torch.Tensor, fused: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of log p over each row's trained tokens, their count) for inputs x and targets y (B, T), -100 ignored.
    Only the reply tokens' log-probs are computed (`target_logps`): a pair's prompt is most of its tokens."""
    logp, sel = target_logps(model, x, y, fused=fused)
    rows = sel.nonzero()[:, 0]
    return torch.zeros(y.shape[0], dtype=logp.dtype, device=logp.device).index_add(0, rows, logp), sel.sum(-1)


def preference_loss(kind: str, beta: float, pc, pr, rc, rr, nc, nr) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-pair loss, per-pair margin beta (r_c - r_r)) for policy/ref log-probs and reply lengths."""
    ratio_c, ratio_r = pc - rc, pr - rr
    margin = beta * (ratio_c - ratio_r)
    if kind == "sigmoid":
        return -F.logsigmoid(margin), margin
    if kind == "ipo":
        return (ratio_c / nc.clamp(min=1) - ratio_r / nr.clamp(min=1) - 1 / (2 * beta)) ** 2, margin
    raise PrimerError(f"unknown preference loss {kind!r} (sigmoid or ipo)")


class DPOTrainer(TuneTrainer):
    cfg: DPOConfig
    kind = "dpo"
    bf16_hint = False  # at DPO's learning rates bf16 rounding moves the reward margins more than the steps do (README)

    @property
    def fused_head(self) -> bool:
        """Log-probs with the head a block at a time outside the forward: not under FSDP (primer.tune.logps)."""
        return self.dist.parallel != "fsdp"

    def read_examples(self) -> list:
        out = []
        for where, rec in read_records(self.cfg.data, self.stats):
            try:
                prompt, chosen, rejected = preference(rec)
            except BadRecord as e:
                self.stats.bad.add(where, str(e))
                continue
            c = self._encoded(where, encode_reply(self.tokenizer, prompt, chosen))
            r = self._encoded(where, encode_reply(self.tokenizer, prompt, rejected)) if c is not None else None
            if c is not None and r is not None:
                out.append((c, r))
        self.stats.used = len(out)
        return out

    def make_batches(self) -> PairBatches:
        return PairBatches(self.examples, batch_size=self.cfg.batch_size, micro_batch_size=self.micro,
                           shuffle=self.cfg.shuffle, rank=self.dist.rank, world_size=self.dist.world_size,
                           seed=self.cfg.seed)

    def build_model(self) -> torch.nn.Module:
        model = super().build_model()
        self.ref = self.reference_logps(model)  # (N, 2): the model before any step is the reference
        return model

    @torch.no_grad()
    def reference_logps(self, model: torch.nn.Module) -> torch.Tensor:
        path = Path(self.cfg.out_dir) / REF_CACHE
        key = hashlib.sha256((self.data_hash + str(self.cfg.model) + str(self.seq_len)).encode()).hexdigest()
        if path.is_file():
            cached = torch.load(path, map_location="cpu", weights_only=True)
            if cached.get("key") == key:
                return cached["logps"]
            if self.resume_from is not None:
                raise PrimerError(f"{path} was computed for other data or another model; this run cannot resume "
                                  f"against it. Use another out_dir")
        if self.resume_from is not None:
            raise PrimerError(f"{self.resume_from} has no reference log-probs ({path} is missing); "
                              f"they cannot be recomputed from trained weights. Use another out_dir")
        out = torch.zeros(len(self.examples), 2, dtype=torch.float32)
        if self.dist.is_main:
            from tqdm import tqdm

            was = model.training
            model.eval()
            compute = self.dtype if self.dtype != torch.float32 else None
            autocast = torch.autocast(self.device.type, dtype=compute) if compute else contextlib.nullcontext()
            bs = max(1, self.cfg.ref_batch_size)
            for i in tqdm(range(0, len(self.examples), bs), desc="reference log-probs", unit="batch",
                          disable=not self.cfg.progress, leave=False):
                idx = list(range(i, min(len(self.examples), i + bs)))
                x, y, _, _ = self.batches.collate(idx)
                with autocast:
                    lp, _ = sequence_logps(model, x.to(self.device), y.to(self.device), self.fused_head)
                n = len(idx)
                out[idx, 0], out[idx, 1] = lp[:n].cpu(), lp[n:].cpu()
            model.train(was)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            torch.save({"key": key, "logps": out}, tmp)
            tmp.replace(path)
        self.dist.barrier()
        if not self.dist.is_main:
            out = torch.load(path, map_location="cpu", weights_only=True)["logps"]
        return out

    def forward_loss(self, batch):
        x, y, idx, _, pairs_in_step = batch
        dev = self.device
        with self.autocast:
            lp, n = sequence_logps(self.wrapped, x.to(dev), y.to(dev), self.fused_head)
        B = len(idx)
        pc, pr, nc, nr = lp[:B], lp[B:], n[:B], n[B:]
        ref = self.ref[idx].to(dev)
        loss, margin = preference_loss(self.cfg.loss, self.cfg.beta, pc, pr, ref[:, 0], ref[:, 1], nc, nr)
        w = 1.0 / pairs_in_step
        d = lambda t: t.detach().sum() * w  # noqa: E731  (this micro-batch's share of the step mean)
        stats = {"reward_margin": d(margin), "reward_accuracy": d((margin > 0).float()),
                 "reward_chosen": d(self.cfg.beta * (pc - ref[:, 0])), "reward_rejected": d(self.cfg.beta * (pr - ref[:, 1])),
                 "logps_chosen": d(pc), "logps_rejected": d(pr)}
        return loss.sum() * w, stats
