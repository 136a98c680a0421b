"""Tuning batches as a pure function of the step (exact resume), padded or packed.

Each epoch visits the examples in a seeded permutation (or file order), cut into rows: one
example a row, or -- packing -- as many whole examples as fit in max_seq_len, greedily in that
order. Step s takes global rows [s*G, (s+1)*G) of the endless stream (G = batch_size) and process r
of W its contiguous share, as `primer train` does with token windows.

A row becomes (input, target): per example, input = ids[:-1] and target[t] = ids[t+1] where that
token is trained on, else -100. A packed row concatenates those pieces, restarts the rotary
positions at 0 for each example and carries a block-diagonal causal mask, so no token attends
across a boundary and each example's loss is what it would be alone (tests/test_tune.py).
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from primer.tune.chat import Encoded

IGNORE = -100


def fingerprint(examples) -> str:
    """sha256 over every example's ids and mask (a resumed run must see the same data)."""
    h = hashlib.sha256()
    for e in examples:
        for part in (e if isinstance(e, tuple) else (e,)):
            h.update(np.asarray(part.ids, dtype=np.int64).tobytes())
            h.update(np.asarray(part.mask, dtype=np.bool_).tobytes())
    return h.hexdigest()


def pieces(e: Encoded) -> tuple[list[int], list[int]]:
    """(input ids, targets) of one example."""
    tgt = [t if m else IGNORE for t, m in zip(e.ids[1:], e.mask[1:])]
    return e.ids[:-1], tgt


class RowPlan:
    """Global row number -> the example indices in that row, epoch by epoch (seeded, deterministic)."""

    def __init__(self, lengths: list[int], *, seq_len: int, packing: bool, shuffle: bool, seed: int):
        self.lengths, self.seq_len, self.packing, self.shuffle, self.seed = lengths, seq_len, packing, shuffle, seed
        self._epochs: list[list[list[int]]] = []
        self._starts: list[int] = [0]

    def _plan(self, epoch: int) -> list[list[int]]:
        n = len(self.lengths)
        order = np.random.default_rng([self.seed, epoch]).permutation(n) if self.shuffle else np.arange(n)
        if not self.packing:
            return [[int(i)] for i in order]
        rows, cur, used = [], [], 0
        for i in map(int, order):
            need = self.lengths[i] - 1  # an example of L ids gives L-1 input positions
            if cur and used + need > self.seq_len:
                rows.append(cur)
                cur, used = [], 0
            cur.append(i)
            used += need
        if cur:
            rows.append(cur)
        return rows

    def row(self, g: int) -> tuple[int, list[int]]:
        """(epoch, example indices) of global row g."""
        while g >= self._starts[-1]:
            rows = self._plan(len(self._epochs))
            self._epochs.append(rows)
            self._starts.append(self._starts[-1] + len(rows))
        e = int(np.searchsorted(self._starts, g, side="right") - 1)
        return e, self._epochs[e][g - self._starts[e]]

    def rows_per_epoch(self) -> int:
        self.row(0)
        return self._starts[1]


def collate(rows: list[list[tuple[list[int], list[int]]]], packed: bool):
    """(x, y, pos, attn_mask) tensors for rows of (input, target) pieces, right-padded.

    Unpacked rows need no mask (right padding never precedes a real token); packed rows get per-piece
    positions and a block-diagonal causal mask (B, 1, T, T)."""
    T = max(sum(len(p[0]) for p in r) for r in rows)
    B = len(rows)
    x = torch.zeros(B, T, dtype=torch.long)
    y = torch.full((B, T), IGNORE, dtype=torch.long)
    if not packed:
        for b, ((ids, tgt),) in enumerate(rows):
            x[b, : len(ids)] = torch.tensor(ids)
            y[b, : len(tgt)] = torch.tensor(tgt)
        return x, y, None, None
    pos = torch.zeros(B, T, dtype=torch.long)
    seg = torch.full((B, T), -1, dtype=torch.long)
    for b, r in enumerate(rows):
        at = 0
        for k, (ids, tgt) in enumerate(r):
            n = len(ids)
            x[b, at: at + n] = torch.tensor(ids)
            y[b, at: at + n] = torch.tensor(tgt)
            pos[b, at: at + n] = torch.arange(n)
            seg[b, at: at + n] = k
            at += n
        seg[b, at:] = len(r)  # padding: its own segment, so every query row attends to something
        pos[b, at:] = torch.arange(T - at)
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    mask = (seg[:, :, None] == seg[:, None, :]) & causal  # (B, T, T)
    return x, y, pos, mask.unsqueeze(1)


class SFTBatches:
    """`micro_batches(step)`: this process's micro-batches of (x, y, pos, mask, real tokens, trained tokens in the step)."""

    def __init__(self, examples: list[Encoded], *, seq_len: int, batch_size: int, micro_batch_size: int,
                 packing: bool, shuffle: bool = True, rank: int = 0, world_size: int = 1, seed: int = 0):
        self.examples, self.packing = [pieces(e) for e in examples], packing
        self.batch_size, self.micro, self.rank, self.world = batch_size, micro_batch_size, rank, world_size
        self.plan = RowPlan([len(e.ids) for e in examples], seq_len=seq_len, packing=packing, shuffle=shuffle, seed=seed)

    def rows(self, step: int) -> list[list[int]]:
        per_rank = self.batch_size // self.world
        first = step * self.batch_size + self.rank * per_rank
        return [self.plan.row(first + j)[1] for j in range(per_rank)]

    def micro_batches(self, step: int) -> list[tuple]:
        rows = [[self.examples[i] for i in r] for r in self.rows(step)]
        # Token-mean over the whole step: every micro-batch divides by the step's trained tokens.
        n = sum(sum(t != IGNORE for t in tgt) for r in rows for _, tgt in r)
        out = []
        for i in range(0, len(rows), self.micro):
            part = rows[i: i + self.micro]
            real = sum(len(ids) for r in part for ids, _ in r)
            out.append(collate(part, self.packing) + (real, max(n, 1)))
        return out

    def epoch_of(self, step: int) -> float:
        return step * self.batch_size / self.plan.rows_per_epoch()


class PairBatches:
    """DPO: `micro_batches(step)` gives (x, y, pair indices) with rows [chosen..., rejected...] of each micro-batch."""

    def __init__(self, pairs: list[tuple[Encoded, Encoded]], *, batch_size: int, micro_batch_size: int,
                 shuffle: bool = True, rank: int = 0, world_size: int = 1, seed: int = 0):
        self.pairs = pairs
        self.batch_size, self.micro, self.rank, self.world = batch_size, micro_batch_size, rank, world_size
        self.plan = RowPlan([2] * len(pairs), seq_len=1, packing=False, shuffle=shuffle, seed=seed)

    def micro_batches(self, step: int) -> list[tuple]:
        per_rank = self.batch_size // self.world
        first = step * self.batch_size + self.rank * per_rank
        idx = [self.plan.row(first + j)[1][0] for j in range(per_rank)]
        return [self.collate(idx[i: i + self.micro]) + (per_rank,) for i in range(0, per_rank, self.micro)]

    def collate(self, idx: list[int]) -> tuple:
        """(x, y, pair indices, real tokens): rows [chosen of each pair..., rejected of each pair...]."""
        rows = [[pieces(self.pairs[i][0])] for i in idx] + [[pieces(self.pairs[i][1])] for i in idx]
        x, y, _, _ = collate(rows, packed=False)
        return x, y, torch.tensor(idx), sum(len(r[0][0]) for r in rows)

    def epoch_of(self, step: int) -> float:
        return step * self.batch_size / self.plan.rows_per_epoch()
