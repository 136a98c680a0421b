"""The tokenizer: a Hugging Face `tokenizers.Tokenizer` plus the few facts around it that a model needs.

One class for every source:
  * `Tokenizer.from_gguf(reader)`: rebuilt from a GGUF file's metadata (tokens, merges, token
    types, special ids, add_bos, chat template) as transformers' GGUF loader does: a byte-level
    BPE ('gpt2', split the way `tokenizer.ggml.pre` says) or a sentencepiece BPE with byte
    fallback ('llama': Llama-2, phi-3), merges rebuilt from the scores when the file has none.
  * `Tokenizer.load(dir)`: a Hugging Face tokenizer directory (tokenizer.json, or GPT-2's
    vocab.json + merges.txt) with its tokenizer_config.json, or one this class saved.
  * `save(dir)` writes tokenizer.json + tokenizer_config.json + special_tokens_map.json +
    chat_template.jinja, which `transformers.AutoTokenizer.from_pretrained(dir)` loads and
    encodes identically.

Chat templates are rendered with jinja2 in a sandbox, with the globals transformers gives them
(`raise_exception`, `strftime_now`, a non-escaping `tojson`), so the same template renders the same
text here and in transformers. `hash()` is a content hash used to check that token shards were
written by the same tokenizer that reads them.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

import tokenizers
from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers, processors

from primer.errors import PrimerError

# llama.cpp token types (gguf.TokenType): 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte.
_CONTROL, _USER_DEFINED = 3, 4

# GPT-2's split (the ByteLevel pre-tokenizer's built-in regex) is the default; other llama.cpp
# `tokenizer.ggml.pre` names split text before it. Regexes are llama.cpp's / transformers'.
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# Pre names whose text is split into single digits first, then by GPT-2's regex
# (SmolLM2 / StarCoder: `Digits(individual_digits=True)` + `ByteLevel` in their tokenizer.json).
_DIGITS_THEN_GPT2 = {"smollm", "starcoder", "refact"}
_GPT2_DEFAULT = {None, "default", "gpt-2", "gpt2", "phi-2", "olmo", "jais", "poro-chat", "viking"}
_SPLITS = {
    **dict.fromkeys(["llama3", "llama-v3", "llama-bpe", "falcon3", "dbrx", "smaug-bpe", "pixtral"], _LLAMA3_SPLIT),
    **dict.fromkeys(["qwen2", "deepseek-r1-qwen", "megrez"], _QWEN2_SPLIT),
}

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table (the byte-level BPE alphabet)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def byte_level_pre_tokenizer(pre: str | None):
    """The pre-tokenizer for llama.cpp's `tokenizer.ggml.pre` name `pre`."""
    if pre in _DIGITS_THEN_GPT2:
        return pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
        )
    if pre in _SPLITS:
        return pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(_SPLITS[pre]), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    if pre not in _GPT2_DEFAULT:
        warnings.warn(f"unknown GGUF pre-tokenizer '{pre}'; splitting text the GPT-2 way", stacklevel=3)
    return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)


def _special_processor(bos: str | None, eos: str | None, add_bos: bool, add_eos: bool, vocab: dict[str, int]):
    """A post-processor adding BOS/EOS as configured (what transformers builds from add_bos_token)."""
    pre = [bos] if add_bos and bos is not None else []
    post = [eos] if add_eos and eos is not None else []
    single = [f"{t}:0" for t in pre] + ["$A:0"] + [f"{t}:0" for t in post]
    pair = single + [f"{t}:1" for t in pre] + ["$B:1"] + [f"{t}:1" for t in post]
    specials = [(t, vocab[t]) for t in dict.fromkeys(pre + post)]
    return processors.TemplateProcessing(single=single, pair=pair, special_tokens=specials)


def _token_str(value) -> str | None:
    """A special token from tokenizer_config.json: a string, or an AddedToken dict with "content"."""
    if isinstance(value, dict):
        return value.get("content")
    return value


