"""Every recipe in recipes/ loads: its [tokenize] / [train] sections are valid configs, the training
shapes build (on the meta device), and the published hyper-parameters are what the files say."""

from pathlib import Path

import pytest
import torch

from primer.config import load_section, read_recipe_file
from primer.errors import PrimerError
from primer.model.transformer import Transformer
from primer.tokens.shards import TokenizeConfig
from primer.train.config import TrainConfig, build_model_config
from primer.train.metrics import flops_per_token

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.*"))
SECTIONS = {"tokenize": TokenizeConfig, "train": TrainConfig}


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_every_recipe_loads(path):
    data = read_recipe_file(path)
    for name, cls in SECTIONS.items():
        if name in data:
            cfg = load_section(path, name, cls)
            if name == "train":
                tok_vocab = cfg.vocab_size or 512
                with torch.device("meta"):
                    Transformer(build_model_config(cfg, tok_vocab))


def test_training_recipes_exist():
    names = {p.stem for p in RECIPES}
    assert {"cpu-tiny", "phi-1.5", "phi-3-mini"} <= names


def test_phi_1_5_recipe_is_the_report():
    cfg = load_section(RECIPES[0].parent / "phi-1.5.toml", "train", TrainConfig)
    assert (cfg.lr, cfg.schedule, cfg.warmup_steps) == (2e-4, "constant", 0)
    assert (cfg.beta1, cfg.beta2, cfg.eps, cfg.weight_decay) == (0.9, 0.98, 1e-7, 0.1)
    assert (cfg.batch_size, cfg.seq_len, cfg.max_tokens) == (2048, 2048, 150_000_000_000)
    m = build_model_config(cfg, 50295)
    assert (m.n_layer, m.n_embd, m.n_head, m.rotary_dim, m.parallel_residual, m.vocab_size) == (
        24, 2048, 32, 32, True, 51200)
    steps = -(-cfg.max_tokens // (cfg.batch_size * cfg.seq_len))
    assert steps == 35763
    # ~6 N D: 150B tokens x ~9.7 GFLOP/token ~ 1.5e21 FLOPs.
    assert 1.3e21 < flops_per_token(m, 2048) * cfg.max_tokens < 1.6e21


def test_cpu_tiny_recipe_is_small():
    path = RECIPES[0].parent / "cpu-tiny.toml"
    cfg = load_section(path, "train", TrainConfig)
    tok = load_section(path, "tokenize", TokenizeConfig)
    with torch.device("meta"):
        n = Transformer(build_model_config(cfg, tok.vocab_size)).num_params()
    assert n < 5e6 and cfg.dtype == "fp32" and cfg.samples == 5


def test_unknown_recipe_field_is_a_clear_error(tmp_path):
    p = tmp_path / "r.toml"
    p.write_text("[train]\nmodel = 'debug'\nlearning_rate = 1e-3\n")
    with pytest.raises(PrimerError, match=r"unknown config field\(s\) \['learning_rate'\] in section 'train'; known"):
        load_section(p, "train", TrainConfig)
    p.write_text("[tokenize]\nvocab_size = 'big'\n")
    with pytest.raises(PrimerError, match=r"'vocab_size' in \[tokenize\] expects int"):
        load_section(p, "tokenize", TokenizeConfig)
    p.write_text("[train]\nmodel = 'debug'\n")
    with pytest.raises(PrimerError, match=r"no \[tokenize\] section"):
        load_section(p, "tokenize", TokenizeConfig)
