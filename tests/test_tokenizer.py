"""The GGUF tokenizer against its peers (llama.cpp, transformers) on real text; save/load round trips."""

import json
import re

import pytest

from primer.errors import PrimerError
from primer.model.tokenizer import Tokenizer

# Hand-picked lines: special tokens inside text, unicode, emoji, code, whitespace runs, digits.
EXTRA = [
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "text<|endoftext|>more text <|im_end|>",
    "Héllo wörld — naïve café, 東京タワー, Привет мир, مرحبا, 🤖🚀👍🏽 and \u200b zero-width",
    "def f(x):\n    return x ** 2  # square\n\n\tif x:\n\t\tpass\n",
    "for i in range(10):\n        print(i, 3.14159, 1_000_000)",
    "   leading spaces and trailing   ",
    "numbers: 12345 678 9, years 1999–2024, 3.5%, $100, 0x1F",
    "line\r\nwindows\r\n\r\nendings",
    "<|im_start|> not at start <|im_start|><|im_start|>",
    "a  1 b   22 c\n  3\t 4",
    "",
]


def _read_lines(data_dir, n_wiki=250, n_stories=250):
    wiki = [ln for ln in (data_dir / "wikitext2" / "wikitext-2-raw-test.txt").read_text(encoding="utf-8").split("\n") if ln.strip()]
    stories = [
        ln for ln in (data_dir / "tinystories" / "TinyStories-train_prefix.txt").read_text(encoding="utf-8").split("\n")
        if ln.strip()
    ]
    code = []
    he = data_dir / "humaneval" / "HumanEval.jsonl"
    if he.is_file():
        code = [json.loads(ln)["prompt"] for ln in he.read_text(encoding="utf-8").splitlines()[:40]]
    return wiki[:: max(1, len(wiki) // n_wiki)] + stories[:: max(1, len(stories) // n_stories)] + code


@pytest.fixture(scope="module")
def ours(bundled_gguf):
    try:  # the fast reader, when primer.weights.gguf_io is there; gguf.GGUFReader exposes the same fields
        from primer.weights.gguf_io import open_gguf as reader
    except ImportError:
        from gguf import GGUFReader as reader
    return Tokenizer.from_gguf(reader(bundled_gguf))


@pytest.mark.slow  # gguf.GGUFReader parses the 49k-entry arrays slowly (~10-25 s)
def test_same_tokenizer_through_gguf_package_reader(ours, bundled_gguf):
    import gguf

    assert Tokenizer.from_gguf(gguf.GGUFReader(bundled_gguf)).hash() == ours.hash()


class _Field:
    def __init__(self, v):
        self.v = v

    def contents(self):
        return self.v


class _FakeReader:
    def __init__(self, **fields):
        self.path = "fake.gguf"
        self.fields = {k.replace("__", "."): _Field(v) for k, v in fields.items()}


def test_from_gguf_metadata_variants():
    with pytest.raises(PrimerError, match="fake.gguf: tokenizer model 't5' is not supported"):
        Tokenizer.from_gguf(_FakeReader(tokenizer__ggml__model="t5"))
    with pytest.raises(PrimerError, match="no tokenizer.ggml.tokens"):
        Tokenizer.from_gguf(_FakeReader(tokenizer__ggml__model="gpt2"))
    # A tiny byte-level vocab: user-defined tokens stay whole but are not special; BOS added on request.
    tokens = ["<s>", "a", "b", "ab", "Ġ", "Ġab", "<think>"]
    tok = Tokenizer.from_gguf(_FakeReader(
        tokenizer__ggml__model="gpt2", tokenizer__ggml__pre="llama-bpe", tokenizer__ggml__tokens=tokens,
        tokenizer__ggml__merges=["a b", "Ġ ab"], tokenizer__ggml__token_type=[3, 1, 1, 1, 1, 1, 4],
        tokenizer__ggml__bos_token_id=0, tokenizer__ggml__add_bos_token=True,
    ))
    assert tok.encode("ab ab<think>") == [0, 3, 5, 6]
    assert tok.special_ids == {0}
    assert tok.decode([0, 3, 5, 6], skip_special_tokens=True) == "ab ab<think>"


@pytest.fixture(scope="module")
def lines(data_dir):
    return _read_lines(data_dir) + EXTRA


@pytest.fixture(scope="module")
def llama_vocab(bundled_gguf):
    llama_cpp = pytest.importorskip("llama_cpp")
    return llama_cpp.Llama(model_path=str(bundled_gguf), vocab_only=True, verbose=False)


def test_bundled_tokenizer_facts(ours):
    assert ours.vocab_size == 49152
    assert (ours.bos_token, ours.eos_token, ours.unk_token, ours.pad_token) == (
        "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|im_end|>",
    )
    assert (ours.bos_id, ours.eos_id, ours.add_bos) == (1, 2, False)
    assert ours.stop_ids == {0, 2}
    assert ours.encode("<|im_end|>") == [2]
    assert ours.encode("<|im_end|>", allow_special=False) != [2]
    assert len(ours.hash()) == 64
    import pickle  # data pipelines ship it to worker processes

    assert pickle.loads(pickle.dumps(ours)).encode("Hello <|im_end|>") == ours.encode("Hello <|im_end|>")


def test_matches_llama_cpp_on_real_text(ours, lines, llama_vocab):
    """llama.cpp reads the same metadata; SmolLM2 splits digits singly ('smollm' pre-tokenizer)."""
    assert len(lines) > 500
    for s in lines:
        assert ours.encode(s) == llama_vocab.tokenize(s.encode("utf-8"), add_bos=False, special=True), s
        assert ours.decode(ours.encode(s)) == s


def test_digit_split_matches_llama_cpp(ours, llama_vocab):
    # Two spaces then a digit: SmolLM2 (and llama.cpp) split off the digit first, so "  " is one token.
    for s in ["  1 x", "a  2023", "x\n  42"]:
        assert ours.encode(s) == llama_vocab.tokenize(s.encode(), add_bos=False, special=True)
    assert ours.encode("  1 x") == [256, 33, 1792]


@pytest.fixture(scope="module")
def hf_gguf_tok(bundled_gguf):
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(bundled_gguf.parent, gguf_file=bundled_gguf.name)


# transformers' GGUF loader splits 'smollm' text with GPT-2's regex alone (no single-digit split), so
# it differs from SmolLM2's own tokenizer.json and from llama.cpp only where whitespace, a space and
# a digit meet ("  1"). Those lines are compared with llama.cpp above, not here.
_HF_GGUF_DIGIT_GAP = re.compile(r"\s \d")


@pytest.mark.slow  # transformers' GGUF tokenizer load alone takes ~20-40 s on 2 CPUs
def test_matches_transformers_gguf_loader(ours, lines, hf_gguf_tok):
    compared = 0
    for s in lines:
        if _HF_GGUF_DIGIT_GAP.search(s):
            continue
        ids = ours.encode(s)
        assert ids == hf_gguf_tok.encode(s), s
        assert ours.decode(ids) == hf_gguf_tok.decode(ids) == s
        assert ours.decode(ids, skip_special_tokens=True) == hf_gguf_tok.decode(ids, skip_special_tokens=True)
        compared += 1
    assert compared > 450


CHATS = [
    [{"role": "user", "content": "What is photosynthesis?"}],
    [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hi ünïcode 🤖"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Bye"},
    ],
]


@pytest.mark.slow
@pytest.mark.parametrize("add_generation_prompt", [False, True])
def test_chat_template_matches_transformers(ours, hf_gguf_tok, add_generation_prompt):
    for chat in CHATS:
        want = hf_gguf_tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=add_generation_prompt)
        assert ours.apply_chat_template(chat, add_generation_prompt=add_generation_prompt) == want
        ids = ours.apply_chat_template(chat, add_generation_prompt=add_generation_prompt, tokenize=True)
        assert ids == hf_gguf_tok.encode(want, add_special_tokens=False)