class Tokenizer:
    """A `tokenizers.Tokenizer` with its special tokens, BOS/EOS policy and chat template."""

    def __init__(
        self,
        tk: tokenizers.Tokenizer,
        *,
        bos_token: str | None = None,
        eos_token: str | None = None,
        unk_token: str | None = None,
        pad_token: str | None = None,
        add_bos: bool = False,
        add_eos: bool = False,
        chat_template: str | None = None,
        model_max_length: int | None = None,
    ):
        self.tk = tk
        self.bos_token, self.eos_token, self.unk_token, self.pad_token = bos_token, eos_token, unk_token, pad_token
        self.add_bos, self.add_eos = add_bos, add_eos
        self.chat_template = chat_template
        self.model_max_length = model_max_length
        for name in ("bos_token", "eos_token", "unk_token", "pad_token"):
            tok = getattr(self, name)
            if tok is not None and tk.token_to_id(tok) is None:
                raise PrimerError(f"tokenizer {name} '{tok}' is not in the vocabulary")

    # ---------------------------------------------------------------- construction

    @classmethod
    def from_gguf(cls, reader) -> "Tokenizer":
        """Rebuild the tokenizer a GGUF file describes (`reader`: a `gguf.GGUFReader`)."""

        def get(key, default=None):
            f = reader.fields.get(key)
            return default if f is None else f.contents()

        # primer.weights.gguf_io.GGUFFile has .path; gguf.GGUFReader keeps the name on its memmap.
        where = getattr(reader, "path", None) or getattr(getattr(reader, "data", None), "filename", None) or "GGUF file"
        kind = get("tokenizer.ggml.model")
        if kind not in ("gpt2", "llama"):
            raise PrimerError(
                f"{where}: tokenizer model '{kind}' is not supported (byte-level BPE 'gpt2' or sentencepiece 'llama')"
            )
        tokens: list[str] = get("tokenizer.ggml.tokens")
        merges: list[str] | None = get("tokenizer.ggml.merges")
        if not tokens or (kind == "gpt2" and not merges):
            raise PrimerError(f"{where}: GGUF metadata has no tokenizer.ggml.tokens / tokenizer.ggml.merges")
        types = get("tokenizer.ggml.token_type") or [1] * len(tokens)
        if kind == "gpt2":
            tk, control, user = _byte_level_bpe(tokens, merges, types, get("tokenizer.ggml.pre"))
            add_bos_default = False
        else:
            scores = get("tokenizer.ggml.scores")
            if not merges and not scores:
                raise PrimerError(f"{where}: sentencepiece vocabulary without tokenizer.ggml.scores or merges")
            prefix = bool(get("tokenizer.ggml.add_space_prefix", True))
            tk, control, user = _sentencepiece_bpe(tokens, merges, scores, types, prefix)
            add_bos_default = True  # llama.cpp adds BOS to a sentencepiece vocabulary that does not say otherwise
        # Control tokens stay whole (special); user-defined ones stay whole but are plain text.
        tk.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in control])
        if user:
            tk.add_tokens([AddedToken(t, normalized=False, special=False) for t in user])

        def special(key):
            i = get(f"tokenizer.ggml.{key}")
            return tokens[i] if i is not None and 0 <= i < len(tokens) else None

        return cls._with_processor(
            tk,
            bos_token=special("bos_token_id"),
            eos_token=special("eos_token_id"),
            unk_token=special("unknown_token_id"),
            pad_token=special("padding_token_id"),
            add_bos=bool(get("tokenizer.ggml.add_bos_token", add_bos_default)),
            add_eos=bool(get("tokenizer.ggml.add_eos_token", False)),
            chat_template=get("tokenizer.chat_template"),
            model_max_length=None,
        )

    @classmethod
    def _with_processor(cls, tk: tokenizers.Tokenizer, **kw) -> "Tokenizer":
        tk.post_processor = _special_processor(
            kw.get("bos_token"), kw.get("eos_token"), kw.get("add_bos", False), kw.get("add_eos", False),
            tk.get_vocab(with_added_tokens=True),
        )
        return cls(tk, **kw)

    @classmethod
    def load(cls, directory: str | Path) -> "Tokenizer":
        """A tokenizer directory: tokenizer.json (or vocab.json + merges.txt) and tokenizer_config.json."""
        d = Path(directory)
        if not d.is_dir():
            raise PrimerError(f"tokenizer directory not found: {d}")
        cfg_path = d / "tokenizer_config.json"
        cfg = _read_json(cfg_path) if cfg_path.is_file() else {}
        stm_path = d / "special_tokens_map.json"
        stm = _read_json(stm_path) if stm_path.is_file() else {}
        if (d / "tokenizer.json").is_file():
            try:
                tk = tokenizers.Tokenizer.from_file(str(d / "tokenizer.json"))
            except Exception as e:
                raise PrimerError(f"{d / 'tokenizer.json'}: unreadable tokenizer file ({e})") from None
            rebuild = False
        elif (d / "vocab.json").is_file() and (d / "merges.txt").is_file():
            # GPT-2 style slow files (e.g. older phi / codegen checkpoints).
            bpe = models.BPE.from_file(str(d / "vocab.json"), str(d / "merges.txt"))
            tk = tokenizers.Tokenizer(bpe)
            tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=bool(cfg.get("add_prefix_space", False)))
            tk.decoder = decoders.ByteLevel()
            for tid, tok in sorted((cfg.get("added_tokens_decoder") or {}).items(), key=lambda kv: int(kv[0])):
                at = AddedToken(tok["content"], normalized=tok.get("normalized", False), special=tok.get("special", True))
                (tk.add_special_tokens if tok.get("special", True) else tk.add_tokens)([at])
            rebuild = True
        else:
            raise PrimerError(f"{d}: no tokenizer.json (or vocab.json + merges.txt) found")
        template = cfg.get("chat_template")
        if (d / "chat_template.jinja").is_file():
            template = (d / "chat_template.jinja").read_text(encoding="utf-8")
        elif (d / "chat_template.json").is_file():
            template = _read_json(d / "chat_template.json").get("chat_template")
        if isinstance(template, list):  # named templates: use the default one
            template = next((t["template"] for t in template if t.get("name") == "default"), template[0]["template"])
        kw = dict(
            bos_token=_token_str(cfg.get("bos_token", stm.get("bos_token"))),
            eos_token=_token_str(cfg.get("eos_token", stm.get("eos_token"))),
            unk_token=_token_str(cfg.get("unk_token", stm.get("unk_token"))),
            pad_token=_token_str(cfg.get("pad_token", stm.get("pad_token"))),
            add_bos=bool(cfg.get("add_bos_token", False)),
            add_eos=bool(cfg.get("add_eos_token", False)),
            chat_template=template,
            model_max_length=_max_len(cfg.get("model_max_length")),
        )
        for name in ("bos_token", "eos_token", "unk_token", "pad_token"):
            if kw[name] is not None and tk.token_to_id(kw[name]) is None:
                warnings.warn(f"{d}: {name} '{kw[name]}' is not in the vocabulary; ignoring it", stacklevel=2)
                kw[name] = None
        # A tokenizer.json carries its own post-processor; keep it unless the config asks for BOS/EOS
        # it does not add (transformers rebuilds it from add_bos_token in that case too).
        if rebuild or "add_bos_token" in cfg or "add_eos_token" in cfg:
            return cls._with_processor(tk, **kw)
        return cls(tk, **kw)

    # ---------------------------------------------------------------- properties

    @property
    def vocab_size(self) -> int:
        """Number of ids, added tokens included."""
        return self.tk.get_vocab_size(with_added_tokens=True)

    def __len__(self) -> int:
        return self.vocab_size

    def token_to_id(self, token: str) -> int | None:
        return self.tk.token_to_id(token)

    def id_to_token(self, i: int) -> str | None:
        return self.tk.id_to_token(i)

    @property
    def bos_id(self) -> int | None:
        return None if self.bos_token is None else self.tk.token_to_id(self.bos_token)

    @property
    def eos_id(self) -> int | None:
        return None if self.eos_token is None else self.tk.token_to_id(self.eos_token)

    @property
    def pad_id(self) -> int | None:
        return None if self.pad_token is None else self.tk.token_to_id(self.pad_token)

    @property
    def unk_id(self) -> int | None:
        return None if self.unk_token is None else self.tk.token_to_id(self.unk_token)

    @property
    def special_ids(self) -> set[int]:
        """Ids of every special (control) token."""
        return {i for i, t in self.tk.get_added_tokens_decoder().items() if t.special}

    @property
    def stop_ids(self) -> set[int]:
        """Ids that end a generation: EOS plus the end-of-turn / end-of-text markers present."""
        ids = {self.eos_id} if self.eos_id is not None else set()
        for t in ("<|endoftext|>", "<|im_end|>", "<|end|>", "<|eot_id|>", "<|end_of_text|>", "</s>"):
            i = self.tk.token_to_id(t)
            if i is not None and i in self.special_ids:
                ids.add(i)
        return ids

    # ---------------------------------------------------------------- encode / decode

    def encode(self, text: str, *, add_special_tokens: bool = True, allow_special: bool = True) -> list[int]:
        """Token ids of `text`.

        add_special_tokens: add BOS/EOS as the tokenizer is configured to (`add_bos`/`add_eos`).
        allow_special: special-token text in `text` (e.g. "<|im_end|>") becomes that one id; False
            encodes it as plain text (for untrusted data).
        """
        if allow_special:
            return self.tk.encode(text, add_special_tokens=add_special_tokens).ids
        return self._plain(lambda: self.tk.encode(text, add_special_tokens=add_special_tokens).ids)

    def encode_batch(
        self, texts: list[str], *, add_special_tokens: bool = True, allow_special: bool = True
    ) -> list[list[int]]:
        """`encode` over many texts, in parallel threads (Rust)."""
        fn = getattr(self.tk, "encode_batch_fast", self.tk.encode_batch)
        run = lambda: [e.ids for e in fn(list(texts), add_special_tokens=add_special_tokens)]  # noqa: E731
        return run() if allow_special else self._plain(run)

    def _plain(self, fn):
        old = self.tk.encode_special_tokens
        self.tk.encode_special_tokens = True
        try:
            return fn()
        finally:
            self.tk.encode_special_tokens = old

    def decode(self, ids: Iterable[int], *, skip_special_tokens: bool = False) -> str:
        return self.tk.decode(list(map(int, ids)), skip_special_tokens=skip_special_tokens)

    def decode_batch(self, batch: list[list[int]], *, skip_special_tokens: bool = False) -> list[str]:
        return self.tk.decode_batch([list(map(int, b)) for b in batch], skip_special_tokens=skip_special_tokens)

    # ---------------------------------------------------------------- chat

    def apply_chat_template(
        self,
        messages: list[dict[str, Any]],
        *,
        add_generation_prompt: bool = False,
        tokenize: bool = False,
        chat_template: str | None = None,
        **kwargs,
    ) -> str | list[int]:
        """Render `messages` ([{"role", "content"}, ...]) with the chat template (as transformers does).

        tokenize=True returns ids (the rendered text already holds any BOS, so none is added).
        Extra keyword arguments (tools, documents, ...) are passed to the template.
        """
        import jinja2

        template = chat_template or self.chat_template
        if template is None:
            raise PrimerError("this tokenizer has no chat template; pass chat_template= or use a chat model")
        ctx = {
            "bos_token": self.bos_token, "eos_token": self.eos_token,
            "unk_token": self.unk_token, "pad_token": self.pad_token,
        }
        ctx.update(kwargs)
        try:
            text = _compile_template(template).render(
                messages=messages, add_generation_prompt=add_generation_prompt, **ctx
            )
        except jinja2.exceptions.TemplateError as e:
            raise PrimerError(f"chat template: {e}") from None
        return self.encode(text, add_special_tokens=False) if tokenize else text

    # ---------------------------------------------------------------- save / identity

    def config_dict(self) -> dict[str, Any]:
        """The tokenizer_config.json we write (fields transformers reads)."""
        added = {
            str(i): {
                "content": t.content, "lstrip": t.lstrip, "normalized": t.normalized, "rstrip": t.rstrip,
                "single_word": t.single_word, "special": t.special,
            }
            for i, t in sorted(self.tk.get_added_tokens_decoder().items())
        }
        cfg: dict[str, Any] = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "added_tokens_decoder": added,
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
            "unk_token": self.unk_token,
            "pad_token": self.pad_token,
            "add_bos_token": self.add_bos,
            "add_eos_token": self.add_eos,
            "clean_up_tokenization_spaces": False,
            "model_max_length": self.model_max_length or 1_000_000_000_000_000_019_884_624_838_656,
        }
        if self.chat_template is not None:
            cfg["chat_template"] = self.chat_template
        return cfg

    def save(self, directory: str | Path) -> Path:
        """Write tokenizer.json, tokenizer_config.json, special_tokens_map.json (+ chat_template.jinja)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self.tk.save(str(d / "tokenizer.json"))
        _write_json(d / "tokenizer_config.json", self.config_dict())
        stm = {k: getattr(self, k) for k in ("bos_token", "eos_token", "unk_token", "pad_token") if getattr(self, k)}
        _write_json(d / "special_tokens_map.json", stm)
        if self.chat_template is not None:
            (d / "chat_template.jinja").write_text(self.chat_template, encoding="utf-8")
        return d

    def hash(self) -> str:
        """A stable sha256 (hex) of what decides the ids: vocab, merges, added tokens, splitting, BOS/EOS."""
        j = json.loads(self.tk.to_str())
        content = {
            "model": j.get("model"),
            "added_tokens": [(t["id"], t["content"], t.get("special")) for t in j.get("added_tokens", [])],
            "normalizer": j.get("normalizer"),
            "pre_tokenizer": j.get("pre_tokenizer"),
            "bos": self.bos_token if self.add_bos else None,
            "eos": self.eos_token if self.add_eos else None,
        }
        return hashlib.sha256(json.dumps(content, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()

    def __repr__(self) -> str:
        return (
            f"Tokenizer(vocab_size={self.vocab_size}, bos={self.bos_token!r}, eos={self.eos_token!r}, "
            f"add_bos={self.add_bos}, chat_template={'yes' if self.chat_template else 'no'})"
        )


def _byte_level_bpe(tokens: list[str], merges: list[str], types: list[int], pre: str | None):
    """(tokenizer, control tokens, user-defined tokens) for a GGUF 'gpt2' (byte-level BPE) vocabulary."""
    spelling = bytes_to_unicode()
    alphabet = set(spelling.values())
    # Every real token is spelled in the byte alphabet; respell any stored as raw text (as transformers does).
    vocab: dict[str, int] = {}
    for i, t in enumerate(tokens):
        key = t if set(t) <= alphabet else "".join(spelling[b] for b in t.encode("utf-8"))
        vocab.setdefault(key, i)
    bpe = models.BPE(vocab=vocab, merges=[tuple(m.split(" ", 1)) for m in merges], fuse_unk=False)
    tk = tokenizers.Tokenizer(bpe)
    tk.pre_tokenizer = byte_level_pre_tokenizer(pre)
    tk.decoder = decoders.ByteLevel()
    # A "control" token outside the byte alphabet is a llama.cpp mislabel and is left alone.
    control = [t for t, ty in zip(tokens, types) if ty == _CONTROL and set(t) <= alphabet]
    user = [t for t, ty in zip(tokens, types) if ty == _USER_DEFINED and t in vocab]
    return tk, control, user


def _merges_from_scores(tokens: list[str], scores: list[float]) -> list[tuple[str, str]]:
    """BPE merges that reproduce sentencepiece's highest-score-first merging (transformers' generate_merges)."""
    vocab = {t: i for i, t in enumerate(tokens)}
    found = []
    for t, score in zip(tokens, scores):
        local = [(t[:k], t[k:], score) for k in range(1, len(t)) if t[:k] in vocab and t[k:] in vocab]
        found.extend(sorted(local, key=lambda m: (vocab[m[0]], vocab[m[1]])))
    found.sort(key=lambda m: (m[2], len(m[0]), len(m[1])), reverse=True)
    return [(a, b) for a, b, _ in found]


def _sentencepiece_bpe(tokens, merges, scores, types, add_space_prefix: bool):
    """(tokenizer, control, user-defined) for a GGUF 'llama' (sentencepiece BPE, byte fallback) vocabulary.

    Spaces become U+2581 and, with add_space_prefix, every text run gets one in front -- after a
    special token too, as llama.cpp does (a normalizer, not Metaspace's first-only prefix).
    """
    vocab: dict[str, int] = {}
    for i, t in enumerate(tokens):
        vocab.setdefault(t, i)
    pairs = [tuple(m.split(" ", 1)) for m in merges] if merges else _merges_from_scores(tokens, scores)
    unk = next((t for t, ty in zip(tokens, types) if ty == 2), None)
    bpe = models.BPE(vocab=vocab, merges=pairs, unk_token=unk, fuse_unk=True, byte_fallback=True)
    tk = tokenizers.Tokenizer(bpe)
    steps = [normalizers.Prepend("\u2581")] if add_space_prefix else []
    tk.normalizer = normalizers.Sequence(steps + [normalizers.Replace(" ", "\u2581")])
    dec = [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()]
    tk.decoder = decoders.Sequence(dec + ([decoders.Strip(" ", 1, 0)] if add_space_prefix else []))
    control = [t for t, ty in zip(tokens, types) if ty == _CONTROL]
    user = [t for t, ty in zip(tokens, types) if ty == _USER_DEFINED]
    return tk, control, user


@lru_cache(maxsize=16)
def _compile_template(template: str):
    """Compile a chat template in a sandbox with transformers' globals and filters."""
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        # jinja's own tojson escapes HTML characters; templates expect plain JSON.
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    try:
        return env.from_string(template)
    except jinja2.exceptions.TemplateSyntaxError as e:
        raise PrimerError(f"chat template does not parse: {e}") from None


def _max_len(v) -> int | None:
    return int(v) if isinstance(v, (int, float)) and v < 1e15 else None


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise PrimerError(f"{path}: unreadable JSON ({e})") from None


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
