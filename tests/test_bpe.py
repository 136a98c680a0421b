"""Tokenizer training (byte-level BPE with specials) and loading existing tokenizers."""

import json

import pytest

from primer.tokens.bpe import EOT, SPECIAL_TOKENS, byte_tokenizer, document_end_id, load_tokenizer, train_bpe
from primer.errors import PrimerError
from primer.model.tokenizer import Tokenizer

TEXTS = [
    "Once upon a time there was a little cat. The cat liked to play in the sun.",
    "Tom had a red ball. He threw the ball to his dog, and the dog ran after it!",
    "Numbers like 12345 and symbols like $%& are bytes too: naïve café 日本.",
] * 20


@pytest.fixture(scope="module")
def tok():
    return train_bpe(TEXTS, 400)


def test_specials_take_the_first_ids_and_vocab_size_is_a_ceiling(tok):
    assert [tok.token_to_id(t) for t in SPECIAL_TOKENS] == [0, 1, 2]
    # This corpus runs out of pairs seen twice before 400; a larger one fills the vocabulary exactly.
    assert 259 < tok.vocab_size <= 400
    assert train_bpe(TEXTS, 300).vocab_size == 300
    assert document_end_id(tok) == 0 and tok.eos_token == EOT


def test_round_trip_any_text_including_unseen_bytes(tok):
    for text in TEXTS[:3] + ["Zebra ŝ 🙂 \t\n never seen"]:
        assert tok.decode(tok.encode(text)) == text


def test_merges_compress_the_training_text(tok):
    text = TEXTS[0]
    assert len(tok.encode(text)) < len(text.encode("utf-8")) / 2


def test_special_text_inside_documents_can_stay_plain_text(tok):
    ids = tok.encode(f"a {EOT} b", allow_special=False)
    assert 0 not in ids
    assert tok.encode(f"a{EOT}", allow_special=True)[-1] == 0


def test_chat_template_uses_the_role_tokens(tok):
    ids = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=True)
    assert ids[0] == 1 and 2 in ids


def test_saved_directory_and_tokenizer_json_load_with_the_same_hash(tok, tmp_path):
    tok.save(tmp_path / "t")
    assert load_tokenizer(tmp_path / "t").hash() == tok.hash()
    assert load_tokenizer(tmp_path / "t" / "tokenizer.json").hash() == tok.hash()
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "tokenizer.json").write_text((tmp_path / "t" / "tokenizer.json").read_text())
    assert load_tokenizer(alone / "tokenizer.json").encode("the cat") == tok.encode("the cat")


def test_hf_transformers_reads_the_same_ids(tok, tmp_path):
    transformers = pytest.importorskip("transformers")
    tok.save(tmp_path)
    hf = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    assert hf(TEXTS[1])["input_ids"] == tok.encode(TEXTS[1])


def test_byte_tokenizer_is_fixed():
    t = byte_tokenizer()
    assert t.vocab_size == 259 and t.encode("A") == [3 + 65]
    assert t.hash() == byte_tokenizer().hash()


def test_bad_inputs_are_clear_errors(tmp_path):
    with pytest.raises(PrimerError, match="too small"):
        train_bpe(TEXTS, 100)
    with pytest.raises(PrimerError, match="no documents"):
        train_bpe([], 300)
    with pytest.raises(PrimerError, match="tokenizer not found"):
        load_tokenizer(tmp_path / "nope")
    (tmp_path / "bad.json").write_text(json.dumps({"x": 1}))
    with pytest.raises(PrimerError, match="unreadable tokenizer"):
        load_tokenizer(tmp_path / "bad.json")


def test_tokenizer_from_the_bundled_gguf():
    try:
        t = load_tokenizer("bundled")
    except PrimerError as e:
        pytest.skip(str(e))
    assert isinstance(t, Tokenizer) and t.vocab_size == 49152
    assert document_end_id(t) == 0  # SmolLM2's <|endoftext|>
