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


def chat_query(user_turns: Sequence[str]) -> str:
    """What a chat turn searches for: the last user message, joined with the user message before it.

    A follow-up ("and what do they eat?") often names its subject only in the turn before, which
    the last message alone would not find; the two turns together do, and an unrelated earlier turn
    costs little because BM25 ranks by the words the passages share. Older turns are left out so a
    long conversation does not drift the search away from the current question.
    """
    return "\n".join(t for t in user_turns[-2:] if t.strip())


def with_passages(prompt: str, hits: Sequence) -> str:
    """`prompt` preceded by its retrieved passages; unchanged when nothing was retrieved."""
    if not hits:
        return prompt
    return f"Background:\n{passages_block(hits)}\n\n{prompt}"
