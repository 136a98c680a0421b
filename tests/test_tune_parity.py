"""`primer tune` against TRL, the tool people fine-tune with: same HF model dir, same 32 conversations in the same
order, fp32, same learning rate, no packing, 20 steps (bench/tune.py parity).

SFT: per-step loss within 1% of TRL's SFTTrainer (completion-only loss). DPO: per-step loss and reward margin
within 1% of TRL's DPOTrainer (sigmoid, beta 0.1, precomputed reference log-probs); the margin starts at 0
(policy == reference), so its difference is taken relative to the largest margin of the run.
"""

import importlib.util
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(importlib.util.find_spec("trl") is None, reason="TRL not installed (pip install -e '.[test]')")]


def test_sft_and_dpo_track_trl_step_by_step(bundled_gguf, tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    try:
        import tune as bench_tune  # bench/tune.py
    finally:
        sys.path.pop(0)
    res = bench_tune.parity("tiny", steps=20, batch=8, work=tmp_path)
    assert len(res["sft"]["ours"]) == len(res["sft"]["trl"]) == 20
    assert len(res["dpo"]["ours"]) == len(res["dpo"]["trl"]) == 20
    assert res["sft"]["ours"][-1] < 0.97 * res["sft"]["ours"][0]  # it learns (10.83 -> 10.39): not flat lines compared
    assert res["dpo"]["trl_margin"][-1] > 0
    worst = res["max_rel_diff"]
    assert worst["sft_loss"] <= 0.01, res["sft"]
    assert worst["dpo_loss"] <= 0.01, res["dpo"]
    assert worst["dpo_margin"] <= 0.01, res["dpo"]
