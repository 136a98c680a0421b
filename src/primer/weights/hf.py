"""Hugging Face checkpoint directories in and out (safetensors + config.json + tokenizer files).

In (`load_hf_dir`):
  * LlamaForCausalLM / MistralForCausalLM (SmolLM2, Llama, Mistral without a window): GQA,
    tied or untied head, optional attention/MLP biases.
  * Phi3ForCausalLM (phi-3-mini): Llama-shaped, but q/k/v are fused into `qkv_proj` and gate/up
    into `gate_up_proj`; we split them. Partial rotary (`partial_rotary_factor`) is kept.
  * PhiForCausalLM (microsoft/phi-1_5): parallel block off one LayerNorm, q/k/v/dense with
    biases, fc1/fc2 GELU MLP, final_layernorm, lm_head with a bias, partial rotary.
  Single-file or sharded (`model.safetensors.index.json`) safetensors; pytorch_model.bin as a fallback.

Out (`save_hf_dir`): config.json as LlamaForCausalLM for our sequential RMSNorm/SwiGLU block
with full rotary, PhiForCausalLM for the parallel LayerNorm/GELU block, and a clear error for a
config neither class can express. Plus model.safetensors, generation_config.json and the tokenizer.

Our rotary is HF's rotate-half convention, so Q/K rows map one to one: no permutation here.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

from primer.weights.checkpoint import Checkpoint, model_from_state_dict, read_safetensors, state_dict_for_saving, unwrap
from primer.errors import PrimerError
from primer.model.transformer import ModelConfig

LLAMA_ARCHS = ("LlamaForCausalLM", "MistralForCausalLM")
PHI3_ARCHS = ("Phi3ForCausalLM",)
PHI_ARCHS = ("PhiForCausalLM",)
SUPPORTED = LLAMA_ARCHS + PHI3_ARCHS + PHI_ARCHS
_MODEL_TYPES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "phi3": "Phi3ForCausalLM",
                "phi": "PhiForCausalLM"}
_TANH_GELUS = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast", "gelu_accurate")


# ----------------------------------------------------------------------------- names


def _llama_names(cfg: ModelConfig) -> dict[str, str]:
    """our name -> HF LlamaForCausalLM name."""
    m = {"embed.weight": "model.embed_tokens.weight", "norm.weight": "model.norm.weight"}
    if not cfg.tie_embeddings:
        m["lm_head.weight"] = "lm_head.weight"
    kinds = ["weight", "bias"] if cfg.bias else ["weight"]
    for i in range(cfg.n_layer):
        o, h = f"blocks.{i}.", f"model.layers.{i}."
        m[o + "attn_norm.weight"] = h + "input_layernorm.weight"
        m[o + "mlp_norm.weight"] = h + "post_attention_layernorm.weight"
        for p in ("q_proj", "k_proj", "v_proj", "o_proj"):
            for k in kinds:
                m[f"{o}attn.{p}.{k}"] = f"{h}self_attn.{p}.{k}"
        for p in ("gate_proj", "up_proj", "down_proj"):
            for k in kinds:
                m[f"{o}mlp.{p}.{k}"] = f"{h}mlp.{p}.{k}"
    return m


def _phi_names(cfg: ModelConfig) -> dict[str, str]:
    """our name -> HF PhiForCausalLM name (every Phi linear has a bias)."""
    m = {
        "embed.weight": "model.embed_tokens.weight",
        "norm.weight": "model.final_layernorm.weight",
        "norm.bias": "model.final_layernorm.bias",
        "lm_head.weight": "lm_head.weight",
        "lm_head.bias": "lm_head.bias",
    }
    if cfg.tie_embeddings:
        del m["lm_head.weight"]
    for i in range(cfg.n_layer):
        o, h = f"blocks.{i}.", f"model.layers.{i}."
        m[o + "attn_norm.weight"] = h + "input_layernorm.weight"
        m[o + "attn_norm.bias"] = h + "input_layernorm.bias"
        for ours, theirs in (("q_proj", "q_proj"), ("k_proj", "k_proj"), ("v_proj", "v_proj"), ("o_proj", "dense")):
            for k in ("weight", "bias"):
                m[f"{o}attn.{ours}.{k}"] = f"{h}self_attn.{theirs}.{k}"
        for p in ("fc1", "fc2"):
            for k in ("weight", "bias"):
                m[f"{o}mlp.{p}.{k}"] = f"{h}mlp.{p}.{k}"
    return m


# ----------------------------------------------------------------------------- config.json -> ModelConfig


def _rope(hf: dict, default_prf: float) -> tuple[float, float]:
    """(rope_theta, partial_rotary_factor) from legacy top-level keys or transformers 5's rope_parameters."""
    rp = hf.get("rope_parameters") or {}
    scaling = hf.get("rope_scaling") or {}
    kind = rp.get("rope_type", rp.get("type")) or scaling.get("rope_type", scaling.get("type"))
    if kind not in (None, "default"):
        raise PrimerError(f"rope scaling '{kind}' is not supported (only plain rotary embeddings)")
    theta = hf.get("rope_theta", rp.get("rope_theta", 10000.0))
    prf = hf.get("partial_rotary_factor", rp.get("partial_rotary_factor", default_prf))
    return float(theta), float(prf)


