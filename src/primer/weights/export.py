"""Write a model as a GGUF file that llama.cpp (and Ollama, LM Studio, llama-cpp-python) runs.

Any model `primer.weights.load.load_model` reads (a primer checkpoint, an HF dir, a GGUF file) is
written as `f32`, `f16`, `q8_0`, `q4_0` or `q4_1` with the `gguf` package's `GGUFWriter` and its
quantizers (`gguf.quants`, which match ggml's reference quantizers), the tokenizer and the chat
template in the metadata.

What goes where follows llama.cpp's own tools:
  * Block layout -> GGUF architecture: the sequential RMSNorm/SwiGLU block is `llama` (Q/K rows
    permuted to llama.cpp's interleaved rotary pairs, as `convert_hf_to_gguf.py`'s
    `LlamaModel.permute`), the parallel LayerNorm/GELU block is `phi2` (NEOX rotary, no permutation;
    llama.cpp's phi2 needs every bias and an output head with a bias, so zeros are written where the
    model has none, and a tied head is written out).
  * Tensor types, as `convert_hf_to_gguf.py`'s `prepare_tensors`: 1-D tensors (biases, norms) stay
    F32; a matrix whose rows are not a whole number of quantization blocks falls back to F16.
  * 4-bit files, as `llama-quantize`'s `llama_tensor_get_type` for Q4_0/Q4_1: every matrix 4-bit
    except the output head (the token embedding when the head is tied), which llama.cpp keeps at
    Q6_K, or at Q8_0 when its rows are not a multiple of 256 (SmolLM2's 576). gguf-py cannot write
    K-quants, so we keep it at Q8_0 always: a little larger, never less precise. Q4_K_M is not
    offered for the same reason (gguf-py dequantizes K-quants but has no quantizer for them).
  * Tokenizer, as `convert_hf_to_gguf.py`'s `get_vocab_base`: byte-level BPE only (`gpt2`): tokens
    in id order, padded to the embedding rows with `[PAD{i}]` (type UNUSED); special added tokens
    CONTROL, other added tokens USER_DEFINED; merges; BOS/EOS/UNK/PAD ids and add_bos/add_eos; the
    pre-tokenizer name llama.cpp splits text by (found by running our pre-tokenizer and each
    candidate over one sample text, which is how llama.cpp's converter names it too: by behaviour).
"""

from __future__ import annotations

import json
import os
import time
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from primer.common.files import DirLock
from primer.config import check_config
from primer.errors import PrimerError
from primer.model.tokenizer import byte_level_pre_tokenizer
from primer.weights.checkpoint import unwrap
from primer.weights.gguf_io import permute_rope
from primer.weights.hf import hf_architecture

Quant = Literal["f32", "f16", "q8_0", "q4_0", "q4_1"]
QUANTS: tuple[str, ...] = Quant.__args__  # type: ignore[attr-defined]
_ARCH = {"LlamaForCausalLM": "llama", "PhiForCausalLM": "phi2"}
# llama.cpp pre-tokenizer names for byte-level BPE, one per distinct way of splitting text
# (`primer.model.tokenizer.byte_level_pre_tokenizer` builds each).
PRE_NAMES = ("gpt-2", "smollm", "llama-bpe", "qwen2")
# Text that tells the splitters apart: digits runs, contractions, unicode letters, symbols, whitespace runs.
PRE_SAMPLE = (
    "Hello World! I'm 12345 years old, you've got 3.14159... \n\n  \t  tabs\tand   spaces "
    "ÀÉÎ ñandú 你好世界 🦙🦙 'll 'RE ----=== x1y22z333 \r\n end"
)


@dataclass
class ExportConfig:
    """`primer export` and the pipeline's [export] stage."""

    to: Literal["gguf", "hf"] = "gguf"
    """Output format: gguf (llama.cpp, Ollama, LM Studio) or hf (a transformers safetensors directory)."""
    quant: Quant = "q4_0"
    """GGUF tensor type: f32, f16, q8_0, q4_0, q4_1 (4-bit files keep the output head at q8_0)."""


@dataclass
class ExportResult:
    path: Path
    format: str
    """gguf or hf"""
    arch: str
    """GGUF architecture (llama, phi2) or HF class"""
    quant: str | None
    """GGUF tensor type asked for (None for an HF directory)"""
    bytes: int
    seconds: float
    tensor_types: dict[str, int]
    """GGML type name -> number of tensors written with it (GGUF)"""

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "path": str(self.path), "seconds": round(self.seconds, 2)}


