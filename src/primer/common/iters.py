"""Iteration helpers (`itertools.batched` arrives only in Python 3.12; primer supports 3.11)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import islice
from typing import TypeVar

T = TypeVar("T")


def batched(items: Iterable[T], n: int) -> Iterator[list[T]]:
    """Consecutive lists of `n` items from `items` (the last one shorter), read lazily."""
    if n < 1:
        raise ValueError(f"batch size must be at least 1, got {n}")
    it = iter(items)
    while batch := list(islice(it, n)):
        yield batch
