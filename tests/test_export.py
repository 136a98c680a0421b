"""`primer export`: GGUF files primer writes read back as the same model, for both block shapes and
every tensor type; the tokenizer, special tokens and chat template survive; bad requests get one line."""

import json

import gguf
import numpy as np
import pytest
import torch

from primer.cli import main as cli_main
from primer.errors import PrimerError
from primer.model.transformer import ModelConfig, Transformer
from primer.tokens.bpe import byte_tokenizer, train_bpe
from primer.weights.checkpoint import save_checkpoint
from primer.weights.export import QUANTS, gguf_vocab, pre_tokenizer_name, tensor_type, write_gguf
from primer.weights.gguf_io import open_gguf, permute_rope, unpermute_rope
from primer.weights.load import load_model

TEXTS = [
    "Once upon a time there was a little fox who liked to read books about the sea.",
    "The fox read 12 books in 3 days, and then it wrote one of its own!",
    "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen.",
] * 20


@pytest.fixture(scope="module")
def tok():
    return train_bpe(TEXTS, 300)


def tiny(shape: str, **kw) -> Transformer:
    torch.manual_seed(0)
    m = Transformer(ModelConfig.from_name(shape, **{"vocab_size": 320, **kw})).eval()
    with torch.no_grad():  # non-zero biases and norms, so a dropped or misplaced one shows
        for name, p in m.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return m


def fake_quant(model: Transformer, path) -> dict[str, torch.Tensor]:
    """What primer should read back: each tensor passed through gguf-py's own quantize/dequantize
    with the type the file holds (Q/K permuted for llama files and back)."""
    types = {t.name: t.tensor_type for t in open_gguf(path).tensors}
    cfg, out = model.cfg, {}
    llama = not cfg.parallel_residual
    for name, w in model.state_dict().items():
        gname = {"embed.weight": "token_embd.weight", "norm.weight": "output_norm.weight",
                 "norm.bias": "output_norm.bias", "lm_head.weight": "output.weight", "lm_head.bias": "output.bias"}.get(name)
        if gname is None:
            i, rest = name.split(".", 2)[1:]
            part = {"attn_norm.weight": "attn_norm.weight", "attn_norm.bias": "attn_norm.bias",
                    "mlp_norm.weight": "ffn_norm.weight", "attn.q_proj.weight": "attn_q.weight",
                    "attn.k_proj.weight": "attn_k.weight", "attn.v_proj.weight": "attn_v.weight",
                    "attn.o_proj.weight": "attn_output.weight", "attn.q_proj.bias": "attn_q.bias",
                    "attn.k_proj.bias": "attn_k.bias", "attn.v_proj.bias": "attn_v.bias",
                    "attn.o_proj.bias": "attn_output.bias", "mlp.gate_proj.weight": "ffn_gate.weight",
                    "mlp.up_proj.weight": "ffn_up.weight", "mlp.down_proj.weight": "ffn_down.weight",
                    "mlp.fc1.weight": "ffn_up.weight", "mlp.fc1.bias": "ffn_up.bias",
                    "mlp.fc2.weight": "ffn_down.weight", "mlp.fc2.bias": "ffn_down.bias"}[rest]
            gname = f"blk.{i}.{part}"
        if gname == "output.weight" and gname not in types:
            gname = "token_embd.weight"  # tied head
        heads = (cfg.n_head if ".q_proj." in name else cfg.n_kv_head if ".k_proj." in name else 0) if llama else 0
        x = permute_rope(w, heads) if heads else w
        q = gguf.quants.dequantize(gguf.quants.quantize(x.numpy(), types[gname]), types[gname])
        x = torch.from_numpy(np.array(q, dtype=np.float32)).reshape(x.shape)
        out[name] = unpermute_rope(x, heads) if heads else x
    return out


@pytest.mark.parametrize("shape", ["debug", "debug-phi"])
@pytest.mark.parametrize("quant", QUANTS)
def test_round_trip_reads_back_the_written_weights(tmp_path, tok, shape, quant):
    model = tiny(shape)
    path = write_gguf(model, tok, tmp_path / "m.gguf", quant).path
    back, tok2, _ = load_model(path)
    want = fake_quant(model, path)
    got = back.state_dict()
    for name, w in want.items():
        assert torch.allclose(got[name], w, atol=1e-6, rtol=0), name
    x = torch.randint(0, 300, (2, 24))
    with torch.no_grad():
        d = (back(x) - model(x)).abs().max().item()
    assert d <= {"f32": 1e-6, "f16": 1e-3}.get(quant, 0.3), d
    for text in TEXTS[:3] + ["<|im_start|>user\nhi<|im_end|>"]:
        assert tok2.encode(text) == tok.encode(text)
    assert tok2.chat_template == tok.chat_template
    assert (tok2.bos_id, tok2.eos_id, tok2.pad_id, tok2.add_bos) == (tok.bos_id, tok.eos_id, tok.pad_id, tok.add_bos)


