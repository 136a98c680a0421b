"""Checkpoint dir round trips (tied/untied, phi/Llama, tokenizer) and its errors."""

import json

import pytest
import torch
from safetensors.torch import load_file

from primer.weights.checkpoint import META, WEIGHTS, is_checkpoint, load_checkpoint, save_checkpoint
from primer.errors import PrimerError
from primer.model.transformer import ModelConfig, Transformer


def _model(name="debug", **overrides):
    torch.manual_seed(0)
    return Transformer(ModelConfig.from_name(name, **overrides)).eval()


def _tiny_tokenizer():
    import tokenizers
    from tokenizers import decoders, models, pre_tokenizers, trainers

    from primer.model.tokenizer import Tokenizer

    tk = tokenizers.Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator(["the cat sat on the mat"] * 20, trainer=trainer)
    return Tokenizer(tk, bos_token="<|endoftext|>", eos_token="<|endoftext|>", chat_template="{{ messages[0]['content'] }}")


@pytest.mark.parametrize("name,overrides", [("debug", {}), ("debug", {"tie_embeddings": True}),
                                            ("debug-phi", {}), ("debug", {"n_kv_head": 2})])
def test_round_trip_same_logits(tmp_path, name, overrides):
    model = _model(name, **overrides)
    save_checkpoint(tmp_path, model, meta={"step": 7, "loss": 1.5})
    assert is_checkpoint(tmp_path)
    ck = load_checkpoint(tmp_path)
    assert ck.model.cfg == model.cfg
    assert ck.tokenizer is None
    assert ck.meta["user"] == {"step": 7, "loss": 1.5}
    for key in ("primer_version", "torch_version", "created", "git_sha", "dtype"):
        assert key in ck.meta
    x = torch.randint(0, model.cfg.vocab_size, (2, 16))
    assert torch.equal(ck.model(x), model(x))
    if model.cfg.tie_embeddings:
        assert ck.model.lm_head.weight is ck.model.embed.weight
        assert "lm_head.weight" not in load_file(str(tmp_path / WEIGHTS))


def test_meta_json_alone_rebuilds_the_model(tmp_path):
    model = _model("debug-phi")
    save_checkpoint(tmp_path, model)
    meta = json.loads((tmp_path / META).read_text())
    assert ModelConfig.from_dict(meta["model"]) == model.cfg
    assert meta["format"] == "primer-checkpoint"


def test_with_tokenizer_and_dtype(tmp_path):
    model = _model().to(torch.bfloat16)
    tok = _tiny_tokenizer()
    save_checkpoint(tmp_path, model, tokenizer=tok)
    ck = load_checkpoint(tmp_path)
    assert ck.model.embed.weight.dtype == torch.bfloat16
    assert ck.meta["dtype"] == "bfloat16" and ck.meta["tokenizer_hash"] == tok.hash()
    assert ck.tokenizer.hash() == tok.hash()
    assert ck.tokenizer.encode("the cat") == tok.encode("the cat")
    assert load_checkpoint(tmp_path, dtype=torch.float32).model.embed.weight.dtype == torch.float32


def test_unwraps_compiled_or_ddp_style_wrappers(tmp_path):
    model = _model()

    class Wrapper(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.module = m

    save_checkpoint(tmp_path, Wrapper(model))
    assert set(load_file(str(tmp_path / WEIGHTS))) == set(model.state_dict())


def test_missing_dir_and_files(tmp_path):
    with pytest.raises(PrimerError, match="checkpoint directory not found"):
        load_checkpoint(tmp_path / "nope")
    with pytest.raises(PrimerError, match="meta.json is missing"):
        load_checkpoint(tmp_path)
    save_checkpoint(tmp_path, _model())
    (tmp_path / WEIGHTS).unlink()
    with pytest.raises(PrimerError, match="weights file not found: .*model.safetensors"):
        load_checkpoint(tmp_path)


def test_corrupt_files(tmp_path):
    save_checkpoint(tmp_path, _model())
    data = (tmp_path / WEIGHTS).read_bytes()
    (tmp_path / WEIGHTS).write_bytes(data[: len(data) // 2])
    with pytest.raises(PrimerError, match="corrupt or truncated safetensors"):
        load_checkpoint(tmp_path)
    (tmp_path / WEIGHTS).write_bytes(b"garbage")
    with pytest.raises(PrimerError, match="corrupt or truncated safetensors"):
        load_checkpoint(tmp_path)
    (tmp_path / META).write_text("{oops")
    with pytest.raises(PrimerError, match="unreadable meta.json"):
        load_checkpoint(tmp_path)
    (tmp_path / META).write_text('{"format": "something-else"}')
    with pytest.raises(PrimerError, match="not a primer checkpoint"):
        load_checkpoint(tmp_path)


def test_meta_of_a_different_shape_names_tensor_and_shapes(tmp_path):
    save_checkpoint(tmp_path, _model())
    meta = json.loads((tmp_path / META).read_text())
    meta["model"]["n_embd"] = 32
    (tmp_path / META).write_text(json.dumps(meta))
    with pytest.raises(PrimerError, match=r"tensor 'embed.weight' has shape \(512, 64\) in the weights but \(512, 32\) from meta.json"):
        load_checkpoint(tmp_path)
    meta["model"]["n_embd"] = 64
    meta["model"]["n_layer"] = 3
    (tmp_path / META).write_text(json.dumps(meta))
    with pytest.raises(PrimerError, match=r"missing .* blocks\.2\."):
        load_checkpoint(tmp_path)
    meta["model"]["n_layer"] = 2
    meta["model"]["bogus"] = 1
    (tmp_path / META).write_text(json.dumps(meta))
    with pytest.raises(PrimerError, match="unknown model config field"):
        load_checkpoint(tmp_path)


def test_non_json_meta_is_a_clear_error(tmp_path):
    with pytest.raises(PrimerError, match="JSON-serialisable"):
        save_checkpoint(tmp_path, _model(), meta={"x": object()})
    assert not (tmp_path / META).exists()