def test_saved_dir_loads_in_transformers_identically(ours, lines, tmp_path):
    transformers = pytest.importorskip("transformers")
    ours.save(tmp_path)
    for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"):
        assert (tmp_path / f).is_file()
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path)
    again = Tokenizer.load(tmp_path)
    assert again.hash() == ours.hash()
    assert (hf.bos_token, hf.eos_token, hf.pad_token) == (ours.bos_token, ours.eos_token, ours.pad_token)
    for s in lines:  # every line, digit cases included: the saved file carries SmolLM2's split
        ids = ours.encode(s)
        assert hf.encode(s) == ids == again.encode(s), s
        assert hf.decode(ids) == s
    for chat in CHATS:
        assert hf.apply_chat_template(chat, tokenize=False, add_generation_prompt=True) == ours.apply_chat_template(
            chat, add_generation_prompt=True
        )


def test_add_bos_survives_save_and_transformers(ours, tmp_path):
    transformers = pytest.importorskip("transformers")
    import tokenizers

    tk = tokenizers.Tokenizer.from_str(ours.tk.to_str())
    bos = Tokenizer._with_processor(tk, bos_token="<|endoftext|>", eos_token="<|im_end|>", add_bos=True)
    assert bos.encode("hello")[0] == 0 and bos.encode("hello", add_special_tokens=False)[0] != 0
    assert bos.hash() != ours.hash()
    bos.save(tmp_path)
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path)
    for s in ["hello world", "x", "<|im_start|>hi"]:
        assert hf.encode(s) == bos.encode(s) == Tokenizer.load(tmp_path).encode(s)


