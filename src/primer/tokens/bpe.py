"""Train a byte-level BPE tokenizer on a corpus, or take an existing one (GGUF, HF dir, tokenizer.json).

A trained tokenizer is GPT-2's recipe (byte-level alphabet, GPT-2's split regex, no normalizer),
trained with Hugging Face `tokenizers` (Rust, multi-threaded), with special tokens for the end of
a document and for chat roles. It is returned as `primer.model.tokenizer.Tokenizer`, so it saves as a
directory that transformers loads, and its `hash()` is what token shards record.

Special tokens take ids 0, 1, 2, so they are the same for every vocabulary size:
  * `<|endoftext|>` (id 0): separates documents in the shards; the BOS/EOS/pad of the tokenizer.
  * `<|im_start|>` (1), `<|im_end|>` (2): ChatML role markers, for SFT later (the chat template
    below is ChatML, the one SmolLM2 / phi-3 style chat models use).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator

import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

from primer.errors import PrimerError
from primer.model.tokenizer import Tokenizer

EOT = "<|endoftext|>"
SPECIAL_TOKENS = (EOT, "<|im_start|>", "<|im_end|>")
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
MIN_VOCAB = 256 + len(SPECIAL_TOKENS)


def train_bpe(
    texts: Iterable[str],
    vocab_size: int,
    *,
    min_frequency: int = 2,
    special_tokens: tuple[str, ...] = SPECIAL_TOKENS,
    show_progress: bool = False,
) -> Tokenizer:
    """Train a byte-level BPE of `vocab_size` ids (specials and the 256 bytes included) on `texts`."""
    if vocab_size < MIN_VOCAB:
        raise PrimerError(f"vocab_size {vocab_size} is too small: a byte-level BPE needs at least {MIN_VOCAB} ids")
    tk = tokenizers.Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=show_progress,
    )
    n = 0

    def counted() -> Iterator[str]:
        nonlocal n
        for t in texts:
            n += 1
            yield t

    tk.train_from_iterator(counted(), trainer=trainer)
    if n == 0:
        raise PrimerError("no documents to train the tokenizer on (the inputs are empty)")
    eot = special_tokens[0]
    return Tokenizer(
        tk,
        bos_token=eot,
        eos_token=eot,
        pad_token=eot,
        unk_token=None,
        chat_template=CHATML_TEMPLATE if "<|im_start|>" in special_tokens else None,
    )


def byte_tokenizer(special_tokens: tuple[str, ...] = SPECIAL_TOKENS) -> Tokenizer:
    """A byte-level tokenizer without merges (specials first, then the 256 bytes): fixed, for tests and benchmarks."""
    from tokenizers import AddedToken

    from primer.model.tokenizer import bytes_to_unicode

    vocab = {t: i for i, t in enumerate(special_tokens)}
    for b, ch in sorted(bytes_to_unicode().items()):
        vocab[ch] = len(special_tokens) + b
    tk = tokenizers.Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tk.decoder = decoders.ByteLevel()
    tk.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in special_tokens])
    eot = special_tokens[0]
    return Tokenizer(tk, bos_token=eot, eos_token=eot, pad_token=eot)


def load_tokenizer(source: str | Path) -> Tokenizer:
    """An existing tokenizer: a GGUF model file ("bundled" = the bundled SmolLM2), an HF tokenizer
    directory (or a primer checkpoint directory), or a tokenizer.json file."""
    if str(source) == "bundled":
        from primer.weights.bundled import bundled_gguf_path

        source = bundled_gguf_path()
    p = Path(source)
    if p.suffix == ".gguf":
        from primer.weights.gguf_io import open_gguf  # reads the metadata only, not the weights

        return Tokenizer.from_gguf(open_gguf(p))
    if p.is_dir():
        return Tokenizer.load(p)
    if p.is_file() and p.name.endswith(".json"):
        if (p.parent / "tokenizer_config.json").is_file():
            return Tokenizer.load(p.parent)
        try:
            tk = tokenizers.Tokenizer.from_file(str(p))
        except Exception as e:  # tokenizers raises a bare Exception on bad files
            raise PrimerError(f"{p}: unreadable tokenizer file ({e})") from None
        eot = EOT if tk.token_to_id(EOT) is not None else None
        return Tokenizer(tk, bos_token=eot, eos_token=eot)
    raise PrimerError(
        f"tokenizer not found: {source} (give a .gguf model file, a tokenizer directory, or a tokenizer.json)"
    )


def document_end_id(tok: Tokenizer) -> int:
    """The id written between documents: `<|endoftext|>` when present, else the tokenizer's EOS."""
    i = tok.token_to_id(EOT)
    if i is None:
        i = tok.eos_id
    if i is None:
        raise PrimerError("the tokenizer has neither <|endoftext|> nor an EOS token to separate documents")
    return i