def gguf_arch(cfg) -> str:
    """The GGUF architecture that runs `cfg`'s block: 'llama' or 'phi2' (PrimerError saying why neither)."""
    return _ARCH[hf_architecture(cfg)]


def tensor_type(name: str, shape: tuple[int, ...], quant: str, head: str):
    """The GGML type a tensor is stored as (see the module docstring for whose rules these are)."""
    import gguf

    Q = gguf.GGMLQuantizationType
    if len(shape) <= 1 or name.endswith("_norm.weight") or quant == "f32":
        return Q.F32
    want = {"f16": Q.F16, "q8_0": Q.Q8_0, "q4_0": Q.Q4_0, "q4_1": Q.Q4_1}[quant]
    if name == head and want in (Q.Q4_0, Q.Q4_1):
        want = Q.Q8_0
    block = gguf.GGML_QUANT_SIZES[want][0]
    if shape[-1] % block:
        return Q.F16
    return want


def _gguf_tensors(model, arch: str):
    """(GGUF name, fp32 numpy array in (out, in) order) for every tensor llama.cpp's `arch` loads."""
    cfg = model.cfg
    sd = {k: v.detach().to("cpu", torch.float32) for k, v in model.state_dict().items()}

    def get(ours: str, rows: int | None = None) -> torch.Tensor:
        if ours in sd:
            return sd[ours]
        if rows is None:
            raise PrimerError(f"model has no tensor '{ours}'")
        return torch.zeros(rows)  # phi2 needs every bias; a model without them has zero biases, exactly

    out = [("token_embd.weight", sd["embed.weight"])]
    q, kv = cfg.n_head * cfg.head_dim, cfg.n_kv_head * cfg.head_dim
    for i in range(cfg.n_layer):
        o, g = f"blocks.{i}.", f"blk.{i}."
        if arch == "llama":
            out += [
                (g + "attn_norm.weight", get(o + "attn_norm.weight")),
                (g + "ffn_norm.weight", get(o + "mlp_norm.weight")),
                (g + "attn_q.weight", permute_rope(get(o + "attn.q_proj.weight"), cfg.n_head)),
                (g + "attn_k.weight", permute_rope(get(o + "attn.k_proj.weight"), cfg.n_kv_head)),
                (g + "attn_v.weight", get(o + "attn.v_proj.weight")),
                (g + "attn_output.weight", get(o + "attn.o_proj.weight")),
                (g + "ffn_gate.weight", get(o + "mlp.gate_proj.weight")),
                (g + "ffn_up.weight", get(o + "mlp.up_proj.weight")),
                (g + "ffn_down.weight", get(o + "mlp.down_proj.weight")),
            ]
            if cfg.bias:  # llama.cpp's llama reads these optional biases
                out += [
                    (g + "attn_q.bias", permute_rope(get(o + "attn.q_proj.bias"), cfg.n_head)),
                    (g + "attn_k.bias", permute_rope(get(o + "attn.k_proj.bias"), cfg.n_kv_head)),
                    (g + "attn_v.bias", get(o + "attn.v_proj.bias")),
                    (g + "attn_output.bias", get(o + "attn.o_proj.bias")),
                    (g + "ffn_gate.bias", get(o + "mlp.gate_proj.bias")),
                    (g + "ffn_up.bias", get(o + "mlp.up_proj.bias")),
                    (g + "ffn_down.bias", get(o + "mlp.down_proj.bias")),
                ]
        else:
            out += [
                (g + "attn_norm.weight", get(o + "attn_norm.weight")),
                (g + "attn_norm.bias", get(o + "attn_norm.bias")),
                (g + "attn_q.weight", get(o + "attn.q_proj.weight")),
                (g + "attn_q.bias", get(o + "attn.q_proj.bias", q)),
                (g + "attn_k.weight", get(o + "attn.k_proj.weight")),
                (g + "attn_k.bias", get(o + "attn.k_proj.bias", kv)),
                (g + "attn_v.weight", get(o + "attn.v_proj.weight")),
                (g + "attn_v.bias", get(o + "attn.v_proj.bias", kv)),
                (g + "attn_output.weight", get(o + "attn.o_proj.weight")),
                (g + "attn_output.bias", get(o + "attn.o_proj.bias", cfg.n_embd)),
                (g + "ffn_up.weight", get(o + "mlp.fc1.weight")),
                (g + "ffn_up.bias", get(o + "mlp.fc1.bias", cfg.intermediate_size)),
                (g + "ffn_down.weight", get(o + "mlp.fc2.weight")),
                (g + "ffn_down.bias", get(o + "mlp.fc2.bias", cfg.n_embd)),
            ]
    out.append(("output_norm.weight", sd["norm.weight"]))
    if arch == "phi2":
        out.append(("output_norm.bias", sd["norm.bias"]))
    if arch == "phi2" or not cfg.tie_embeddings:
        out.append(("output.weight", sd["lm_head.weight"]))
    if arch == "phi2":
        out.append(("output.bias", get("lm_head.bias", cfg.vocab_size)))
    return [(n, t.contiguous().numpy()) for n, t in out]


