"""The one template retrieved passages enter a prompt with (chat, eval, and later serve).

    Background:
    [1] TITLE
    PASSAGE TEXT

    [2] TITLE
    PASSAGE TEXT

    <the prompt the model would get without retrieval>

Passages are numbered by rank, so an answer can cite `[n]`, and `Hit.cite()` names each one's
document and character offsets. The closed-book prompt is kept word for word after the passages,
so closed-book and open-book scores differ only in what was retrieved. A passage is an index
chunk, at most `chunk_words` words (200 by default), so k passages cost ~k * 260 tokens of context.
"""

from __future__ import annotations

from collections.abc import Sequence


def _field(h, name: str):
    return h[name] if isinstance(h, dict) else getattr(h, name)


def passages_block(hits: Sequence) -> str:
    """`[n] title` + text for each hit (a `Hit` or its dict), blank lines between them."""
    return "\n\n".join(f"[{i}] {_field(h, 'title')}\n{_field(h, 'text').strip()}" for i, h in enumerate(hits, 1))


def with_passages(prompt: str, hits: Sequence) -> str:
    """`prompt` preceded by its retrieved passages; unchanged when nothing was retrieved."""
    if not hits:
        return prompt
    return f"Background:\n{passages_block(hits)}\n\n{prompt}"
