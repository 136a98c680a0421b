"""`primer synth` against a real OpenAI-compatible server (llama_cpp.server on loopback) that is
stopped mid-run: a short outage is ridden out by retries; a long one stops the run with a clear
error, and the rerun resumes and completes with every prompt done once."""

import os
import subprocess
import sys
import time

import pytest
from synth_helpers import LlamaServer, have_llama_server
from test_synth_run import assert_prefix_of_plan, ids

from primer.synth.run import SynthConfig
from primer.weights.bundled import bundled_gguf_path

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not have_llama_server(), reason="llama-cpp-python[server] not installed")]


def synth_cmd(server, out, n, retries, backoff):
    return [sys.executable, "-m", "primer", "synth", "--teacher", server.base_url, "--model", "smollm2",
            "--n", str(n), "--out", str(out), "--concurrency", "2", "--max-tokens", "8", "--min-words", "1",
            "--retries", str(retries), "--backoff", str(backoff), "--timeout", "60", "--no-progress"]


def wait_docs(out, k, proc, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline and len(ids(out)) < k:
        assert proc.poll() is None, proc.communicate()[0]
        time.sleep(0.05)
    assert len(ids(out)) >= k


def test_server_stopped_mid_run(tmp_path):
    server = LlamaServer(bundled_gguf_path(), log=tmp_path / "server.log").start()
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    try:
        # 1. a short outage: the server is killed and back 2 s later; retries carry the run through
        proc = subprocess.Popen(synth_cmd(server, out, 8, retries=12, backoff=0.3), env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        wait_docs(out, 3, proc)
        server.stop()
        time.sleep(2)
        server.start()
        text = proc.communicate(timeout=600)[0]
        assert proc.returncode == 0, text
        assert "documents: 8 / 8" in text
        retried = int(text.split("retried this run: ")[1].split()[0])
        assert retried >= 1
        assert_prefix_of_plan(SynthConfig(out=out, n=8), 8)

        # 2. a long outage: the run gives up with a clear error naming the URL ...
        cmd = synth_cmd(server, out, 16, retries=2, backoff=0.05)
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        wait_docs(out, 10, proc)
        server.stop()
        text = proc.communicate(timeout=300)[0]
        assert proc.returncode == 2, text
        assert f"{server.base_url}/chat/completions failed 3 times" in text and "curl" in text and "rerun" in text
        assert len(ids(out)) < 16
        # ... and the same command, once the server is back, finishes the rest
        server.start()
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "documents: 16 / 16" in done.stdout
        assert_prefix_of_plan(SynthConfig(out=out, n=16), 16)
    finally:
        server.stop()