# ----------------------------------------------------------------------------------- tokenizer


def pre_tokenizer_name(tokenizer) -> str:
    """llama.cpp's `tokenizer.ggml.pre` name for a byte-level BPE that splits text as `tokenizer` does."""
    own = tokenizer.tk.pre_tokenizer
    if own is None:
        raise PrimerError("the tokenizer has no pre-tokenizer; llama.cpp needs a byte-level BPE (GPT-2 style)")
    mine = own.pre_tokenize_str(PRE_SAMPLE)
    for name in PRE_NAMES:
        if byte_level_pre_tokenizer(name).pre_tokenize_str(PRE_SAMPLE) == mine:
            return name
    raise PrimerError(
        "the tokenizer splits text in a way none of llama.cpp's byte-level pre-tokenizers known here does "
        f"({', '.join(PRE_NAMES)}); llama.cpp would tokenize differently, so it is not exported"
    )


def gguf_vocab(tokenizer, n_vocab: int) -> dict:
    """tokens, token types, merges and the pre-tokenizer name of a byte-level BPE, padded to n_vocab rows."""
    import gguf

    spec = json.loads(tokenizer.tk.to_str())
    model = spec.get("model") or {}
    if model.get("type") != "BPE" or model.get("byte_fallback") or spec.get("normalizer") is not None:
        raise PrimerError(
            "only byte-level BPE tokenizers (GPT-2 / SmolLM2 / Llama-3 style) are written to GGUF; this one is "
            f"a {model.get('type')} model{' with byte fallback' if model.get('byte_fallback') else ''}"
            f"{' with a normalizer' if spec.get('normalizer') is not None else ''} (sentencepiece-style)"
        )
    size = tokenizer.vocab_size
    if size > n_vocab:
        raise PrimerError(f"the tokenizer has {size} ids but the model's embedding only {n_vocab} rows")
    T = gguf.TokenType
    added = tokenizer.tk.get_added_tokens_decoder()
    tokens: list[str | None] = [None] * n_vocab
    for tok, i in tokenizer.tk.get_vocab(with_added_tokens=True).items():
        tokens[i] = tok
    types = []
    for i, tok in enumerate(tokens):
        if tok is None:
            tokens[i] = f"[PAD{i}]"
            types.append(T.UNUSED)
        elif i in added:
            types.append(T.CONTROL if added[i].special else T.USER_DEFINED)
        else:
            types.append(T.NORMAL)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []]
    if not merges:  # gguf-py drops an empty array, and llama.cpp refuses a BPE vocabulary without the key
        raise PrimerError("the tokenizer has no BPE merges (a bare byte tokenizer); llama.cpp cannot load it")
    return {"tokens": tokens, "types": types, "merges": merges, "pre": pre_tokenizer_name(tokenizer)}


# ----------------------------------------------------------------------------------- writing


