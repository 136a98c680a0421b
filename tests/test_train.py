"""The training loop on the `debug` shape: golden loss curve, exact resume, accumulation, clear errors."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from primer.tokens.bpe import byte_tokenizer
from primer.cli import main as cli_main
from primer.errors import PrimerError
from primer.tokens.shards import write_token_dir
from primer.train import TrainConfig, train
from primer.train.metrics import read_metrics
from primer.train.schedule import lr_at

WORDS = {
    "name": ["Tom", "Lily", "Sam", "Mia", "Ben"],
    "adj": ["big", "red", "happy", "small", "kind"],
    "noun": ["cat", "dog", "ball", "tree", "bird"],
    "verb": ["saw", "liked", "found", "hugged", "chased"],
}


def story(rng: np.random.Generator) -> str:
    def w(k):
        return WORDS[k][rng.integers(len(WORDS[k]))]

    return " ".join(f"{w('name')} {w('verb')} the {w('adj')} {w('noun')}." for _ in range(rng.integers(2, 6)))


def make_token_dir(path: Path, n_train: int = 200, n_val: int = 20, seed: int = 0) -> Path:
    """A deterministic byte-level corpus of tiny stories (no BPE training, so no tie-breaking)."""
    rng = np.random.default_rng(seed)
    tok = byte_tokenizer()

    def ids(n):
        return np.array([i for _ in range(n) for i in tok.encode(story(rng)) + [0]], dtype=np.int64)

    write_token_dir(path, tok, {"train": ids(n_train), "val": ids(n_val)})
    return path


@pytest.fixture(scope="module")
def token_dir(tmp_path_factory) -> Path:
    return make_token_dir(tmp_path_factory.mktemp("tokens"))


def cfg_for(token_dir: Path, out: Path, **kw) -> TrainConfig:
    base = dict(data=str(token_dir), out_dir=str(out), model="debug", seq_len=32, batch_size=4, max_steps=12,
                lr=3e-3, warmup_steps=2, schedule="cosine", eval_every=6, eval_batches=2, log_every=1,
                save_every=0, progress=False, threads=1, seed=7)
    base.update(kw)
    return TrainConfig(**base)


def losses(out: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(out / "metrics.jsonl") if "loss" in r}


# Step -> training loss of the debug shape on the fixture corpus (cfg_for's settings), fp32 on CPU.
# Recorded with torch 2.13 (CPU); identical with 1 and 2 threads. Regenerate only for a deliberate change
# to the model, the data order or the optimizer, and say so in the commit.
GOLDEN = {1: 5.794933, 2: 5.520307, 3: 5.20888, 4: 5.006548, 5: 4.766425, 6: 4.597015, 7: 4.39414,
          8: 4.226358, 9: 4.085967, 10: 4.039452, 11: 4.060228, 12: 3.975718}
GOLDEN_VAL = {6: 4.405352, 12: 3.968843}


def test_golden_loss_curve(token_dir, tmp_path):
    s = train(cfg_for(token_dir, tmp_path / "run"))
    got = losses(tmp_path / "run")
    assert got.keys() == GOLDEN.keys()
    for step, want in GOLDEN.items():
        assert got[step] == pytest.approx(want, abs=2e-4), f"step {step}: {got[step]} vs golden {want}"
    assert dict(s.val_curve) == pytest.approx(GOLDEN_VAL, abs=2e-4)


def test_bf16_autocast_on_cpu_tracks_the_fp32_curve(token_dir, tmp_path):
    # On a CPU with AMX tiles this is the fast setting (bench/train.py); on any CPU it must train the same
    # model: weights and optimizer in fp32, only the matmuls in bf16.
    train(cfg_for(token_dir, tmp_path / "run", dtype="bf16"))
    got = losses(tmp_path / "run")
    assert got.keys() == GOLDEN.keys()
    for step, want in GOLDEN.items():
        assert got[step] == pytest.approx(want, abs=0.01), f"step {step}: bf16 {got[step]} vs fp32 {want}"
    assert got != pytest.approx(GOLDEN, abs=1e-5)  # it did run in bf16


def test_cpu_peak_counts_the_units_of_the_compute_dtype(monkeypatch):
    # Fake CPU flags: this is about our own accounting (MFU above 100% came from counting bf16 as fp32 FMAs).
    from primer.train import metrics

    flags = {"avx512f", "avx2", "fma", "amx_bf16", "amx_tile", "avx512_bf16"}
    monkeypatch.setattr(metrics, "cpu_flags", lambda: flags)
    fp32 = metrics.cpu_peak_flops(2, torch.float32)
    assert metrics.cpu_matrix_units(torch.bfloat16) == "amx" and metrics.cpu_matrix_units(torch.float16) is None
    assert metrics.cpu_peak_flops(2, torch.bfloat16) == 16 * fp32  # 1,024 vs 64 FLOPs a cycle
    assert metrics.cpu_peak_flops(2, torch.float16) == fp32  # no fp16 unit: autocast runs at the fp32 rate
    flags.discard("amx_bf16")
    assert metrics.cpu_peak_flops(2, torch.bfloat16) == 2 * fp32


def test_run_dir_contents(token_dir, tmp_path):
    s = train(cfg_for(token_dir, tmp_path / "run", max_steps=4, save_every=2, keep_checkpoints=1, samples=2,
                      sample_tokens=12))
    out = tmp_path / "run"
    rows = read_metrics(out / "metrics.jsonl")
    assert {"loss", "lr", "tokens_per_s", "mfu", "grad_norm"} <= set(rows[0])
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step_0000004"]  # keep the last 1
    ck = out / "checkpoints" / "step_0000004"
    assert {"model.safetensors", "meta.json", "tokenizer.json", "trainer.pt"} <= {p.name for p in ck.iterdir()}
    meta = json.loads((ck / "meta.json").read_text())
    assert meta["user"]["step"] == 4 and meta["model"]["vocab_size"] == 320  # 259 rounded up to 64s
    info = json.loads((out / "config.json").read_text())
    assert info["train_config"]["batch_size"] == 4 and info["grad_accum"] == 1
    assert len(s.samples) == 2 and (out / "samples.txt").is_file() and (out / "loss.png").is_file()
    from primer.weights.checkpoint import load_checkpoint

    ckpt = load_checkpoint(ck)
    assert ckpt.tokenizer.hash() == byte_tokenizer().hash()


def test_stopped_and_resumed_equals_uninterrupted(token_dir, tmp_path):
    full = tmp_path / "full"
    train(cfg_for(token_dir, full, save_every=6, keep_checkpoints=5))
    # "Stop" after step 6: keep only that checkpoint, then rerun the same command.
    part = tmp_path / "part"
    shutil.copytree(full, part)
    shutil.rmtree(part / "checkpoints" / "step_0000012")
    s = train(cfg_for(token_dir, part, save_every=6, keep_checkpoints=5))
    a, b = losses(full), losses(part)
    assert list(b) == list(range(1, 13))  # metrics past the checkpoint were replaced, not duplicated
    for step in range(7, 13):
        assert b[step] == pytest.approx(a[step], abs=1e-6)
    wa = torch.load(full / "checkpoints" / "step_0000012" / "trainer.pt", weights_only=False)["optimizer"]
    wb = torch.load(part / "checkpoints" / "step_0000012" / "trainer.pt", weights_only=False)["optimizer"]
    for k, st in wa["state"].items():
        assert torch.allclose(st["exp_avg"], wb["state"][k]["exp_avg"], atol=1e-7)
    assert s.steps == 12


def test_gradient_accumulation_matches_one_big_batch(token_dir, tmp_path):
    train(cfg_for(token_dir, tmp_path / "a", max_steps=4, eval_every=0))
    train(cfg_for(token_dir, tmp_path / "b", max_steps=4, eval_every=0, micro_batch_size=1))
    a, b = losses(tmp_path / "a"), losses(tmp_path / "b")
    for step in a:
        assert b[step] == pytest.approx(a[step], abs=1e-5)


def test_schedules():
    kw = dict(lr=1.0, max_steps=100, min_lr_ratio=0.1)
    assert [lr_at(s, schedule="constant", **kw) for s in (0, 50, 99)] == [1.0, 1.0, 1.0]
    assert lr_at(0, schedule="cosine", warmup_steps=10, **kw) == pytest.approx(0.1)
    assert lr_at(9, schedule="cosine", warmup_steps=10, **kw) == pytest.approx(1.0)
    assert lr_at(99, schedule="cosine", warmup_steps=10, **kw) == pytest.approx(0.1)
    assert lr_at(79, schedule="wsd", decay_fraction=0.2, **kw) == 1.0
    assert lr_at(89, schedule="wsd", decay_fraction=0.2, **kw) == pytest.approx(0.55)
    assert lr_at(99, schedule="wsd", decay_fraction=0.2, **kw) == pytest.approx(0.1)


def test_corpus_too_small_for_one_batch(tmp_path):
    tiny = make_token_dir(tmp_path / "tiny", n_train=3, n_val=3)
    with pytest.raises(PrimerError, match="fewer than one batch of 64"):
        train(cfg_for(tiny, tmp_path / "run", batch_size=64))


def test_checkpoint_from_another_shape(token_dir, tmp_path):
    train(cfg_for(token_dir, tmp_path / "run", max_steps=2))
    with pytest.raises(PrimerError, match="another shape.*n_layer: 2 there vs 3 here"):
        train(cfg_for(token_dir, tmp_path / "run", max_steps=4, model_overrides={"n_layer": 3}))
    ck = tmp_path / "run" / "checkpoints" / "step_0000002"
    with pytest.raises(PrimerError, match="another shape"):
        train(cfg_for(token_dir, tmp_path / "other", model="debug-phi", init_from=str(ck)))


def test_bad_settings_are_clear_errors(token_dir, tmp_path):
    with pytest.raises(PrimerError, match="unknown model override"):
        train(cfg_for(token_dir, tmp_path / "r", model_overrides={"n_layers": 3}))
    with pytest.raises(PrimerError, match="unknown model shape"):
        train(cfg_for(token_dir, tmp_path / "r", model="nope"))
    with pytest.raises(PrimerError, match="exceeds the shape's context"):
        train(cfg_for(token_dir, tmp_path / "r", seq_len=4096))
    with pytest.raises(PrimerError, match="smaller than the tokenizer"):
        train(cfg_for(token_dir, tmp_path / "r", vocab_size=100))
    with pytest.raises(PrimerError, match="do not split into micro-batches"):
        train(cfg_for(token_dir, tmp_path / "r", micro_batch_size=3))
    with pytest.raises(PrimerError, match="no tokens.json"):
        train(cfg_for(tmp_path, tmp_path / "r"))


def test_train_cli_with_recipe_and_flags(token_dir, tmp_path, capsys):
    recipe = tmp_path / "r.toml"
    recipe.write_text(f"""
[train]
data = "{token_dir}"
out_dir = "{tmp_path / 'cli'}"
model = "debug"
model_overrides = {{ n_layer = 1 }}
seq_len = 16
batch_size = 2
max_steps = 50
progress = false
""")
    assert cli_main(["train", "--recipe", str(recipe), "--max-steps", "3", "--model-overrides", "n_embd=32"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["steps"] == 3
    info = json.loads((tmp_path / "cli" / "config.json").read_text())
    assert (info["model_config"]["n_layer"], info["model_config"]["n_embd"]) == (1, 32)
    recipe.write_text(recipe.read_text() + "lerning_rate = 1.0\n")
    assert cli_main(["train", "--recipe", str(recipe)]) == 2
    assert "unknown config field(s) ['lerning_rate'] in section 'train'" in capsys.readouterr().err


def test_no_validation_split_trains_without_eval(tmp_path):
    tok = byte_tokenizer()
    rng = np.random.default_rng(1)
    write_token_dir(tmp_path / "t", tok, {"train": rng.integers(0, 259, 3000)})
    s = train(cfg_for(tmp_path / "t", tmp_path / "run", max_steps=2))
    assert s.steps == 2 and s.val_loss is None and s.val_curve == []
