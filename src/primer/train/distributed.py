"""Everything about running on several processes lives here; the model and the loop never name DDP.

Single process (plain `primer train`): every method is a no-op or the identity.
Under `torchrun` (RANK / WORLD_SIZE / LOCAL_RANK set): one process per device, NCCL on GPUs and
gloo on CPUs, and the model is wrapped with
  * ddp: `DistributedDataParallel` (replicated weights, gradients all-reduced), or
  * fsdp: FSDP2 `fully_shard` on every block and on the root (parameters, gradients and optimizer
    state sharded across processes; bf16 compute via its mixed-precision policy).
State dicts go through `torch.distributed.checkpoint.state_dict` as full, CPU, FQN-keyed dicts,
so a checkpoint written by any layout loads into any other (1 CPU process, DDP, FSDP).
"""

from __future__ import annotations

import contextlib
import datetime
import os

import torch
import torch.distributed as dist
import torch.nn as nn


class Dist:
    """This process's place in the job and the layout-specific operations."""

    def __init__(self, device: torch.device, rank: int = 0, local_rank: int = 0, world_size: int = 1,
                 parallel: str = "ddp"):
        self.device, self.rank, self.local_rank, self.world_size = device, rank, local_rank, world_size
        self.parallel = parallel if world_size > 1 else "none"

    @classmethod
    def from_env(cls, device: str = "auto", parallel: str = "ddp") -> "Dist":
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dev = torch.device(device)
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device("cuda", local if world > 1 else torch.cuda.current_device())
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        if world > 1 and not dist.is_initialized():
            backend = "nccl" if dev.type == "cuda" else "gloo"
            dist.init_process_group(backend, rank=rank, world_size=world, timeout=datetime.timedelta(minutes=30))
        return cls(dev, rank, local, world, parallel)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # ------------------------------------------------------------------------------ model layout

    def wrap(self, model: nn.Module, *, compute_dtype: torch.dtype | None, compile: bool) -> tuple[nn.Module, bool]:
        """(module to call for training, whether autocast is still needed around it)."""
        if self.parallel == "fsdp":
            from torch.distributed.device_mesh import init_device_mesh
            from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

            mesh = init_device_mesh(self.device.type, (self.world_size,))
            mp = MixedPrecisionPolicy(param_dtype=compute_dtype, reduce_dtype=torch.float32) if compute_dtype else None
            kw = {"mesh": mesh} | ({"mp_policy": mp} if mp else {})
            for block in model.blocks:
                fully_shard(block, **kw)
            fully_shard(model, **kw)
            return (torch.compile(model) if compile else model), False
        if compile:
            model = torch.compile(model)
        if self.parallel == "ddp":
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            model = DDP(model, device_ids=ids)
        return model, True

    @contextlib.contextmanager
    def grad_sync(self, wrapped: nn.Module, sync: bool):
        """Skip the gradient all-reduce on micro-batches that are not the last of a step."""
        if self.parallel == "ddp" and not sync:
            with wrapped.no_sync():
                yield
            return
        if self.parallel == "fsdp":
            target = getattr(wrapped, "_orig_mod", wrapped)
            target.set_requires_gradient_sync(sync)
        yield

    # ------------------------------------------------------------------------------ collectives

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.world_size > 1:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def broadcast_object(self, obj):
        if self.world_size == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    def close(self) -> None:
        if self.world_size > 1 and dist.is_initialized():
            dist.destroy_process_group()

    # ------------------------------------------------------------------------------ state dicts

    def full_state(self, model: nn.Module, optimizer: torch.optim.Optimizer | None):
        """(model state dict, optimizer state dict): full tensors on CPU, FQN keys (collective)."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_optimizer_state_dict

        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        msd = get_model_state_dict(model, options=opts)
        osd = get_optimizer_state_dict(model, optimizer, options=opts) if optimizer is not None else None
        return msd, osd

    def load_full_state(self, model: nn.Module, optimizer: torch.optim.Optimizer | None, msd: dict, osd: dict | None):
        """Load full dicts (as `full_state` returns them) into the local layout (every process holds them)."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict, set_optimizer_state_dict

        opts = StateDictOptions(full_state_dict=True)
        set_model_state_dict(model, msd, options=opts)
        if optimizer is not None and osd is not None:
            set_optimizer_state_dict(model, optimizer, osd, options=opts)
