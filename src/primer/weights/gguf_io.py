"""Read GGUF model files (llama.cpp's format) into our `Transformer`, dequantized to float.

Supported architectures: `llama` (SmolLM2, Llama, phi-3 converted as llama) and `phi2`
(phi-1.5 / phi-2 layout: one LayerNorm, fused QKV, partial rotary, biases).

llama.cpp's converter permutes the rows of llama Q/K weights so that its interleaved ("GPT-J")
rotary pairs (0,1),(2,3)... line up with HF's rotate-half pairs (0, d/2),(1, d/2+1)...;
our model uses the rotate-half convention, so we apply the inverse permutation on load
(the same as transformers' GGUF loader). phi2 files are not permuted (NEOX rope).

The tokenizer (vocab, merges, special tokens, chat template) also comes from the file's
metadata, through `primer.model.tokenizer.Tokenizer.from_gguf`.
"""

from __future__ import annotations

import functools
import mmap
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from primer.errors import PrimerError
from primer.model.transformer import ModelConfig, Transformer, rope_cache

SUPPORTED_ARCHS = ("llama", "phi2")


class GGUFField:
    """One metadata entry; `contents()` gives its value, as `gguf.ReaderField.contents()` does."""

    __slots__ = ("name", "value", "type")

    def __init__(self, name: str, value, vtype: int):
        self.name, self.value, self.type = name, value, vtype

    def contents(self):
        return self.value


@dataclass
class GGUFTensor:
    """A tensor's header and its raw bytes (memory-mapped); shape lists dims fastest-first (GGUF order)."""

    name: str
    tensor_type: "gguf.GGMLQuantizationType"  # noqa: F821
    shape: tuple[int, ...]
    data: np.ndarray


# GGUF metadata value types -> struct codes (strings = 8, arrays = 9 are parsed separately).
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