def test_types_follow_llama_cpp_rules_and_odd_rows_fall_back_to_f16(tmp_path, tok):
    # n_embd 48: rows of 48 are not whole 32-blocks, so those matrices stay F16 (the converter's
    # QuantError fallback); ffn_down's rows (256) quantize; norms and biases stay F32.
    model = tiny("debug-phi", n_embd=48, n_head=4, rotary_dim=6)
    path = write_gguf(model, tok, tmp_path / "odd.gguf", "q4_0").path
    types = {t.name: t.tensor_type.name for t in open_gguf(path).tensors}
    assert types["blk.0.attn_q.weight"] == "F16"
    assert types["blk.0.ffn_down.weight"] == "Q4_0"
    assert types["blk.0.attn_norm.weight"] == types["blk.0.ffn_up.bias"] == "F32"
    assert types["output.weight"] == "F16"  # 48-wide rows: not quantizable at all
    back, _, _ = load_model(path)
    x = torch.randint(0, 300, (1, 16))
    with torch.no_grad():
        assert (back(x) - model(x)).abs().max().item() < 0.3
    # 4-bit files keep the head (the tied embedding when there is no head) at Q8_0, as llama-quantize does
    def types_of(model):
        return {t.name: t.tensor_type.name for t in open_gguf(write_gguf(model, tok, tmp_path / "t.gguf", "q4_1").path).tensors}

    untied, tied = types_of(tiny("debug")), types_of(tiny("debug", tie_embeddings=True))
    assert untied["output.weight"] == "Q8_0" and untied["token_embd.weight"] == "Q4_1"
    assert "output.weight" not in tied and tied["token_embd.weight"] == "Q8_0" and tied["blk.1.ffn_gate.weight"] == "Q4_1"
    assert tensor_type("output.weight", (320, 64), "q8_0", "output.weight").name == "Q8_0"


def test_vocab_pads_to_the_embedding_and_types_special_tokens(tok):
    v = gguf_vocab(tok, 320)
    assert len(v["tokens"]) == len(v["types"]) == 320
    assert v["tokens"][319] == "[PAD319]" and v["types"][319] == gguf.TokenType.UNUSED
    assert v["types"][tok.token_to_id("<|im_end|>")] == gguf.TokenType.CONTROL
    assert v["types"][tok.token_to_id("Ġthe")] == gguf.TokenType.NORMAL
    assert v["pre"] == "gpt-2" and v["merges"][0].count(" ") == 1


def test_bundled_reexport_to_its_own_type_is_bit_identical(tmp_path, bundled_gguf):
    """The bundled Q4_1 file, dequantized and written again as q4_1: every tensor comes back byte for byte
    (gguf-py's quantizers are ggml's), and the tokenizer metadata is the same."""
    out = tmp_path / "smol.gguf"
    assert cli_main(["export", "bundled", "--quant", "q4_1", "-o", str(out)]) == 0
    a, b = open_gguf(bundled_gguf), open_gguf(out)
    for key in ("tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges", "tokenizer.ggml.pre",
                "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.unknown_token_id",
                "tokenizer.ggml.padding_token_id", "tokenizer.ggml.add_bos_token", "tokenizer.chat_template",
                "llama.block_count", "llama.attention.head_count_kv", "llama.rope.freq_base", "llama.context_length"):
        assert a.fields[key].value == b.fields[key].value, key
    theirs = {t.name: t for t in a.tensors}
    for t in b.tensors:
        assert t.tensor_type == theirs[t.name].tensor_type and np.array_equal(t.data, theirs[t.name].data), t.name
    assert len(b.tensors) == len(a.tensors)


def test_hf_export_is_the_same_verb(tmp_path, tok):
    ckpt = save_checkpoint(tmp_path / "ckpt", tiny("debug"), tok)
    assert cli_main(["export", str(ckpt), "--to", "hf", "-o", str(tmp_path / "hf")]) == 0
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["architectures"] == ["LlamaForCausalLM"]
    back, _, _ = load_model(tmp_path / "hf")
    x = torch.randint(0, 300, (1, 8))
    with torch.no_grad():
        assert torch.allclose(back(x), tiny("debug")(x), atol=1e-5)
    # and an HF directory is a source like any other
    assert cli_main(["export", str(tmp_path / "hf"), "--quant", "f32", "-o", str(tmp_path / "from-hf.gguf")]) == 0
    again, _, _ = load_model(tmp_path / "from-hf.gguf")
    with torch.no_grad():
        assert torch.allclose(again(x), back(x), atol=1e-5)


def test_bad_requests_get_one_line(tmp_path, tok, capsys):
    with pytest.raises(PrimerError, match="no BPE merges"):
        write_gguf(tiny("debug"), byte_tokenizer(), tmp_path / "a.gguf")
    with pytest.raises(PrimerError, match="no tokenizer"):
        write_gguf(tiny("debug"), None, tmp_path / "a.gguf")
    with pytest.raises(PrimerError, match="no Hugging Face class|neither"):
        write_gguf(Transformer(ModelConfig.from_name("gpt2-124m", n_layer=1, n_embd=64, n_head=2, vocab_size=320)),
                   tok, tmp_path / "a.gguf")
    with pytest.raises(PrimerError, match="embedding only"):
        write_gguf(tiny("debug", vocab_size=100), tok, tmp_path / "a.gguf")
    assert cli_main(["export", str(tmp_path / "missing"), "-o", str(tmp_path / "x.gguf")]) == 2
    assert "model not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli_main(["export", "bundled", "--quant", "q3_k", "-o", str(tmp_path / "x.gguf")])
    assert not list(tmp_path.glob("*.tmp"))


def test_pre_tokenizer_is_named_by_behaviour(bundled_gguf):
    from primer.model.tokenizer import Tokenizer

    assert pre_tokenizer_name(Tokenizer.from_gguf(open_gguf(bundled_gguf))) == "smollm"
