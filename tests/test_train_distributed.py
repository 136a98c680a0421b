"""The same training code under torchrun: 2 CPU processes (gloo) with DDP and with FSDP2 reach the
same losses as 1 process with the same global batch, and an FSDP run resumes exactly."""

import json
import os
import subprocess
import sys

import pytest

from primer.train import train
from test_train import cfg_for, losses, make_token_dir

ARGS = dict(seq_len=32, batch_size=4, max_steps=6, lr=3e-3, warmup_steps=2, eval_every=3, eval_batches=2,
            log_every=1, save_every=3, seed=7)


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist")
    data = make_token_dir(root / "tokens")
    s = train(cfg_for(data, root / "one", threads=1, **ARGS))
    return root, data, s


@pytest.mark.slow
@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_two_gloo_processes_match_one(single, parallel):
    root, data, one = single
    out = root / parallel
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in ARGS.items()]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "primer",
           "train", f"--data={data}", f"--out-dir={out}", "--model=debug", "--no-progress", "--threads=1",
           f"--parallel={parallel}", *flags]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]
    a, b = losses(root / "one"), losses(out)
    assert list(b) == list(a)
    for step in a:
        assert b[step] == pytest.approx(a[step], abs=1e-4), (step, a, b)
    summary = json.loads((out / "summary.json").read_text())
    assert [s for s, _ in summary["val_curve"]] == [3, 6]
    assert summary["val_loss"] == pytest.approx(one.val_loss, abs=1e-4)
    # The checkpoint holds full (unsharded) weights that load in one process.
    from primer.weights.checkpoint import load_checkpoint

    ck = load_checkpoint(out / "checkpoints" / "step_0000006")
    assert ck.model.cfg.n_layer == 2 and ck.meta["user"]["step"] == 6
    if parallel == "fsdp":
        # Stop after step 3 and resume under FSDP: sharded optimizer state is restored exactly.
        import shutil

        shutil.rmtree(out / "checkpoints" / "step_0000006")
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
        assert r.returncode == 0, r.stderr[-4000:]
        c = losses(out)
        for step in (4, 5, 6):
            assert c[step] == pytest.approx(b[step], abs=1e-5)
