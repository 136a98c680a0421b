"""Conversations in, token ids with an assistant mask out: the chat template decides the text.

Inputs (one JSON object a line, read through `primer.common.jsonl`):
  * OpenAI / HF `messages`: {"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]}
  * ShareGPT `conversations`: {"conversations": [{"from": "system"|"human"|"gpt", "value": "..."}, ...]}
  * preference pairs (DPO): {"prompt": str | messages, "chosen": str | messages, "rejected": str | messages};
    SFT reads a pair as its prompt and chosen reply, and a record `primer synth --kind preference` scored (it has
    `candidates`) only through its verified reply (`verified_reply`: rejection sampling)
A record that cannot be used (no assistant turn, an unknown role, empty content, chosen == rejected)
is counted and named in a `BadInput`, never dropped silently.

The loss mask follows the template, whatever it is: the text of assistant turn i is what
render(messages[:i+1]) adds to render(messages[:i], add_generation_prompt=True) -- for ChatML that is
"{content}<|im_end|>\\n", the reply plus the end-of-turn marker the model must learn to emit (TRL's
completion mask for a prompt-completion example is the same span). The rendered conversation is
tokenized once, and a token is trained on when its characters lie in such a span (tokenizer offsets).

A model primer pretrained has no chat template: `ensure_chat_template` gives its tokenizer ChatML
(`<|im_start|>`/`<|im_end|>` added as special tokens) and the model embedding rows for them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from primer.common.jsonl import BadInput, read_jsonl_lines
from primer.errors import PrimerError

ROLES = ("system", "user", "assistant")
SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
CHATML_TOKENS = ("<|im_start|>", "<|im_end|>")


class BadRecord(ValueError):
    """A record that cannot be used; the message says why."""


@dataclass
class Encoded:
    """One training sequence: ids, and which of them are trained on."""

    ids: list[int]
    mask: list[bool]
    source: str = ""
    """file:line of the record."""

    @property
    def trained(self) -> int:
        return sum(self.mask)


@dataclass
class Stats:
    """What happened to the input records: read, used, dropped and truncated, with the bad ones named."""

    records: int = 0
    used: int = 0
    truncated: int = 0
    bad: BadInput = field(default_factory=BadInput)

    def to_dict(self) -> dict[str, Any]:
        return {"records": self.records, "used": self.used, "truncated": self.truncated, "dropped": self.bad.count,
                "dropped_examples": self.bad.examples[:10]}


# ---------------------------------------------------------------------------------------------- records


def _messages(value: Any, what: str) -> list[dict[str, str]]:
    """A list of {"role", "content"} messages from OpenAI/HF or ShareGPT form (a bare string: one user turn)."""
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if not isinstance(value, list) or not value:
        raise BadRecord(f"'{what}' must be a non-empty list of messages")
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict):
            raise BadRecord(f"{what}[{i}] is not an object")
        if "role" in m:
            role, content = m.get("role"), m.get("content")
            if role not in ROLES:
                raise BadRecord(f"{what}[{i}] has unknown role {role!r} (known: {', '.join(ROLES)})")
        elif "from" in m:
            role, content = SHAREGPT_ROLES.get(m.get("from")), m.get("value")
            if role is None:
                raise BadRecord(f"{what}[{i}] has unknown ShareGPT role {m.get('from')!r} "
                                f"(known: {', '.join(SHAREGPT_ROLES)})")
        else:
            raise BadRecord(f"{what}[{i}] has neither 'role' (OpenAI/HF) nor 'from' (ShareGPT)")
        if not isinstance(content, str) or not content.strip():
            raise BadRecord(f"{what}[{i}] ({role}) has no text content")
        out.append({"role": role, "content": content})
    return out


def conversation(rec: dict) -> list[dict[str, str]]:
    """The messages of an SFT record; BadRecord when it has no assistant turn to learn from."""
    key = "messages" if "messages" in rec else "conversations" if "conversations" in rec else None
    if key is None and "prompt" in rec and ("chosen" in rec or "candidates" in rec):
        return _prompt(rec) + _reply(_sft_reply(rec), "chosen")
    if key is None:
        raise BadRecord("no 'messages' (OpenAI/HF) or 'conversations' (ShareGPT) field, nor a pair's 'prompt' and "
                        "'chosen'")
    msgs = _messages(rec[key], key)
    if not any(m["role"] == "assistant" for m in msgs):
        raise BadRecord("no assistant turn (nothing to train on)")
    return msgs


def _reply(value: Any, what: str) -> list[dict[str, str]]:
    if isinstance(value, str):
        value = [{"role": "assistant", "content": value}]
    msgs = _messages(value, what)
    if any(m["role"] != "assistant" for m in msgs):
        raise BadRecord(f"'{what}' must hold assistant turns only")
    return msgs


def verified_reply(rec: dict) -> str | None:
    """Rejection sampling's keep rule for a record `primer synth --kind preference` wrote (a pair, or in rejects.jsonl
    a prompt whose samples all scored alike): a sampled reply that passed every check of its verifier (score 1.0:
    IFEval's checkers, a constraint, the exact number, the refusal rule) and ended by itself (not cut at the token
    limit), the first such one. None when no sample did, or when the teacher judged them (a rubric score says
    better, not right)."""
    if rec.get("scored_by") in (None, "teacher_judge"):
        return None
    answers, scores = rec.get("candidates") or [], rec.get("scores") or []
    ended = rec.get("ended") or [True] * len(answers)  # a record from before `ended` was kept
    ok = [a for a, s, e in zip(answers, scores, ended) if s == 1.0 and e and isinstance(a, str) and a.strip()]
    return ok[0] if ok else None


def _sft_reply(rec: dict) -> Any:
    if "candidates" not in rec:
        return rec["chosen"]
    reply = verified_reply(rec)
    if reply is None:
        raise BadRecord(f"no sampled reply passed every check of its verifier ({rec.get('scored_by')}) and ended by "
                        "itself (SFT on scored pairs keeps verified replies only)")
    return reply


def _prompt(rec: dict) -> list[dict[str, str]]:
    prompt = _messages(rec["prompt"], "prompt")
    if prompt[-1]["role"] == "assistant":
        raise BadRecord("the prompt ends with an assistant turn; chosen/rejected continue a user turn")
    return prompt


def preference(rec: dict) -> tuple[list[dict], list[dict], list[dict]]:
    """(prompt messages, chosen turns, rejected turns) of a DPO record."""
    for k in ("prompt", "chosen", "rejected"):
        if k not in rec:
            raise BadRecord(f"no '{k}' field (a pair is {{prompt, chosen, rejected}})")
    prompt = _prompt(rec)
    chosen, rejected = _reply(rec["chosen"], "chosen"), _reply(rec["rejected"], "rejected")
    if chosen == rejected:
        raise BadRecord("chosen equals rejected (the pair prefers nothing)")
    return prompt, chosen, rejected


def read_records(paths: list[str | Path], stats: Stats):
    """(file:line, record) over every file; bad JSON lines are counted in stats.bad."""
    for path in paths:
        for lineno, rec in read_jsonl_lines(path, stats.bad):
            stats.records += 1
            yield f"{path}:{lineno}", rec


# ---------------------------------------------------------------------------------------------- template


def ensure_chat_template(model, tok) -> tuple[Any, Any, bool]:
    """(model, tokenizer, changed): a tokenizer without a chat template gets ChatML, its two special tokens
    and embedding rows for them (initialised to the mean embedding, so they start as an average token)."""
    if tok.chat_template is not None:
        return model, tok, False
    from tokenizers import AddedToken

    from primer.model.transformer import ModelConfig
    from primer.weights.checkpoint import model_from_state_dict

    tok.tk.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in CHATML_TOKENS])
    tok.chat_template = CHATML
    tok.eos_token = "<|im_end|>"
    need = tok.vocab_size
    cfg = model.cfg
    if need > cfg.vocab_size:
        sd = {k: v for k, v in model.state_dict().items()}
        old = sd["embed.weight"]
        grow = -(-need // 64) * 64 - old.shape[0]
        sd["embed.weight"] = torch.cat([old, old.mean(0, keepdim=True).expand(grow, -1)])
        if not cfg.tie_embeddings:
            head = sd["lm_head.weight"]
            sd["lm_head.weight"] = torch.cat([head, head.mean(0, keepdim=True).expand(grow, -1)])
            if "lm_head.bias" in sd:
                sd["lm_head.bias"] = torch.cat([sd["lm_head.bias"], sd["lm_head.bias"].new_full((grow,), -1e4)])
        new_cfg = ModelConfig.from_dict({**cfg.to_dict(), "vocab_size": old.shape[0] + grow})
        model = model_from_state_dict(new_cfg, sd, source="model with ChatML rows")
    return model, tok, True


def assistant_spans(tok, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """(rendered text, character spans of every assistant turn as the template writes it)."""
    text = tok.apply_chat_template(messages)
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before = tok.apply_chat_template(messages[:i], add_generation_prompt=True) if i else ""
        through = tok.apply_chat_template(messages[: i + 1])
        if not through.startswith(before) or not text.startswith(through):
            raise PrimerError(
                "the chat template renders a conversation's start differently from the whole conversation, so the "
                "assistant turns cannot be located; use a template whose rendering only appends"
            )
        spans.append((len(before), len(through)))
    return text, spans


def encode_chat(tok, messages: list[dict]) -> Encoded:
    """Token ids of the rendered conversation and the mask of assistant tokens (every assistant turn)."""
    text, spans = assistant_spans(tok, messages)
    enc = tok.tk.encode(text, add_special_tokens=False)
    mask = [any(a <= s < b for a, b in spans) for s, _ in enc.offsets]
    return Encoded(list(enc.ids), mask)


def encode_reply(tok, prompt: list[dict], reply: list[dict]) -> Encoded:
    """Prompt + reply, training (scoring) only the reply's turns."""
    msgs = prompt + reply
    text, spans = assistant_spans(tok, msgs)
    first = len([m for m in prompt if m["role"] == "assistant"])
    spans = spans[first:]
    enc = tok.tk.encode(text, add_special_tokens=False)
    return Encoded(list(enc.ids), [any(a <= s < b for a, b in spans) for s, _ in enc.offsets])


def fit(e: Encoded, max_len: int, overlong: str) -> Encoded | None:
    """`e` within max_len tokens: cut at the end ("truncate") or None ("drop"); None too when no trained token is left."""
    if len(e.ids) <= max_len:
        return e
    if overlong == "drop":
        return None
    cut = Encoded(e.ids[:max_len], e.mask[:max_len], e.source)
    return cut if cut.trained else None
