"""HF directories both ways: our models -> transformers, transformers' models -> ours, same logits."""

import json

import pytest
import torch

from primer.errors import PrimerError
from primer.weights.hf import hf_architecture, load_hf_dir, save_hf_dir
from primer.model.transformer import ModelConfig, Transformer

transformers = pytest.importorskip("transformers")

ATOL = 1e-4


def _ours(name, **overrides):
    """A random model whose biases and norm weights are not their init values (so a dropped one shows)."""
    torch.manual_seed(0)
    m = Transformer(ModelConfig.from_name(name, **overrides)).eval()
    with torch.no_grad():
        for n, p in m.named_parameters():
            if n.endswith("bias"):
                p.normal_(0, 0.1)
            elif "norm" in n:
                p.normal_(1.0, 0.1)
    return m


def _tokens(vocab, b=2, t=24):
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, vocab, (b, t), generator=g)


def _hf_logits(d, x):
    hf = transformers.AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
    with torch.no_grad():
        return hf, hf(x).logits


@pytest.mark.parametrize(
    "name,overrides,arch",
    [
        ("debug", {}, "LlamaForCausalLM"),
        ("debug", {"tie_embeddings": True, "n_kv_head": 2}, "LlamaForCausalLM"),
        ("debug", {"bias": True, "head_dim": 32, "rotary_dim": 32}, "LlamaForCausalLM"),
        ("debug-phi", {}, "PhiForCausalLM"),
        ("debug-phi", {"n_kv_head": 2, "tie_embeddings": True, "mlp": "gelu"}, "PhiForCausalLM"),
        ("debug-phi", {"bias": False, "lm_head_bias": False}, "PhiForCausalLM"),  # zero biases, exactly
    ],
)
def test_our_model_in_transformers_same_logits(tmp_path, name, overrides, arch):
    model = _ours(name, **overrides)
    save_hf_dir(model, None, tmp_path)
    conf = json.loads((tmp_path / "config.json").read_text())
    assert conf["architectures"] == [arch]
    assert (tmp_path / "generation_config.json").is_file()
    x = _tokens(model.cfg.vocab_size)
    hf, theirs = _hf_logits(tmp_path, x)
    assert type(hf).__name__ == arch
    with torch.no_grad():
        ours = model(x)
        assert torch.allclose(ours, theirs, atol=ATOL), (ours - theirs).abs().max()
        back = load_hf_dir(tmp_path)
        assert torch.allclose(back.model(x), ours, atol=ATOL)
    if model.cfg.tie_embeddings:
        assert back.model.lm_head.weight is back.model.embed.weight


def _tiny_hf(kind, **kw):
    torch.manual_seed(0)
    common = dict(vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                  num_attention_heads=4, max_position_embeddings=64)
    if kind == "llama":
        cfg = transformers.LlamaConfig(**{**common, "num_key_value_heads": 2, "rms_norm_eps": 1e-6,
                                          "rope_theta": 5000.0, **kw})
        model = transformers.LlamaForCausalLM(cfg)
    elif kind == "phi":
        cfg = transformers.PhiConfig(**{**common, "partial_rotary_factor": 0.5, "layer_norm_eps": 1e-5, **kw})
        model = transformers.PhiForCausalLM(cfg)
    else:
        cfg = transformers.Phi3Config(**{**common, "num_key_value_heads": 2, "pad_token_id": 0, **kw})
        model = transformers.Phi3ForCausalLM(cfg)
    with torch.no_grad():  # HF inits norms to 1 and biases to 0; perturb so a dropped tensor shows
        for n, p in model.named_parameters():
            if "norm" in n or n.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


@pytest.mark.parametrize(
    "kind,kw",
    [
        ("llama", {}),
        ("llama", {"tie_word_embeddings": True}),
        ("llama", {"attention_bias": True, "mlp_bias": True, "head_dim": 32}),
        ("phi", {}),
        ("phi", {"num_key_value_heads": 2, "hidden_act": "gelu"}),
        ("phi3", {}),  # fused qkv_proj / gate_up_proj
        ("phi3", {"partial_rotary_factor": 0.5}),
    ],
)
@pytest.mark.parametrize("shard", [False, True])
def test_transformers_model_loads_with_same_logits(tmp_path, kind, kw, shard):
    model = _tiny_hf(kind, **kw)
    model.save_pretrained(tmp_path, **({"max_shard_size": "40KB"} if shard else {}))
    if shard:
        assert (tmp_path / "model.safetensors.index.json").is_file()
    ck = load_hf_dir(tmp_path)
    x = _tokens(300)
    with torch.no_grad():
        theirs = model(x).logits
        ours = ck.model(x)
    assert torch.allclose(ours, theirs, atol=ATOL), (ours - theirs).abs().max()
    assert ck.meta["architecture"] == type(model).__name__
    # and back out again: Phi3 comes out as Llama (full rotary) -- same logits either way
    if kind != "phi3" or "partial_rotary_factor" not in kw:
        save_hf_dir(ck.model, None, tmp_path / "out")
        _, again = _hf_logits(tmp_path / "out", x)
        assert torch.allclose(again, theirs, atol=ATOL)


