"""Teachers: the HTTP client's retries, limits and errors (stub server), and real models (llama.cpp)."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from synth_helpers import LlamaServer, free_port, have_llama_server

from primer.errors import PrimerError
from primer.teachers import (
    HttpOptions,
    HttpTeacher,
    Sampling,
    TeacherUnavailable,
    load_teacher,
)
from primer.weights.bundled import bundled_gguf_path


class Stub:
    """A scripted OpenAI-compatible endpoint on loopback: `script` is a list of (status, delay) per request."""

    def __init__(self, script=None, delay=0.0):
        self.script = list(script or [])
        self.delay = delay
        self.requests = []
        self.active = self.max_active = 0
        self.lock = threading.Lock()
        stub = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with stub.lock:
                    stub.requests.append((dict(self.headers), body, time.monotonic()))
                    status = stub.script.pop(0) if stub.script else 200
                    stub.active += 1
                    stub.max_active = max(stub.max_active, stub.active)
                try:
                    prompt = body["messages"][-1]["content"]
                    time.sleep(float(prompt.split("sleep=")[1]) if "sleep=" in prompt else stub.delay)
                    if status != 200:
                        self.send_response(status)
                        self.send_header("Retry-After", "0")
                        self.end_headers()
                        self.wfile.write(b'{"error": "scripted"}')
                        return
                    out = {"choices": [{"message": {"role": "assistant", "content": "echo: " + prompt},
                                        "finish_reason": "stop"}],
                           "usage": {"prompt_tokens": 5, "completion_tokens": 7}}
                    data = json.dumps(out).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                finally:
                    with stub.lock:
                        stub.active -= 1

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stub():
    s = Stub()
    yield s
    s.close()


def teacher(url, **kw):
    return HttpTeacher(url, "m", HttpOptions(backoff=0.01, **kw))


def test_retries_5xx_and_429_then_succeeds(stub):
    stub.script = [503, 429, 502]
    t = teacher(stub.url, retries=5)
    (c,) = t.complete(["hello"], Sampling(max_tokens=9, seed=4))
    assert c.text == "echo: hello" and c.finish_reason == "stop" and c.completion_tokens == 7
    assert t.retried == 3 and len(stub.requests) == 4
    body = stub.requests[-1][1]
    assert body["model"] == "m" and body["max_tokens"] == 9 and body["seed"] == 4


def test_unreachable_endpoint_names_url_and_how_to_check():
    url = f"http://127.0.0.1:{free_port()}/v1"
    t = teacher(url, retries=2)
    with pytest.raises(TeacherUnavailable, match=r"127\.0\.0\.1.*failed 3 times.*curl .*/v1/models"):
        t.complete(["hi"])


def test_client_errors(stub, monkeypatch):
    stub.script = [400]
    (c,) = teacher(stub.url).complete(["too long"])
    assert c.finish_reason == "error" and "HTTP 400" in c.error
    stub.script = [401]
    with pytest.raises(PrimerError, match="MY_KEY"):
        teacher(stub.url, api_key_env="MY_KEY").complete(["x"])


def test_api_key_from_env(stub, monkeypatch):
    monkeypatch.setenv("MY_KEY", "sekret")
    teacher(stub.url, api_key_env="MY_KEY").complete(["x"])
    assert stub.requests[-1][0]["Authorization"] == "Bearer sekret"


def test_concurrency_limit_and_out_of_order_results(stub):
    t = teacher(stub.url, concurrency=3)
    items = [(i, f"p{i} sleep={0.3 if i == 0 else 0.05}") for i in range(9)]
    got = list(t.imap(items))
    assert sorted(k for k, _ in got) == list(range(9))
    assert got[0][0] != 0  # the slow first prompt finished later
    assert all(c.text.startswith(f"echo: p{k} ") for k, c in got)
    assert stub.max_active == 3


def test_rate_limit(stub):
    t = teacher(stub.url, concurrency=8, rate_limit=20.0)
    t0 = time.monotonic()
    t.complete([f"x{i}" for i in range(8)])
    starts = sorted(r[2] for r in stub.requests)
    assert starts[-1] - starts[0] >= 7 / 20 * 0.9 and time.monotonic() - t0 >= 0.3


def test_load_teacher_errors(tmp_path):
    with pytest.raises(PrimerError, match="unknown teacher"):
        load_teacher("gpt-5")
    with pytest.raises(PrimerError, match="not found"):
        load_teacher(str(tmp_path / "missing.gguf"))
    assert isinstance(load_teacher("http://127.0.0.1:1/v1/", model="x"), HttpTeacher)


needs_server = pytest.mark.skipif(not have_llama_server(), reason="llama-cpp-python[server] not installed")


@needs_server
def test_http_teacher_against_real_llama_cpp_server(tmp_path):
    with LlamaServer(bundled_gguf_path(), log=tmp_path / "server.log") as server:
        t = HttpTeacher(server.base_url, "smollm2", HttpOptions(concurrency=2))
        outs = t.complete(["Name a fruit.", [{"role": "user", "content": "What is 2+2?"}]],
                          Sampling(max_tokens=6, temperature=0.0, seed=1))
    assert all(o.text.strip() and o.prompt_tokens > 5 and 0 < o.completion_tokens <= 6 for o in outs)
    assert all(o.finish_reason in ("stop", "length") for o in outs)


@pytest.mark.slow
def test_gguf_and_bundled_teachers_generate_the_same_greedy_text():
    """The bundled teacher (primer's decoder, batched) and llama.cpp agree on greedy answers."""
    prompts = ["Name a color.", "What is 2+2?", "Write one sentence about the Moon."]
    greedy = Sampling(max_tokens=10, temperature=0.0)
    with load_teacher(str(bundled_gguf_path()), n_threads=1) as t:
        ref = t.complete(prompts, greedy)
    assert all(c.text.strip() and c.completion_tokens <= 10 and c.prompt_tokens > 0 for c in ref)
    with load_teacher("bundled", batch_size=3) as t:
        outs = t.complete(prompts, greedy)
        sampled = t.complete(prompts[:2], Sampling(max_tokens=10, temperature=0.8, seed=3))
    assert t.name.startswith("bundled")
    assert [c.text for c in outs] == [c.text for c in ref]
    assert [(c.prompt_tokens, c.completion_tokens, c.finish_reason) for c in outs] == \
        [(c.prompt_tokens, c.completion_tokens, c.finish_reason) for c in ref]
    assert all(c.text.strip() for c in sampled)