def test_chat_template_raise_exception_is_a_primer_error(ours):
    tpl = "{% if messages[0]['role'] != 'user' %}{{ raise_exception('first message must be from the user') }}{% endif %}ok"
    assert ours.apply_chat_template([{"role": "user", "content": "x"}], chat_template=tpl) == "ok"
    with pytest.raises(PrimerError, match="first message must be from the user"):
        ours.apply_chat_template([{"role": "assistant", "content": "x"}], chat_template=tpl)
    with pytest.raises(PrimerError, match="sandbox|unsafe|access"):
        ours.apply_chat_template([], chat_template="{{ ''.__class__.__mro__ }}")


def test_load_errors(tmp_path):
    with pytest.raises(PrimerError, match="not found"):
        Tokenizer.load(tmp_path / "nope")
    with pytest.raises(PrimerError, match="no tokenizer.json"):
        Tokenizer.load(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(PrimerError, match="tokenizer.json"):
        Tokenizer.load(tmp_path)


# ----------------------------------------------------------------------------- sentencepiece GGUF ('llama' vocab)


@pytest.fixture(scope="module")
def spm_gguf(tmp_path_factory, data_dir):
    """A Llama-style sentencepiece BPE (byte fallback) trained on TinyStories, written as a vocab-only GGUF."""
    import io

    import gguf

    spm = pytest.importorskip("sentencepiece")
    text = (data_dir / "tinystories" / "TinyStories-train_prefix.txt").read_text(encoding="utf-8")
    train = [ln for ln in text.split("\n") if ln.strip()][:3000]
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(train), model_writer=buf, vocab_size=800, model_type="bpe", byte_fallback=True,
        user_defined_symbols=["<|user|>", "<|end|>"], normalization_rule_name="identity",
        remove_extra_whitespaces=False, split_digits=True, minloglevel=2,
    )
    sp = spm.SentencePieceProcessor(model_proto=buf.getvalue())
    tokens = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]

    def token_type(i):  # as llama.cpp's converter labels them
        for ty, test in ((2, sp.is_unknown), (3, sp.is_control), (6, sp.is_byte), (5, sp.is_unused)):
            if test(i):
                return ty
        return 4 if tokens[i] in ("<|user|>", "<|end|>") else 1

    path = tmp_path_factory.mktemp("spm") / "spm-vocab.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(64)
    w.add_embedding_length(8)
    w.add_block_count(1)
    w.add_feed_forward_length(16)
    w.add_head_count(2)
    w.add_head_count_kv(2)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(4)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([sp.get_score(i) for i in range(len(tokens))])
    w.add_token_types([token_type(i) for i in range(len(tokens))])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_space_prefix(True)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path, sp


def test_sentencepiece_gguf_matches_llama_cpp_and_sentencepiece(spm_gguf, lines):
    import gguf

    llama_cpp = pytest.importorskip("llama_cpp")
    path, sp = spm_gguf
    tok = Tokenizer.from_gguf(gguf.GGUFReader(path))
    assert (tok.bos_token, tok.eos_token, tok.unk_token, tok.add_bos) == ("<s>", "</s>", "<unk>", True)
    ref = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    for s in lines + ["<s>hi</s> <|user|>yo<|end|>x", "Ω≈ç√ byte fallback ☃"]:
        ids = tok.encode(s)
        assert ids == ref.tokenize(s.encode("utf-8"), add_bos=True, special=True), s
        if "<" not in s:  # sentencepiece itself knows no special tokens in text
            assert ids == [1] + sp.encode(s), s
            assert tok.decode(ids, skip_special_tokens=True) == sp.decode(ids[1:])
    saved = Tokenizer.load(tok.save(path.parent / "saved"))
    assert saved.hash() == tok.hash() and saved.encode(lines[0]) == tok.encode(lines[0])
    # transformers' GGUF loader (Metaspace: one prefix, and none when the text starts with a space) agrees
    # with sentencepiece / llama.cpp on text without special tokens or a leading space.
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    hf_saved = transformers.AutoTokenizer.from_pretrained(path.parent / "saved")
    for s in lines:
        if "<" not in s and not s[:1].isspace():
            assert hf.encode(s) == tok.encode(s), s
        assert hf_saved.encode(s) == tok.encode(s), s