def write_gguf(model, tokenizer, path: str | Path, quant: str = "q4_0", *, name: str | None = None,
               progress: bool = False) -> ExportResult:
    """Write `model` + `tokenizer` to `path` as a GGUF file of type `quant`; atomic (tmp + rename)."""
    import gguf
    from tqdm.auto import tqdm

    if quant not in QUANTS:
        raise PrimerError(f"unknown quantization '{quant}'; choose one of {', '.join(QUANTS)}")
    if tokenizer is None:
        raise PrimerError("the model has no tokenizer; a GGUF file needs one (save the checkpoint with its tokenizer)")
    t0 = time.perf_counter()
    m = unwrap(model)
    cfg = m.cfg
    arch = gguf_arch(cfg)
    if arch == "llama" and cfg.rotary_dim != cfg.head_dim:
        raise PrimerError(f"llama.cpp's llama rotates whole heads; rotary_dim {cfg.rotary_dim} < head_dim {cfg.head_dim}")
    if arch == "phi2" and cfg.mlp != "gelu_tanh":
        raise PrimerError("llama.cpp's phi2 uses the tanh GELU; this model's MLP uses the exact GELU (mlp='gelu')")
    vocab = gguf_vocab(tokenizer, cfg.vocab_size)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    w = gguf.GGUFWriter(tmp, arch)
    w.add_name(name or cfg.name)
    w.add_context_length(cfg.block_size)
    w.add_embedding_length(cfg.n_embd)
    w.add_block_count(cfg.n_layer)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.n_head)
    w.add_head_count_kv(cfg.n_kv_head)
    if cfg.head_dim != cfg.n_embd // cfg.n_head:
        w.add_key_length(cfg.head_dim)
        w.add_value_length(cfg.head_dim)
    w.add_rope_dimension_count(cfg.rotary_dim)
    w.add_rope_freq_base(cfg.rope_base)
    if arch == "llama":
        w.add_layer_norm_rms_eps(cfg.norm_eps)
    else:
        w.add_layer_norm_eps(cfg.norm_eps)
    w.add_vocab_size(cfg.vocab_size)
    ftype = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
             "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0, "q4_0": gguf.LlamaFileType.MOSTLY_Q4_0,
             "q4_1": gguf.LlamaFileType.MOSTLY_Q4_1}[quant]
    w.add_file_type(int(ftype))
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(vocab["pre"])
    w.add_token_list(vocab["tokens"])
    w.add_token_types(vocab["types"])
    w.add_token_merges(vocab["merges"])
    for key, i in (("bos", tokenizer.bos_id), ("eos", tokenizer.eos_id), ("unk", tokenizer.unk_id),
                   ("pad", tokenizer.pad_id)):
        if i is not None:
            getattr(w, f"add_{key}_token_id")(i)
    w.add_add_bos_token(bool(tokenizer.add_bos))
    w.add_add_eos_token(bool(tokenizer.add_eos))
    if tokenizer.chat_template:
        w.add_chat_template(tokenizer.chat_template)
    head = "output.weight" if (arch == "phi2" or not cfg.tie_embeddings) else "token_embd.weight"
    counts: dict[str, int] = {}
    for tname, data in tqdm(_gguf_tensors(m, arch), desc=f"quantizing to {quant}", unit=" tensors", disable=not progress):
        qtype = tensor_type(tname, data.shape, quant, head)
        w.add_tensor(tname, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
        counts[qtype.name] = counts.get(qtype.name, 0) + 1
    try:
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file(progress=progress)
    finally:
        w.close()
    os.replace(tmp, path)
    return ExportResult(path, "gguf", arch, quant, path.stat().st_size, time.perf_counter() - t0, counts)


def export_model(spec: str | Path, out: str | Path, cfg: ExportConfig | None = None, *,
                 progress: bool = False) -> ExportResult:
    """`primer export`: load any model `load_model` reads and write it as GGUF (`cfg.quant`) or as an HF dir."""
    cfg = check_config(cfg or ExportConfig())
    with DirLock.beside(out, "primer export"):  # claimed (and writable) before the model loads
        return _export(spec, out, cfg, progress)


def _export(spec: str | Path, out: str | Path, cfg: ExportConfig, progress: bool) -> ExportResult:
    from primer.weights.load import load_model

    loaded = load_model(spec)
    if cfg.to == "hf":
        from primer.weights.hf import save_hf_dir

        t0 = time.perf_counter()
        d = save_hf_dir(loaded.model, loaded.tokenizer, out)
        size = sum(f.stat().st_size for f in d.iterdir() if f.is_file())
        return ExportResult(d, "hf", hf_architecture(loaded.model.cfg), None, size, time.perf_counter() - t0, {})
    name = Path(str(spec)).stem if str(spec) != "bundled" else None
    return write_gguf(loaded.model, loaded.tokenizer, out, cfg.quant, name=name or None, progress=progress)