class GGUFFile:
    """A fast, read-only GGUF parser (header, metadata, tensor table, memory-mapped data).

    It exposes the part of `gguf.GGUFReader`'s interface we use (`fields[key].contents()`,
    `tensors[i].name/.tensor_type/.shape/.data`) but parses the 49k-entry vocabulary arrays in
    ~0.1 s where GGUFReader takes several seconds, which matters for a CLI that starts per prompt.
    Quantization constants and the dequantization fallback still come from the `gguf` package.
    """

    def __init__(self, path: str | Path):
        import gguf

        self.path = Path(path)
        with open(self.path, "rb") as f:
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        self._mm = np.frombuffer(self._map, dtype=np.uint8)
        self._buf = memoryview(self._mm)
        self._off = 0
        if bytes(self._buf[:4]) != b"GGUF":
            raise ValueError("bad magic")
        self._off = 4
        self.version = self._read("I")
        if self.version not in (2, 3):
            raise ValueError(f"unsupported GGUF version {self.version}")
        n_tensors, n_kv = self._read("Q"), self._read("Q")
        self.fields: dict[str, GGUFField] = {}
        for _ in range(n_kv):
            key = self._str()
            vtype = self._read("I")
            self.fields[key] = GGUFField(key, self._value(vtype), vtype)
        infos = []
        for _ in range(n_tensors):
            name = self._str()
            n_dims = self._read("I")
            dims = struct.unpack_from(f"<{n_dims}Q", self._buf, self._off)
            self._off += 8 * n_dims
            ttype, offset = self._read("I"), self._read("Q")
            infos.append((name, dims, ttype, offset))
        align = int(self.fields["general.alignment"].value) if "general.alignment" in self.fields else 32
        start = -(-self._off // align) * align
        self.tensors: list[GGUFTensor] = []
        for name, dims, ttype, offset in infos:
            qtype = gguf.GGMLQuantizationType(ttype)
            block, type_size = gguf.GGML_QUANT_SIZES[qtype]
            n = int(np.prod(dims)) if dims else 1
            nbytes = n * type_size // block
            lo = start + offset
            if lo + nbytes > len(self._mm):
                raise ValueError(f"tensor '{name}' runs past the end of the file")
            raw = self._mm[lo : lo + nbytes]
            rows = tuple(reversed(dims))[:-1]
            data = raw.reshape(*rows, nbytes // max(1, int(np.prod(rows))) if rows else nbytes)
            self.tensors.append(GGUFTensor(name, qtype, tuple(int(d) for d in dims), data))

    def release_pages(self) -> None:
        """Drop the file's pages from this process's resident memory (they stay in the OS page cache
        and come back on the next read): after the weights are packed, only the embedding rows a
        lookup touches need to be resident."""
        self._map.madvise(mmap.MADV_DONTNEED)

    def _read(self, code: str):
        (v,) = struct.unpack_from("<" + code, self._buf, self._off)
        self._off += struct.calcsize(code)
        return v

    def _str(self) -> str:
        n = self._read("Q")
        s = bytes(self._buf[self._off : self._off + n]).decode("utf-8", errors="replace")
        self._off += n
        return s

    def _value(self, vtype: int):
        if vtype in _SCALARS:
            return self._read(_SCALARS[vtype])
        if vtype == 8:
            return self._str()
        if vtype == 9:
            itype, n = self._read("I"), self._read("Q")
            if itype in _SCALARS:
                code = _SCALARS[itype]
                vals = list(struct.unpack_from(f"<{n}{code}", self._buf, self._off))
                self._off += n * struct.calcsize(code)
                return vals
            if itype == 8:
                buf, off, out = self._buf, self._off, []
                for _ in range(n):
                    ln = int.from_bytes(buf[off : off + 8], "little")
                    out.append(bytes(buf[off + 8 : off + 8 + ln]).decode("utf-8", errors="replace"))
                    off += 8 + ln
                self._off = off
                return out
            return [self._value(itype) for _ in range(n)]
        raise ValueError(f"unknown GGUF value type {vtype}")


def open_gguf(path: str | Path) -> GGUFFile:
    """Parse `path`'s GGUF header, with one-line errors for a missing or unreadable file."""
    p = Path(path)
    if not p.is_file():
        raise PrimerError(f"model file not found: {p}")
    with open(p, "rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise PrimerError(f"{p}: not a GGUF file (its first bytes are {magic!r}, not b'GGUF')")
    try:
        return GGUFFile(p)
    except (ValueError, struct.error, UnicodeDecodeError, KeyError, OverflowError) as e:
        raise PrimerError(f"{p}: corrupt or truncated GGUF file ({e})") from None


def field(reader, key: str, default=None):
    """The value of metadata field `key`, or `default`."""
    f = reader.fields.get(key)
    if f is None:
        return default
    return f.contents()


def architecture(reader) -> str:
    return str(field(reader, "general.architecture", "?"))


def config_from_gguf(reader, path: str | Path = "") -> ModelConfig:
    """Build a ModelConfig from GGUF metadata (`{arch}.block_count`, ...)."""
    arch = architecture(reader)
    if arch not in SUPPORTED_ARCHS:
        raise PrimerError(
            f"{path}: unsupported GGUF architecture '{arch}'; supported: {', '.join(SUPPORTED_ARCHS)}"
        )

    def need(key: str):
        v = field(reader, f"{arch}.{key}")
        if v is None:
            raise PrimerError(f"{path}: GGUF metadata lacks '{arch}.{key}'")
        return v

    n_embd = int(need("embedding_length"))
    n_head = int(need("attention.head_count"))
    n_kv = int(field(reader, f"{arch}.attention.head_count_kv", n_head))
    names = {t.name for t in reader.tensors}
    emb = next((t for t in reader.tensors if t.name == "token_embd.weight"), None)
    if emb is None:
        raise PrimerError(f"{path}: GGUF file has no token_embd.weight tensor")
    vocab = int(field(reader, f"{arch}.vocab_size", 0) or emb.shape[-1])
    head_dim = int(field(reader, f"{arch}.attention.key_length", n_embd // n_head))
    common = dict(
        name=str(field(reader, "general.name", arch)),
        vocab_size=vocab,
        n_layer=int(need("block_count")),
        n_head=n_head,
        n_kv_head=n_kv,
        n_embd=n_embd,
        head_dim=head_dim,
        intermediate_size=int(need("feed_forward_length")),
        block_size=int(need("context_length")),
        rotary_dim=int(field(reader, f"{arch}.rope.dimension_count", head_dim)),
        rope_base=float(field(reader, f"{arch}.rope.freq_base", 10000.0)),
        tie_embeddings="output.weight" not in names,
    )
    if arch == "llama":
        return ModelConfig(
            **common,
            parallel_residual=False,
            norm="rmsnorm",
            norm_eps=float(need("attention.layer_norm_rms_epsilon")),
            mlp="swiglu",
            bias="blk.0.attn_q.bias" in names,
        )
    # phi2
    return ModelConfig(
        **common,
        parallel_residual=True,
        norm="layernorm",
        norm_eps=float(need("attention.layer_norm_epsilon")),
        mlp="gelu_tanh",
        bias=True,
        lm_head_bias="output.bias" in names,
    )


def unpermute_rope(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """Undo llama.cpp's Q/K row permutation (interleaved -> rotate-half); works on weights and biases."""
    half = w.shape[0] // n_head // 2
    return w.reshape(n_head, half, 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def permute_rope(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """llama.cpp's converter permutation (rotate-half -> interleaved); the inverse of `unpermute_rope`."""
    half = w.shape[0] // n_head // 2
    return w.reshape(n_head, 2, half, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def _blocks(tensor, block_bytes: int) -> torch.Tensor:
    raw = torch.from_numpy(np.array(tensor.data, dtype=np.uint8, copy=True)).reshape(-1)
    return raw.view(-1, block_bytes)


def _f16(b: torch.Tensor) -> torch.Tensor:
    """(n, 2) uint8 little-endian halves -> (n, 1) float32."""
    return b.contiguous().view(torch.float16).float()


def _decoded_here(t) -> bool:
    """Whether `_decode` handles type t (the rest goes through `gguf.quants.dequantize`)."""
    import gguf

    Q = gguf.GGMLQuantizationType
    return t in (Q.F32, Q.F16, Q.BF16, Q.Q8_0, Q.Q4_0, Q.Q4_1)


def _decode(b: torch.Tensor, t) -> torch.Tensor:
    """Blocks (n, block bytes) uint8 of a type `_decoded_here` -> (n, elements per block) fp32."""
    import gguf

    Q = gguf.GGMLQuantizationType
    if t == Q.F32:
        return b.view(torch.float32)
    if t == Q.F16:
        return b.view(torch.float16).float()
    if t == Q.BF16:
        return b.view(torch.bfloat16).float()
    if t == Q.Q8_0:  # block of 32: fp16 scale d, 32 x int8; w = d * q
        return _f16(b[:, :2]) * b[:, 2:].contiguous().view(torch.int8).float()
    # Q4_0 / Q4_1, block of 32: fp16 d (+ fp16 min m), 16 bytes of nibbles
    qs = b[:, b.shape[1] - 16 :]
    q = torch.cat([qs & 0x0F, qs >> 4], dim=1).float()  # low nibbles = elements 0..15
    d = _f16(b[:, :2])
    return d * (q - 8.0) if t == Q.Q4_0 else d * q + _f16(b[:, 2:4])


def _block_bytes(t) -> int:
    import gguf

    return gguf.GGML_QUANT_SIZES[t][1]


def dequantize(tensor) -> torch.Tensor:
    """One GGUF tensor as fp32 torch, in PyTorch (out, in) order.

    F32/F16/BF16 and the common Q8_0/Q4_0/Q4_1 blocks are decoded here in torch (vectorised,
    ~10x faster than numpy); every other type goes through `gguf.quants.dequantize`.
    """
    import gguf

    shape = tuple(int(s) for s in reversed(tensor.shape))  # GGUF lists dims fastest-first
    t = tensor.tensor_type
    if _decoded_here(t):
        out = _decode(_blocks(tensor, _block_bytes(t)), t)
    else:
        arr = gguf.quants.dequantize(np.asarray(tensor.data), t)
        out = torch.from_numpy(np.array(arr, dtype=np.float32, copy=True))
    return out.reshape(shape)


def dequantize_rows(tensor, idx: torch.Tensor) -> torch.Tensor:
    """Rows `idx` (any shape) of a 2-D GGUF tensor as fp32 (*idx.shape, row length), equal to
    `dequantize(tensor)[idx]` but reading only those rows (an embedding lookup on the file's blocks)."""
    import gguf

    t, K = tensor.tensor_type, int(tensor.shape[0])
    rows = np.asarray(tensor.data).reshape(int(np.prod(tensor.shape[1:])), -1)[idx.reshape(-1).numpy()]
    if _decoded_here(t):
        out = _decode(torch.from_numpy(rows).reshape(-1, _block_bytes(t)), t)
    else:
        out = torch.from_numpy(np.array(gguf.quants.dequantize(rows, t), dtype=np.float32))
    return out.reshape(*idx.shape, K)


def _has_codes(t) -> bool:
    import gguf

    Q = gguf.GGMLQuantizationType
    return t in (Q.Q4_0, Q.Q4_1, Q.Q8_0)


def block_codes(tensor, heads: int = 0, rows: slice | None = None):
    """The integer codes and block scales of a Q4_0 / Q4_1 / Q8_0 tensor, rows in our order.

    Returns ("q4", q uint8 (N, K) in 0..15, d (N, K/32), m (N, K/32)) with w = d * q + m, or
    ("q8", q int8 (N, K), d (N, K/32), None) with w = d * q; None for other types. `heads` > 0
    un-permutes llama Q/K rows, `rows` selects a row range (phi2's fused qkv). The fast CPU
    decoder packs these for its int4 kernels, so it runs the file's own weights.
    """
    import gguf

    Q = gguf.GGMLQuantizationType
    t = tensor.tensor_type
    if not _has_codes(t):
        return None
    N = int(np.prod(tensor.shape[1:])) if len(tensor.shape) > 1 else 1
    K = int(tensor.shape[0])
    nb = {Q.Q4_0: 18, Q.Q4_1: 20, Q.Q8_0: 34}[t]
    b = _blocks(tensor, nb)  # (N * K/32, nb)
    d = _f16(b[:, :2]).view(N, K // 32)
    if t == Q.Q8_0:
        kind, q, m = "q8", b[:, 2:].contiguous().view(torch.int8).view(N, K), None
    else:
        qs = b[:, nb - 16:]
        kind, q = "q4", torch.cat([qs & 0x0F, qs >> 4], dim=1).view(N, K)
        m = -8 * d if t == Q.Q4_0 else _f16(b[:, 2:4]).view(N, K // 32)
    parts = [q, d] + ([m] if m is not None else [])
    if heads:
        parts = [unpermute_rope(x, heads) for x in parts]
    if rows is not None:
        parts = [x[rows] for x in parts]
    return (kind, parts[0], parts[1], parts[2] if m is not None else None)


def _llama_names(cfg: ModelConfig) -> dict[str, str]:
    m = {"token_embd.weight": "embed.weight", "output_norm.weight": "norm.weight", "output.weight": "lm_head.weight"}
    for i in range(cfg.n_layer):
        g, o = f"blk.{i}.", f"blocks.{i}."
        for a, b in [
            ("attn_norm.weight", "attn_norm.weight"),
            ("ffn_norm.weight", "mlp_norm.weight"),
            ("attn_q.weight", "attn.q_proj.weight"),
            ("attn_k.weight", "attn.k_proj.weight"),
            ("attn_v.weight", "attn.v_proj.weight"),
            ("attn_output.weight", "attn.o_proj.weight"),
            ("attn_q.bias", "attn.q_proj.bias"),
            ("attn_k.bias", "attn.k_proj.bias"),
            ("attn_v.bias", "attn.v_proj.bias"),
            ("attn_output.bias", "attn.o_proj.bias"),
            ("ffn_gate.bias", "mlp.gate_proj.bias"),
            ("ffn_up.bias", "mlp.up_proj.bias"),
            ("ffn_down.bias", "mlp.down_proj.bias"),
            ("ffn_gate.weight", "mlp.gate_proj.weight"),
            ("ffn_up.weight", "mlp.up_proj.weight"),
            ("ffn_down.weight", "mlp.down_proj.weight"),
        ]:
            m[g + a] = o + b
    return m


def _phi2_names(cfg: ModelConfig) -> dict[str, str]:
    m = {
        "token_embd.weight": "embed.weight",
        "output_norm.weight": "norm.weight",
        "output_norm.bias": "norm.bias",
        "output.weight": "lm_head.weight",
        "output.bias": "lm_head.bias",
    }
    for i in range(cfg.n_layer):
        g, o = f"blk.{i}.", f"blocks.{i}."
        for a, b in [
            ("attn_norm.weight", "attn_norm.weight"),
            ("attn_norm.bias", "attn_norm.bias"),
            ("attn_q.weight", "attn.q_proj.weight"),
            ("attn_k.weight", "attn.k_proj.weight"),
            ("attn_v.weight", "attn.v_proj.weight"),
            ("attn_q.bias", "attn.q_proj.bias"),
            ("attn_k.bias", "attn.k_proj.bias"),
            ("attn_v.bias", "attn.v_proj.bias"),
            ("attn_output.weight", "attn.o_proj.weight"),
            ("attn_output.bias", "attn.o_proj.bias"),
            ("ffn_up.weight", "mlp.fc1.weight"),
            ("ffn_up.bias", "mlp.fc1.bias"),
            ("ffn_down.weight", "mlp.fc2.weight"),
            ("ffn_down.bias", "mlp.fc2.bias"),
        ]:
            m[g + a] = o + b
    return m


def gguf_sources(reader, cfg: ModelConfig, path: str | Path = "") -> dict[str, tuple]:
    """Our parameter name -> (GGUF tensor, heads to un-permute (llama Q/K), row slice (phi2's fused
    qkv) or None), reading no weight; a tied head names the embedding's source."""
    arch = architecture(reader)
    names = _llama_names(cfg) if arch == "llama" else _phi2_names(cfg)
    sources: dict[str, tuple] = {}
    for t in reader.tensors:
        if arch == "phi2" and t.name.endswith(("attn_qkv.weight", "attn_qkv.bias")):
            base = t.name.replace("blk.", "blocks.").replace("attn_qkv.", "attn.{}_proj.")
            lo = 0
            for part, n in zip("qkv", (cfg.n_head, cfg.n_kv_head, cfg.n_kv_head)):
                sources[base.format(part)] = (t, 0, slice(lo, lo + n * cfg.head_dim))
                lo += n * cfg.head_dim
            continue
        if t.name not in names:
            if t.name.startswith("rope_") or t.name.endswith("rope_freqs.weight"):
                continue  # precomputed rope tables; we compute our own
            raise PrimerError(f"{path}: unexpected tensor '{t.name}' for architecture '{arch}'")
        heads = 0
        if arch == "llama" and ".attn_q." in t.name:
            heads = cfg.n_head
        elif arch == "llama" and ".attn_k." in t.name:
            heads = cfg.n_kv_head
        sources[names[t.name]] = (t, heads, None)
    if cfg.tie_embeddings and "embed.weight" in sources:
        sources["lm_head.weight"] = sources["embed.weight"]
    return sources


def source_tensor(t, heads: int = 0, rows: slice | None = None) -> torch.Tensor:
    """One `gguf_sources` entry dequantized to fp32, in our layout."""
    w = dequantize(t)
    if heads:
        w = unpermute_rope(w, heads)
    return w if rows is None else w[rows].clone()


def _source_shape(t, heads: int = 0, rows: slice | None = None) -> tuple[int, ...]:
    shape = [int(s) for s in reversed(t.shape)]
    if rows is not None:
        shape[0] = rows.stop - rows.start
    return tuple(shape)


def state_dict_from_gguf(reader, cfg: ModelConfig, path: str | Path = "",
                         sources: dict | None = None) -> dict[str, torch.Tensor]:
    """Dequantized weights under our parameter names (Q/K un-permuted for llama).

    `sources`, when given, is filled with `gguf_sources` so `block_codes` can recover the quantized
    blocks later.
    """
    src = gguf_sources(reader, cfg, path)
    if sources is not None:
        sources.update(src)
    tied = cfg.tie_embeddings and "embed.weight" in src
    release = getattr(reader, "release_pages", lambda: None)
    out = {}
    for name, s in src.items():
        if not (tied and name == "lm_head.weight"):
            out[name] = source_tensor(*s)
            release()  # dequantized: the file's pages need not stay resident beside the weights,
            _trim_heap()  # nor the dequantization's freed transients (glibc keeps them: ~175 MB at the end)
    return out


TRIM_EVERY_BYTES = 8 << 20
"""A decode-only load trims the heap after about this many weights' blocks were copied out and packed (see
`GGUFWeights._codes`): the bundled model's peak 437 -> 420 MB for +0.07 s of a 0.55 s load (after every matrix:
412 MB, +0.23 s; every 32 MB: 425 MB, +0.02 s)."""


class GGUFWeights:
    """A GGUF file as `primer.model.quant.FastDecoder` reads it (see `quant.ModelWeights`), with no
    fp32 copy of the weights: the quantized matrices go to the decoder as their blocks (`block_codes`,
    packed for the kernels one matrix at a time), the embedding is looked up row by row in the
    memory-mapped file (`dequantize_rows`; a tied head and the embedding are the same file bytes), and
    only the small tensors (norms, biases) and matrices stored as floats are dequantized. Where the
    decoder asks for a weight's values (torch's fallback kernels run prompts on dense fp32), it gets
    them dequantized."""

    def __init__(self, reader, cfg: ModelConfig, path: str | Path = ""):
        self.cfg, self.path = cfg, path
        self._src = gguf_sources(reader, cfg, path)
        if "embed.weight" not in self._src:
            raise PrimerError(f"{path}: GGUF file has no token_embd.weight tensor")
        self.rope_cos, self.rope_sin = rope_cache(cfg)
        # the decoder keeps this function, and through it only the embedding's memory-mapped bytes
        self.embed = functools.partial(dequantize_rows, self._src["embed.weight"][0])
        self._release = reader.release_pages
        self._unpacked = 0  # weights whose blocks were copied out since the heap was last trimmed

    def tensor(self, name: str, shape_only: bool = False) -> torch.Tensor | None:
        s = self._src.get(name)
        if s is None:
            if name.endswith(".weight"):  # biases are optional, weights are not
                raise PrimerError(f"{self.path}: the GGUF file has no tensor for '{name}', which its metadata's "
                                  f"{self.cfg.name} shape needs")
            return None
        if shape_only:
            return torch.empty(_source_shape(*s), device="meta")
        return source_tensor(*s)

    def codes(self, name: str):
        s = self._src.get(name)
        return functools.partial(self._codes, s) if s is not None and _has_codes(s[0].tensor_type) else None

    def _codes(self, source: tuple):
        if self._unpacked >= TRIM_EVERY_BYTES:
            # the packing transients of the matrices before, freed: glibc keeps them until the load's end trim
            _trim_heap()
            self._unpacked = 0
        codes = block_codes(*source)
        self._unpacked += codes[1].numel()
        self._release()  # the blocks are copied out: the file's pages need not stay resident while packing
        return codes


def load_gguf_model(path: str | Path, dtype: torch.dtype = torch.float32, reader=None) -> Transformer:
    """The model in a GGUF file, dequantized to `dtype`, in eval mode."""
    from primer.weights.checkpoint import model_from_state_dict

    reader = reader if reader is not None else open_gguf(path)
    cfg = config_from_gguf(reader, path)
    sources: dict = {}
    sd = state_dict_from_gguf(reader, cfg, path, sources)
    model = model_from_state_dict(cfg, sd, source=f"tensors in {path}", config_source="its GGUF metadata", dtype=dtype)
    # name -> a function returning that weight's quantized blocks, so primer.model.quant can pack the
    # file's own codes without knowing the GGUF format
    model.block_codes = {name: functools.partial(block_codes, *src) for name, src in sources.items()}
    return model.eval()


def load_gguf(path: str | Path, dtype: torch.dtype = torch.float32, decode_only: bool = False):
    """(model, tokenizer) from a GGUF file; with decode_only the model is a
    `primer.model.quant.FastDecoder` on the file's blocks (no fp32 weights), else the fp32 Transformer."""
    from primer.model.tokenizer import Tokenizer

    reader = open_gguf(path)
    if not decode_only:
        return load_gguf_model(path, dtype=dtype, reader=reader), Tokenizer.from_gguf(reader)
    from primer.model.quant import FastDecoder

    # the tokenizer first: its transient Python vocabulary (~30 MB) then peaks before the packed blocks are resident
    tok = Tokenizer.from_gguf(reader)
    model = FastDecoder(GGUFWeights(reader, config_from_gguf(reader, path), path))
    _trim_heap()
    return model, tok


def _trim_heap() -> None:
    """Hand the heap the packing freed back to the OS (glibc keeps it otherwise: ~45 MB here)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim():
    """glibc's malloc_trim, looked up once (the lookup costs ~2 ms, and a load trims after every tensor); None
    where the C library is not glibc."""
    import ctypes
    import ctypes.util

    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None
