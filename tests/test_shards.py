"""Token shards: header, memmap reader, clear errors, and the `primer tokenize` stage end to end."""

import json

import numpy as np
import pytest

from primer.tokens.bpe import byte_tokenizer
from primer.cli import main as cli_main
from primer.errors import PrimerError
from primer.tokens.shards import (
    HEADER_BYTES,
    TokenDataset,
    TokenizeConfig,
    is_validation,
    iter_documents,
    open_shard,
    read_header,
    tokenize_corpus,
    write_shard,
)

H1, H2 = "ab" * 32, "cd" * 32


def test_header_round_trip_and_memmap(tmp_path):
    ids = np.arange(1000) % 500
    p = write_shard(tmp_path / "a.bin", ids, vocab_size=500, tokenizer_hash=H1)
    h = read_header(p)
    assert (h.version, h.itemsize, h.num_tokens, h.vocab_size, h.tokenizer_hash) == (1, 2, 1000, 500, H1)
    assert p.stat().st_size == HEADER_BYTES + 2000
    m = open_shard(p, H1)
    assert isinstance(m, np.memmap) and np.array_equal(m, ids)


def test_large_vocab_uses_uint32(tmp_path):
    ids = np.array([0, 70000, 99999])
    p = write_shard(tmp_path / "b.bin", ids, vocab_size=100000, tokenizer_hash=H1)
    assert read_header(p).itemsize == 4 and list(open_shard(p)) == [0, 70000, 99999]


def test_bad_shards_say_how_to_rebuild(tmp_path):
    p = write_shard(tmp_path / "c.bin", np.arange(10), vocab_size=10, tokenizer_hash=H1)
    with pytest.raises(PrimerError, match=r"written with tokenizer ababab.*primer tokenize"):
        open_shard(p, H2)
    raw = p.read_bytes()
    (tmp_path / "trunc.bin").write_bytes(raw[:-4])
    with pytest.raises(PrimerError, match="header says 10 tokens.*primer tokenize"):
        read_header(tmp_path / "trunc.bin")
    (tmp_path / "magic.bin").write_bytes(b"NOTASHRD" + raw[8:])
    with pytest.raises(PrimerError, match="not a primer token shard.*primer tokenize"):
        read_header(tmp_path / "magic.bin")
    (tmp_path / "ver.bin").write_bytes(raw[:8] + (99).to_bytes(4, "little") + raw[12:])
    with pytest.raises(PrimerError, match="format version 99"):
        read_header(tmp_path / "ver.bin")
    with pytest.raises(PrimerError, match="outside the vocabulary"):
        write_shard(tmp_path / "d.bin", np.array([5, 10]), vocab_size=10, tokenizer_hash=H1)


def _corpus(tmp_path):
    docs = [f"Story {i}: the cat number {i} sat on mat {i * 7}." for i in range(300)]
    jl = tmp_path / "docs.jsonl"
    jl.write_text("".join(json.dumps({"text": d, "id": i}) + "\n" for i, d in enumerate(docs[:200])))
    txt = tmp_path / "more.txt"
    txt.write_text("<|endoftext|>\n".join(docs[200:]) + "<|endoftext|>\n")
    return docs, [jl, txt]


def test_documents_from_jsonl_and_txt(tmp_path):
    docs, files = _corpus(tmp_path)
    assert list(iter_documents(files)) == docs
    assert list(iter_documents([tmp_path])) == docs[:200] + docs[200:]  # directory: sorted files
    with pytest.raises(PrimerError, match="no 'body' field"):
        list(iter_documents([files[0]], text_field="body"))
    with pytest.raises(PrimerError, match="input not found"):
        list(iter_documents([tmp_path / "missing.jsonl"]))


def test_tokenize_stage_writes_eot_separated_docs_and_a_stable_val_split(tmp_path):
    docs, files = _corpus(tmp_path)
    cfg = TokenizeConfig(inputs=[str(f) for f in files], out=str(tmp_path / "tok"), vocab_size=300,
                         val_fraction=0.1, shard_tokens=2000)
    meta = tokenize_corpus(cfg, progress=False)
    data = TokenDataset(cfg.out)
    tok = data.tokenizer()
    assert tok.hash() == meta.tokenizer_hash == data.tokenizer_hash
    val_docs = [d for d in docs if is_validation(d, 0.1)]
    train_docs = [d for d in docs if not is_validation(d, 0.1)]
    assert 10 <= len(val_docs) <= 60 and meta.splits["val"].documents == len(val_docs)
    assert len(data.shards("train")) == -(-meta.splits["train"].tokens // 2000) > 1
    for split, want in (("train", train_docs), ("val", val_docs)):
        ids = np.concatenate([np.asarray(s) for s in data.shards(split)])
        assert ids[-1] == data.eot_id == 0
        assert tok.decode(ids).split("<|endoftext|>")[:-1] == want
    # A second run with the same settings reuses the output; other settings need --overwrite.
    assert tokenize_corpus(cfg, progress=False).tokenizer_hash == meta.tokenizer_hash
    cfg.vocab_size = 280
    with pytest.raises(PrimerError, match="--overwrite"):
        tokenize_corpus(cfg, progress=False)


def test_existing_tokenizer_and_hash_mismatch(tmp_path):
    docs, files = _corpus(tmp_path)
    byte_tokenizer().save(tmp_path / "bytes")
    out = tmp_path / "tok"
    tokenize_corpus(TokenizeConfig(inputs=[str(files[0])], out=str(out), tokenizer=str(tmp_path / "bytes"),
                                   val_fraction=0.0), progress=False)
    data = TokenDataset(out)
    assert data.vocab_size == 259 and data.num_tokens("val") == 0
    first = np.asarray(data.shards("train")[0][:5])
    assert list(first) == [3 + b for b in docs[0].encode()[:5]]
    with pytest.raises(PrimerError, match="tokenizer in use is"):
        TokenDataset(out, tokenizer_hash=H2)


def test_tokenize_cli(tmp_path, capsys):
    _, files = _corpus(tmp_path)
    rc = cli_main(["tokenize", *map(str, files), "--out", str(tmp_path / "o"), "--vocab-size", "290",
                   "--no-progress"])
    assert rc == 0
    assert json.loads(capsys.readouterr().out)["vocab_size"] <= 290
    assert cli_main(["tokenize", "--out", str(tmp_path / "o2"), "--no-progress"]) == 2
    assert "no inputs" in capsys.readouterr().err