def test_export_errors_name_the_reason(tmp_path):
    with pytest.raises(PrimerError, match="no Hugging Face class holds this block"):
        save_hf_dir(_ours("debug", norm="layernorm"), None, tmp_path)
    with pytest.raises(PrimerError, match="rotary_dim 8 < head_dim 16"):
        hf_architecture(ModelConfig.from_name("debug", rotary_dim=8))
    with pytest.raises(PrimerError, match="output-head bias"):
        hf_architecture(ModelConfig.from_name("debug", lm_head_bias=True))
    assert hf_architecture(ModelConfig.from_name("phi-1.5")) == "PhiForCausalLM"
    assert hf_architecture(ModelConfig.from_name("smollm2-135m")) == "LlamaForCausalLM"
    assert hf_architecture(ModelConfig.from_name("phi-3-mini")) == "LlamaForCausalLM"


def test_import_errors(tmp_path):
    with pytest.raises(PrimerError, match="model directory not found"):
        load_hf_dir(tmp_path / "nope")
    with pytest.raises(PrimerError, match="config.json is missing"):
        load_hf_dir(tmp_path)
    save_hf_dir(_ours("debug"), None, tmp_path)
    conf = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**conf, "architectures": ["GPT2LMHeadModel"]}))
    with pytest.raises(PrimerError, match="architecture 'GPT2LMHeadModel' is not supported"):
        load_hf_dir(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**conf, "rope_scaling": {"rope_type": "llama3", "factor": 8.0}}))
    with pytest.raises(PrimerError, match="rope scaling 'llama3' is not supported"):
        load_hf_dir(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**conf, "intermediate_size": 100}))
    with pytest.raises(PrimerError, match=r"'blocks.0.mlp.gate_proj.weight' has shape \(256, 64\) in the weights but \(100, 64\) from config.json"):
        load_hf_dir(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(conf))
    (tmp_path / "model.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(PrimerError, match="corrupt or truncated safetensors"):
        load_hf_dir(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(PrimerError, match="no model.safetensors"):
        load_hf_dir(tmp_path)


# ----------------------------------------------------------------------------- the bundled SmolLM2


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    """(model, tokenizer) of the bundled GGUF: through primer.weights.gguf_io, else via transformers' GGUF loader."""
    from primer.weights.bundled import bundled_gguf_path

    try:
        path = bundled_gguf_path()
    except PrimerError as e:
        pytest.skip(str(e))
    try:
        from primer.weights.gguf_io import load_gguf
    except ImportError:
        # transformers 5 refuses save_pretrained on a GGUF-loaded model, so write its tensors + config by hand.
        from safetensors.torch import save_file

        d = tmp_path_factory.mktemp("smollm2-hf")
        hf = transformers.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
        sd = {k: v.detach().contiguous().clone() for k, v in hf.state_dict().items()}
        if hf.config.tie_word_embeddings:
            sd.pop("lm_head.weight", None)
        save_file(sd, str(d / "model.safetensors"))
        conf = {k: v for k, v in hf.config.to_dict().items() if k != "quantization_config"}
        (d / "config.json").write_text(json.dumps(conf))
        transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name).save_pretrained(d)
        ck = load_hf_dir(d)
        return ck.model, ck.tokenizer
    return load_gguf(path)


@pytest.mark.slow
def test_smollm2_export_reloads_in_transformers_with_same_logits(smollm2, tmp_path):
    model, tok = smollm2
    save_hf_dir(model, tok, tmp_path)
    conf = json.loads((tmp_path / "config.json").read_text())
    assert conf["architectures"] == ["LlamaForCausalLM"] and conf["tie_word_embeddings"] is True
    assert (conf["eos_token_id"], conf["bos_token_id"]) == (tok.eos_id, tok.bos_id)
    prompts = ["The capital of France is", "def fibonacci(n):\n    ", "Photosynthesis is the process by which"]
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path)
    for p in prompts:
        ids = tok.encode(p)
        assert hf_tok.encode(p) == ids
        x = torch.tensor([ids])
        with torch.no_grad():
            ours, theirs = model(x), hf(x).logits
        assert torch.allclose(ours, theirs, atol=ATOL), (ours - theirs).abs().max()
    chat = [{"role": "user", "content": "Hi"}]
    assert hf_tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True) == tok.apply_chat_template(
        chat, add_generation_prompt=True
    )
    back = load_hf_dir(tmp_path)
    assert back.tokenizer.hash() == tok.hash()
    x = torch.tensor([tok.encode(prompts[0])])
    with torch.no_grad():
        assert torch.equal(back.model(x), model(x))
