"""SFT on `primer train`'s loop: the `Trainer` hooks for a loaded chat model and conversation data.

`TuneTrainer` holds what SFT and DPO share: the MODEL spec loaded through `load_model` (a GGUF is
dequantized to fp32), its chat template (ChatML added for a model primer pretrained), LoRA, the
data read and encoded once (counts in OUT/data.json), checkpoints that are ordinary merged primer
checkpoints (`primer eval`, `primer chat` and `primer tune dpo` load them), and the resume checks
(same data, same batch size). `SFTTrainer` adds the batches and the assistant-token loss.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from primer.config import to_dict
from primer.errors import PrimerError
from primer.train.checkpoints import check_same_shape
from primer.train.loop import Trainer, TrainResult
from primer.tune.chat import BadRecord, Encoded, Stats, conversation, encode_chat, ensure_chat_template, fit, read_records
from primer.tune.config import SFTConfig, TuneConfig
from primer.tune.data import SFTBatches, fingerprint
from primer.tune.lora import add_lora, is_lora, merged_state_dict
from primer.weights.checkpoint import read_safetensors


@dataclass
class TuneResult(TrainResult):
    """`primer tune`'s summary: the loop's, plus what happened to the input records."""

    data: dict = field(default_factory=dict)
    """records read, used, truncated and dropped (with the first reasons, file:line)"""


class TuneTrainer(Trainer):
    """Shared by SFT and DPO: the model, its template, LoRA, checkpoints and resume checks."""

    cfg: TuneConfig
    kind = "tune"
    # A loaded model's full fine-tuning holds weights, gradients and two AdamW moments (4x the model) besides the
    # activations; with glibc keeping freed blocks the heap fragments around them and the peak grows by ~0.2-0.8 GB
    # on the 135M model (bench/tune.py), so tune leaves malloc's defaults, as TRL's process does.
    keep_freed = False

    def setup_data(self) -> None:
        from primer.weights.load import load_model

        cfg = self.cfg
        if not cfg.data:
            raise PrimerError("no training data; pass --data FILE.jsonl [FILE ...]")
        loaded = load_model(cfg.model, dtype=torch.float32)
        model, tok, self.template_added = ensure_chat_template(loaded.model, loaded.tokenizer)
        if tok is None:
            raise PrimerError(f"{cfg.model} has no tokenizer; tune needs one to render conversations")
        self.base, self.tokenizer, self.mcfg = model, tok, model.cfg
        self.seq_len = min(cfg.max_seq_len, self.mcfg.block_size)
        self.stats = Stats()
        self.examples = self.read_examples()
        if not self.examples:
            raise PrimerError(f"no usable examples in {', '.join(cfg.data)}: {self.stats.bad.describe('bad record')}")
        self.data_hash = fingerprint(self.examples)
        self.val = None
        self.batches = self.make_batches()
        # round() first: 3 epochs of 96 rows in steps of 8 is 36 steps, not the 37 a float's last digit would give
        self.max_steps = (math.ceil(round(cfg.epochs * self.batches.plan.rows_per_epoch(), 6) / cfg.batch_size)
                          if cfg.epochs else cfg.max_steps)

    def read_examples(self) -> list:
        raise NotImplementedError

    def make_batches(self):
        raise NotImplementedError

    def _encoded(self, where: str, enc: Encoded) -> Encoded | None:
        """`enc` fitted to seq_len (counted as truncated or dropped)."""
        out = fit(enc, self.seq_len, self.cfg.overlong)
        if out is None:
            self.stats.bad.add(where, f"{len(enc.ids)} tokens, over max_seq_len {self.seq_len} ({self.cfg.overlong})")
        elif out is not enc:
            self.stats.truncated += 1
        if out is not None:
            out.source = where
        return out

    def build_model(self) -> torch.nn.Module:
        model = self.base.to(self.device).train()
        del self.base
        if self.cfg.lora_rank:
            add_lora(model, rank=self.cfg.lora_rank, alpha=self.cfg.lora_alpha, dropout=self.cfg.lora_dropout,
                     targets=self.cfg.lora_targets, seed=self.cfg.seed)
        return model

    def step_tokens(self, micro: list) -> int:
        return sum(b[-2] for b in micro)  # real (unpadded) tokens of each micro-batch

    # -- checkpoints --------------------------------------------------------------------------------
    def checkpoint_weights(self, msd):
        if not self.cfg.lora_rank:
            return msd, {"data_hash": self.data_hash}
        lora = {k: v for k, v in msd.items() if is_lora(k)}
        return merged_state_dict(self.model, msd), {"lora": lora, "data_hash": self.data_hash}

    def checkpoint_meta(self) -> dict:
        return {"tune": self.kind, "tune_config": to_dict(self.cfg), "base_model": self.cfg.model,
                "chatml_added": self.template_added}

    def check_resume(self, ckpt: Path, state: dict) -> None:
        if state.get("data_hash") != self.data_hash:
            raise PrimerError(f"{ckpt} was trained on other data (or another tokenization of it); resuming would "
                              f"not continue that run. Use another out_dir, or pass --no-resume")
        if state.get("batch_size") != self.cfg.batch_size:
            raise PrimerError(f"{ckpt} was trained with batch_size {state.get('batch_size')}, not "
                              f"{self.cfg.batch_size}: keep it, or use another out_dir")

    def resume_weights(self, ckpt: Path, state: dict) -> dict[str, torch.Tensor]:
        if self.cfg.lora_rank:  # the base is the MODEL spec as loaded; the adapters come from the state
            sd = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
            sd.update(state["lora"])
            return sd
        check_same_shape(ckpt, self.mcfg, "checkpoint")
        sd = read_safetensors(ckpt / "model.safetensors")
        if self.mcfg.tie_embeddings:
            sd["lm_head.weight"] = sd["embed.weight"]
        return sd

    def run_info(self) -> dict:
        info = super().run_info()
        info.pop("data", None)
        trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        return {**info, "tune": self.kind, "trainable_params": trainable, "data": self.stats.to_dict(),
                "data_hash": self.data_hash}

    def run(self) -> TuneResult:
        if self.dist.is_main:
            out = Path(self.cfg.out_dir)
            out.mkdir(parents=True, exist_ok=True)
            (out / "data.json").write_text(json.dumps(self.stats.to_dict(), indent=2) + "\n")
            if self.stats.bad.count and self.cfg.progress:
                print(f"primer tune: {self.stats.bad.describe('record')} (see {out / 'data.json'})")
            rows = self.batches.plan.rows_per_epoch()
            passes = self.max_steps * self.cfg.batch_size / rows
            if self.cfg.progress and not self.cfg.epochs and passes > 3:  # TRL's default is 3 epochs
                print(f"primer tune: {self.max_steps} steps of {self.cfg.batch_size} are {passes:.0f} passes over the "
                      f"{rows} row{'s' * (rows != 1)} of this data; --epochs N sizes the steps by the data instead")
        res = TuneResult(**vars(super().run()), data=self.stats.to_dict())
        if self.dist.is_main:
            (Path(self.cfg.out_dir) / "summary.json").write_text(json.dumps(to_dict(res), indent=2) + "\n")
        return res


class SFTTrainer(TuneTrainer):
    """Supervised fine-tuning: next-token loss on the assistant tokens, a token mean over each step."""

    cfg: SFTConfig
    kind = "sft"

    def read_examples(self) -> list[Encoded]:
        out = []
        for where, rec in read_records(self.cfg.data, self.stats):
            try:
                msgs = conversation(rec)
            except BadRecord as e:
                self.stats.bad.add(where, str(e))
                continue
            enc = self._encoded(where, encode_chat(self.tokenizer, msgs))
            if enc is not None:
                out.append(enc)
        self.stats.used = len(out)
        return out

    def make_batches(self) -> SFTBatches:
        return SFTBatches(self.examples, seq_len=self.seq_len, batch_size=self.cfg.batch_size,
                          micro_batch_size=self.micro, packing=self.cfg.packing, shuffle=self.cfg.shuffle,
                          rank=self.dist.rank, world_size=self.dist.world_size, seed=self.cfg.seed)

    def prepare_step(self, micro: list) -> list:
        """Divide by the trained tokens of the whole step over all processes: DDP averages the processes'
        gradients, so each divides by (global tokens / world size) and the step loss is the global token mean."""
        if self.dist.world_size == 1:
            return micro
        n = torch.tensor(float(micro[0][-1]), device=self.device)
        per = float(self.dist.all_reduce_sum(n)) / self.dist.world_size
        return [b[:-1] + (per,) for b in micro]

    def forward_loss(self, batch):
        x, y, pos, mask, _, step_tokens = batch
        dev = self.device
        y = y.to(dev)
        sel = y != -100
        with self.autocast:  # the head runs at the assistant tokens only, a block of rows at a time, inside the
            # model's forward (where FSDP has the head's weight whole): primer.model.loss
            loss = self.wrapped(x.to(dev), select=sel, targets=y[sel], pos=None if pos is None else pos.to(dev),
                                attn_mask=None if mask is None else mask.to(dev))
        # this micro-batch's token mean times its tokens, divided by the step's: the step loss is their token mean
        n = sel.sum()
        return loss * n / step_tokens, {"trained_tokens": n.float()}