def _rotary_dim(head_dim: int, prf: float) -> int:
    rd = int(head_dim * prf)  # what transformers computes
    return rd - rd % 2


def config_from_hf(hf: dict, name: str = "hf") -> tuple[str, ModelConfig]:
    """(architecture, ModelConfig) for an HF config.json dict; PrimerError for layouts we cannot hold."""
    archs = hf.get("architectures") or [_MODEL_TYPES.get(hf.get("model_type"), str(hf.get("model_type")))]
    arch = archs[0]
    if arch not in SUPPORTED:
        raise PrimerError(f"architecture '{arch}' is not supported; supported: {', '.join(SUPPORTED)}")
    n_head = int(hf["num_attention_heads"])
    n_embd = int(hf["hidden_size"])
    common = dict(
        name=name,
        vocab_size=int(hf["vocab_size"]),
        n_layer=int(hf["num_hidden_layers"]),
        n_head=n_head,
        n_kv_head=int(hf.get("num_key_value_heads") or n_head),
        n_embd=n_embd,
        intermediate_size=int(hf["intermediate_size"]),
        block_size=int(hf.get("max_position_embeddings", 2048)),
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
    )
    act = hf.get("hidden_act", "silu" if arch not in PHI_ARCHS else "gelu_new")
    if arch in PHI_ARCHS:
        if hf.get("qk_layernorm"):
            raise PrimerError("PhiForCausalLM with qk_layernorm=true is not supported")
        if act not in _TANH_GELUS + ("gelu",):
            raise PrimerError(f"PhiForCausalLM with hidden_act '{act}' is not supported (gelu / gelu_new)")
        theta, prf = _rope(hf, 0.5)
        head_dim = n_embd // n_head
        return arch, ModelConfig(
            **common, head_dim=head_dim, rotary_dim=_rotary_dim(head_dim, prf), rope_base=theta,
            parallel_residual=True, norm="layernorm", norm_eps=float(hf.get("layer_norm_eps", 1e-5)),
            mlp="gelu" if act == "gelu" else "gelu_tanh", bias=True, lm_head_bias=True,
        )
    if act not in ("silu", "swish"):
        raise PrimerError(f"{arch} with hidden_act '{act}' is not supported (SwiGLU needs silu)")
    window = hf.get("sliding_window")
    if window is not None and window < common["block_size"]:
        warnings.warn(
            f"{arch}: sliding-window attention ({window}) is not implemented; outputs match only up to "
            f"{window} tokens of context", stacklevel=3,
        )
    attn_bias, mlp_bias = bool(hf.get("attention_bias", False)), bool(hf.get("mlp_bias", False))
    if attn_bias != mlp_bias:
        raise PrimerError(f"{arch} with attention_bias={attn_bias} but mlp_bias={mlp_bias} is not supported")
    theta, prf = _rope(hf, 1.0)
    head_dim = int(hf.get("head_dim") or n_embd // n_head)
    return arch, ModelConfig(
        **common, head_dim=head_dim, rotary_dim=_rotary_dim(head_dim, prf), rope_base=theta,
        parallel_residual=False, norm="rmsnorm", norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        mlp="swiglu", bias=attn_bias, lm_head_bias=False,
    )


# ----------------------------------------------------------------------------- reading tensors


def read_hf_tensors(d: Path) -> dict[str, torch.Tensor]:
    """Every tensor of an HF directory: model.safetensors, a sharded index, or pytorch_model.bin."""
    index = d / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (OSError, ValueError, KeyError) as e:
            raise PrimerError(f"{index}: unreadable shard index ({e})") from None
        sd: dict[str, torch.Tensor] = {}
        for shard in sorted(set(weight_map.values())):
            sd.update(read_safetensors(d / shard))
        missing = [k for k in weight_map if k not in sd]
        if missing:
            raise PrimerError(f"{index}: tensors listed in the index are absent from the shards, e.g. {missing[0]}")
        return sd
    if (d / "model.safetensors").is_file():
        return read_safetensors(d / "model.safetensors")
    if (d / "pytorch_model.bin").is_file():
        try:
            return torch.load(d / "pytorch_model.bin", map_location="cpu", weights_only=True)
        except Exception as e:
            raise PrimerError(f"{d / 'pytorch_model.bin'}: unreadable ({type(e).__name__}: {e})") from None
    raise PrimerError(f"{d}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin")


def _split_fused(sd: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Phi-3's fused qkv_proj / gate_up_proj -> separate q/k/v and gate/up tensors (HF names)."""
    out = dict(sd)
    q, kv = cfg.n_head * cfg.head_dim, cfg.n_kv_head * cfg.head_dim
    for i in range(cfg.n_layer):
        h = f"model.layers.{i}."
        w = out.pop(h + "self_attn.qkv_proj.weight", None)
        if w is not None:
            if w.shape[0] != q + 2 * kv:
                raise PrimerError(
                    f"tensor '{h}self_attn.qkv_proj.weight' has {w.shape[0]} rows but the config needs {q + 2 * kv}"
                )
            out[h + "self_attn.q_proj.weight"], out[h + "self_attn.k_proj.weight"], out[h + "self_attn.v_proj.weight"] = (
                w.split([q, kv, kv], dim=0)
            )
        w = out.pop(h + "mlp.gate_up_proj.weight", None)
        if w is not None:
            if w.shape[0] != 2 * cfg.intermediate_size:
                raise PrimerError(
                    f"tensor '{h}mlp.gate_up_proj.weight' has {w.shape[0]} rows but the config needs "
                    f"{2 * cfg.intermediate_size}"
                )
            out[h + "mlp.gate_proj.weight"], out[h + "mlp.up_proj.weight"] = w.chunk(2, dim=0)
    return out


def load_hf_dir(
    directory: str | Path, *, dtype: torch.dtype | None = torch.float32, with_tokenizer: bool = True
) -> Checkpoint:
    """(model, tokenizer or None, meta) from an HF directory; meta = {"hf_config", "architecture", "source"}."""
    d = Path(directory)
    if not d.is_dir():
        raise PrimerError(f"model directory not found: {d}")
    cfg_path = d / "config.json"
    if not cfg_path.is_file():
        raise PrimerError(f"{d}: config.json is missing (not a Hugging Face model directory)")
    try:
        hf = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise PrimerError(f"{cfg_path}: unreadable config.json ({e})") from None
    try:
        arch, cfg = config_from_hf(hf, name=d.name)
    except KeyError as e:
        raise PrimerError(f"{cfg_path}: missing field {e}") from None
    except PrimerError as e:
        raise PrimerError(f"{cfg_path}: {e}") from None
    sd = read_hf_tensors(d)
    sd = {k: v for k, v in sd.items() if not k.endswith("rotary_emb.inv_freq")}  # old checkpoints store these
    if arch in PHI3_ARCHS:
        sd = _split_fused(sd, cfg)
    names = _phi_names(cfg) if arch in PHI_ARCHS else _llama_names(cfg)
    theirs_to_ours = {v: k for k, v in names.items()}
    if cfg.tie_embeddings:
        head = sd.pop("lm_head.weight", None)
        if head is not None and not torch.equal(head, sd.get("model.embed_tokens.weight", head)):
            raise PrimerError(f"{d}: tie_word_embeddings is true but lm_head.weight differs from the embedding")
    ours = {theirs_to_ours.get(k, k): v for k, v in sd.items()}
    model = model_from_state_dict(cfg, ours, source=f"weights in {d}", config_source="config.json", dtype=dtype)
    tokenizer = None
    if with_tokenizer and ((d / "tokenizer.json").is_file() or (d / "vocab.json").is_file()):
        from primer.model.tokenizer import Tokenizer

        tokenizer = Tokenizer.load(d)
    return Checkpoint(model.eval(), tokenizer, {"hf_config": hf, "architecture": arch, "source": str(d)})


# ----------------------------------------------------------------------------- writing


def hf_architecture(cfg: ModelConfig) -> str:
    """Which HF class can hold `cfg`: LlamaForCausalLM or PhiForCausalLM; PrimerError saying why neither."""
    if not cfg.parallel_residual and cfg.norm == "rmsnorm" and cfg.mlp == "swiglu":
        if cfg.lm_head_bias:
            raise PrimerError("LlamaForCausalLM has no output-head bias; this config (lm_head_bias) cannot be exported")
        if cfg.rotary_dim != cfg.head_dim:
            raise PrimerError(
                f"LlamaForCausalLM rotates every head dim; rotary_dim {cfg.rotary_dim} < head_dim {cfg.head_dim} "
                "cannot be exported"
            )
        return "LlamaForCausalLM"
    if cfg.parallel_residual and cfg.norm == "layernorm" and cfg.mlp in ("gelu", "gelu_tanh"):
        if cfg.head_dim * cfg.n_head != cfg.n_embd:
            raise PrimerError(
                f"PhiForCausalLM needs head_dim = n_embd / n_head; got {cfg.head_dim} x {cfg.n_head} != {cfg.n_embd}"
            )
        if int(cfg.head_dim * (cfg.rotary_dim / cfg.head_dim)) != cfg.rotary_dim:
            raise PrimerError(f"rotary_dim {cfg.rotary_dim} of {cfg.head_dim} is not expressible as partial_rotary_factor")
        return "PhiForCausalLM"
    raise PrimerError(
        f"no Hugging Face class holds this block (parallel_residual={cfg.parallel_residual}, norm={cfg.norm}, "
        f"mlp={cfg.mlp}): LlamaForCausalLM needs sequential rmsnorm+swiglu, PhiForCausalLM parallel layernorm+gelu"
    )


def hf_config(cfg: ModelConfig, arch: str, dtype: torch.dtype, tokenizer=None) -> dict:
    """The config.json for `cfg` as `arch` (legacy top-level rope keys, read by transformers 4 and 5)."""
    special = {}
    if tokenizer is not None:
        special = {"bos_token_id": tokenizer.bos_id, "eos_token_id": tokenizer.eos_id, "pad_token_id": tokenizer.pad_id}
    common = {
        "architectures": [arch],
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.n_embd,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.n_layer,
        "num_attention_heads": cfg.n_head,
        "num_key_value_heads": cfg.n_kv_head,
        "max_position_embeddings": cfg.block_size,
        "rope_theta": cfg.rope_base,
        "tie_word_embeddings": cfg.tie_embeddings,
        "initializer_range": 0.02,
        "use_cache": True,
        "torch_dtype": str(dtype).removeprefix("torch."),
        **special,
    }
    if arch == "LlamaForCausalLM":
        return {
            **common, "model_type": "llama", "head_dim": cfg.head_dim, "hidden_act": "silu",
            "rms_norm_eps": cfg.norm_eps, "attention_bias": cfg.bias, "mlp_bias": cfg.bias,
            "attention_dropout": 0.0, "rope_scaling": None, "pretraining_tp": 1,
        }
    return {
        **common, "model_type": "phi", "hidden_act": "gelu_new" if cfg.mlp == "gelu_tanh" else "gelu",
        "layer_norm_eps": cfg.norm_eps, "partial_rotary_factor": cfg.rotary_dim / cfg.head_dim,
        "qk_layernorm": False, "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attention_dropout": 0.0,
        "rope_scaling": None,
    }


def save_hf_dir(model: torch.nn.Module, tokenizer, directory: str | Path, *, dtype: torch.dtype | None = None) -> Path:
    """Write `model` (+ tokenizer) as an HF directory that transformers.AutoModelForCausalLM loads.

    dtype: cast the weights (e.g. torch.bfloat16); default keeps the model's dtype.
    """
    from safetensors.torch import save_file

    m = unwrap(model)
    cfg = m.cfg
    arch = hf_architecture(cfg)
    sd = state_dict_for_saving(m)
    if dtype is not None:
        sd = {k: v.to(dtype) for k, v in sd.items()}
    store_dtype = next(iter(sd.values())).dtype
    names = _phi_names(cfg) if arch == "PhiForCausalLM" else _llama_names(cfg)
    out = {}
    for ours, theirs in names.items():
        if ours in sd:
            out[theirs] = sd[ours]
        elif ours.endswith(".bias"):
            # PhiForCausalLM always has biases; a model without them has zero biases, exactly.
            rows = sd[ours[: -len("bias")] + "weight"].shape[0] if ours != "lm_head.bias" else cfg.vocab_size
            out[theirs] = torch.zeros(rows, dtype=store_dtype)
        else:
            raise PrimerError(f"model has no tensor '{ours}' needed for {arch}")
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    save_file(out, str(d / "model.safetensors"), metadata={"format": "pt"})
    conf = hf_config(cfg, arch, store_dtype, tokenizer)
    (d / "config.json").write_text(json.dumps(conf, indent=2) + "\n", encoding="utf-8")
    gen = {"_from_model_config": True}
    if tokenizer is not None:
        gen.update({k: conf[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if conf.get(k) is not None})
    (d / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n", encoding="utf-8")
    if tokenizer is not None:
        tokenizer.save(d)
    return d
