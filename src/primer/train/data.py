"""Batches from token shards, as a pure function of the step: exact resume and any process count.

The training split is cut into windows of seq_len + 1 ids (input and shifted target) with stride
seq_len. Each epoch shifts the cut by a seeded offset in [0, seq_len) and visits the windows in a
seeded permutation, so small corpora repeated for several epochs are not seen in the same pieces.
Optimizer step s takes global windows [s*G, (s+1)*G) of that endless stream (G = batch_size);
process r of W takes its contiguous share and splits it into micro-batches. The data position is
therefore just the step number: a resumed run, or the same run on another number of processes,
reads exactly the same sequences.
"""

from __future__ import annotations

import numpy as np
import torch

from primer.errors import PrimerError
from primer.tokens.shards import TokenDataset


class WindowIndex:
    """Global window number -> (shard, start) over a list of memory-mapped shards."""

    def __init__(self, shards: list[np.ndarray], seq_len: int, spare: int):
        # `spare` ids at the end of each shard are kept free so any offset < spare still fits.
        self.shards, self.seq_len = shards, seq_len
        counts = [max(0, (s.size - 1 - spare) // seq_len) for s in shards]
        self.cum = np.cumsum([0] + counts)
        self.count = int(self.cum[-1])

    def window(self, i: int, offset: int = 0) -> np.ndarray:
        s = int(np.searchsorted(self.cum, i, side="right") - 1)
        start = offset + (i - int(self.cum[s])) * self.seq_len
        return np.asarray(self.shards[s][start : start + self.seq_len + 1], dtype=np.int64)


class TrainBatches:
    """Deterministic training batches: `micro_batches(step)` gives this process's (x, y) pairs."""

    def __init__(self, data: TokenDataset, *, seq_len: int, batch_size: int, micro_batch_size: int,
                 rank: int = 0, world_size: int = 1, seed: int = 0):
        self.seq_len, self.batch_size, self.micro = seq_len, batch_size, micro_batch_size
        self.rank, self.world = rank, world_size
        self.seed = seed
        self.index = WindowIndex(data.shards("train"), seq_len, spare=seq_len - 1)
        n = self.index.count
        if n < batch_size:
            tokens = data.num_tokens("train")
            raise PrimerError(
                f"the training split of {data.dir} has {tokens} tokens, {n} sequences of {seq_len + 1}: fewer than one "
                f"batch of {batch_size}; add documents, or lower batch_size / seq_len"
            )
        self._epoch, self._perm, self._offset = -1, None, 0

    @property
    def windows_per_epoch(self) -> int:
        return self.index.count

    def _epoch_plan(self, epoch: int) -> None:
        if epoch != self._epoch:
            rng = np.random.default_rng([self.seed, epoch])
            self._perm = rng.permutation(self.index.count)
            self._offset = int(rng.integers(self.seq_len))
            self._epoch = epoch

    def _global_window(self, g: int) -> np.ndarray:
        epoch, i = divmod(g, self.index.count)
        self._epoch_plan(epoch)
        return self.index.window(int(self._perm[i]), self._offset)

    def micro_batches(self, step: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        per_rank = self.batch_size // self.world
        first = step * self.batch_size + self.rank * per_rank
        rows = np.stack([self._global_window(first + j) for j in range(per_rank)])  # (per_rank, T+1)
        t = torch.from_numpy(rows)
        return [(t[i : i + self.micro, :-1].contiguous(), t[i : i + self.micro, 1:].contiguous())
                for i in range(0, per_rank, self.micro)]

    def epoch_of(self, step: int) -> float:
        return step * self.batch_size / self.index.count


class ValBatches:
    """The held-out split in order, cut at offset 0, this process's share of `max_windows` windows."""

    def __init__(self, data: TokenDataset, *, seq_len: int, micro_batch_size: int, max_windows: int,
                 rank: int = 0, world_size: int = 1):
        self.index = WindowIndex(data.shards("val"), seq_len, spare=0)
        n = min(self.index.count, max_windows)
        per_rank = n // world_size
        if per_rank == 0:
            raise PrimerError(
                f"the validation split of {data.dir} has {data.num_tokens('val')} tokens, under {world_size} "
                f"sequence(s) of {seq_len + 1}; raise val_fraction in `primer tokenize`, or lower seq_len"
            )
        self.windows = list(range(rank * per_rank, (rank + 1) * per_rank))
        self.micro = micro_batch_size

    def __iter__(self):
        for i in range(0, len(self.windows), self.micro):
            rows = np.stack([self.index.window(w) for w in self.windows[i : i + self.micro]])
            t = torch.from_numpy(rows)
            yield t[:, :-1].contiguous(), t[:, 1:].contiguous()

    def __len__(self) -> int:
        return len(self.windows)
