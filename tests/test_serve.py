"""`primer serve` as a real process on loopback, the bundled SmolLM2, driven by the official `openai` client,
raw HTTP for the bad requests, and Chromium (Playwright) for the chat page."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest

from serve_helpers import PrimerServer

openai = pytest.importorskip("openai")
pytest.importorskip("fastapi")

FACT = ("The Zorblat festival is held every spring in the mountain town of Quenmoor. Visitors bring copper "
        "lanterns, and the festival ends when the oldest baker of Quenmoor lights the great bonfire.")
COUNT = "1, 2, 3, 4, 5, 6,"  # greedy SmolLM2 keeps counting: a long, predictable continuation


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory):
    pytest.importorskip("bm25s")
    from primer.index.bm25 import build_index

    docs = tmp_path_factory.mktemp("docs")
    (docs / "quenmoor.txt").write_text(FACT + "\n")
    (docs / "tides.txt").write_text("Ocean tides rise and fall twice a day because the moon pulls on the sea.\n")
    (docs / "bees.txt").write_text("Honey bees dance to tell their hive where flowers are.\n")
    out = tmp_path_factory.mktemp("idx") / "idx"
    build_index([docs], out)
    return out


@pytest.fixture(scope="module")
def server(bundled_gguf, index_dir, tmp_path_factory):
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with PrimerServer(str(bundled_gguf), "--max-batch", "4", "--max-queue", "8", "--index", index_dir,
                      "--passages", "2", log=log) as s:
        yield s


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0, timeout=300)


@pytest.fixture(scope="module")
def model_id(client):
    return client.models.list().data[0].id


def _in_flight(server) -> int:
    return httpx.get(f"{server.url}/health").json()["in_flight"]


def _wait_idle(server, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while _in_flight(server) and time.time() < deadline:
        time.sleep(0.2)
    assert _in_flight(server) == 0


def test_openai_client_chat_stream_and_usage(client, model_id):
    ask = [{"role": "user", "content": "Where is the Zorblat festival held?"}]
    r = client.chat.completions.create(model=model_id, messages=ask, max_tokens=24, temperature=0)
    text = r.choices[0].message.content
    assert r.object == "chat.completion" and r.choices[0].finish_reason in ("stop", "length")
    assert text.strip() and r.usage.completion_tokens <= 24
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    # retrieval: the passage is in the prompt (many more prompt tokens than the question) and cited
    sources = r.model_extra["sources"]
    assert sources[0]["title"] == "quenmoor" and "Zorblat" in sources[0]["text"]
    assert r.usage.prompt_tokens > 40
    assert "Quenmoor" in text  # the answer comes from the passage: the model cannot know this made-up town

    chunks = list(client.chat.completions.create(model=model_id, messages=ask, max_tokens=24, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[0].model_extra["sources"] == sources
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == text  # greedy: the same reply streamed or not
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == [r.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == r.usage.completion_tokens


def test_completions_stop_max_tokens_and_seed(client, model_id):
    r = client.completions.create(model=model_id, prompt=COUNT, max_tokens=30, temperature=0, stop=[" 9"])
    assert r.choices[0].text == " 7, 8," and r.choices[0].finish_reason == "stop"
    r = client.completions.create(model=model_id, prompt=COUNT, max_tokens=3, temperature=0)
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 3
    pieces = [c.choices[0].text for c in client.completions.create(model=model_id, prompt=COUNT, max_tokens=12,
                                                                   temperature=0, stop=" 10", stream=True)]
    assert "".join(pieces) == " 7, 8, 9," and len(pieces) > 1
    story = dict(model=model_id, prompt="Once upon a time", max_tokens=16, temperature=1.0, top_p=0.9)
    a, b = (client.completions.create(**story, seed=7).choices[0].text for _ in range(2))
    c = client.completions.create(**story, seed=8).choices[0].text
    assert a == b and a != c


def test_openai_client_errors(client, model_id):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert e.value.body["code"] == "model_not_found"
    ctx = client.models.list().data[0].model_extra["context_length"]
    with pytest.raises(openai.BadRequestError) as e:  # a prompt 10x the context
        client.completions.create(model=model_id, prompt="hello " * (10 * ctx), max_tokens=4)
    err = e.value.body
    assert err["code"] == "context_length_exceeded" and err["param"] == "prompt"
    n = int(re.search(r"resulted in (\d+) tokens", err["message"]).group(1))
    assert f"context length is {ctx} tokens" in err["message"] and n >= 10 * ctx
    with pytest.raises(openai.BadRequestError) as e:  # fits alone, not with the completion asked for
        client.chat.completions.create(model=model_id, messages=[{"role": "user", "content": "hi"}],
                                       max_tokens=ctx)
    assert e.value.body["code"] == "context_length_exceeded" and e.value.body["param"] == "max_tokens"
    assert "in the completion" in e.value.body["message"]


@pytest.mark.parametrize("body, param, code", [
    (b'{"messages": [{"role": "user", "content": "hi"}', None, "invalid_json"),
    (b'{"model": "x"}', "messages", "missing_required_parameter"),
    (b'{"messages": []}', "messages", "invalid_value"),
    (b'{"messages": [{"role": "robot", "content": "hi"}]}', "messages.0.role", "invalid_value"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}', "max_tokens", "invalid_value"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": -5}', "max_tokens", "invalid_value"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 100000000}', "max_tokens",
     "context_length_exceeded"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "n": 2}', "n", "invalid_value"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "temperature": 3}', "temperature", "invalid_value"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "stop": 5}', "stop", "invalid_value"),
    (b'[1, 2]', None, "invalid_body"),
])
def test_bad_requests_get_400_in_openai_shape(server, body, param, code):
    r = httpx.post(f"{server.base_url}/chat/completions", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["type"] == "invalid_request_error"
    assert err["param"] == param and err["code"] == code and err["message"]


def test_unknown_route_and_metrics(server):
    r = httpx.get(f"{server.url}/v2/nothing")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    text = httpx.get(f"{server.url}/metrics").text
    for name in ("primer_requests_total", "primer_completion_tokens_total", "primer_queue_depth",
                 "primer_time_to_first_token_seconds_count", "primer_active_requests"):
        assert name in text
    assert 'primer_requests_total{route="/v1/chat/completions",status="400"}' in text


def test_a_request_joins_the_running_batch(server, model_id):
    """B arrives while A decodes and finishes while A is still streaming: it joined A's batch, not a queue behind it."""
    a_chunks: list[str] = []
    a_done_at: list[int] = []
    started = threading.Event()

    def run_a():
        with httpx.stream("POST", f"{server.base_url}/completions", timeout=300, json={
                "model": model_id, "prompt": COUNT, "max_tokens": 150, "temperature": 0, "stream": True}) as r:
            for line in r.iter_lines():
                if line.startswith("data: {"):
                    a_chunks.append(line)
                    if len(a_chunks) == 5:
                        started.set()
        a_done_at.append(len(a_chunks))

    t = threading.Thread(target=run_a)
    t.start()
    assert started.wait(120)
    r = httpx.post(f"{server.base_url}/completions", timeout=300,
                   json={"model": model_id, "prompt": "The sky is", "max_tokens": 4, "temperature": 0})
    b_done_at = len(a_chunks)
    t.join()
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 4
    assert a_done_at[0] > 100  # A really ran long (it kept counting)
    assert b_done_at < a_done_at[0] - 50  # B ended long before A: it decoded beside A


def test_client_disconnect_frees_its_slot(server, model_id):
    def cancelled() -> float:
        for line in httpx.get(f"{server.url}/metrics").text.splitlines():
            if line.startswith('primer_finished_requests_total{reason="cancelled"}'):
                return float(line.split()[-1])
        return 0.0

    _wait_idle(server)
    before = cancelled()
    with httpx.stream("POST", f"{server.base_url}/completions", timeout=300, json={
            "model": model_id, "prompt": COUNT, "max_tokens": 2000, "temperature": 0, "stream": True}) as r:
        got = 0
        for line in r.iter_lines():
            got += line.startswith("data: {")
            if got == 3:
                break  # leave mid-stream: the connection closes
    _wait_idle(server, timeout=30)  # 2000 tokens would take far longer: the request was dropped
    assert cancelled() == before + 1
    r = httpx.post(f"{server.base_url}/completions", timeout=300, json={"prompt": "Hi", "max_tokens": 2})
    assert r.status_code == 200


def test_200_requests_at_a_queue_of_8(server):
    """4 slots + 8 waiting: the rest get 429 with Retry-After at once; every request gets a documented answer."""

    async def fire():
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=0)
        async with httpx.AsyncClient(timeout=600, limits=limits) as c:
            return await asyncio.gather(*(c.post(f"{server.base_url}/completions",
                                                 json={"prompt": f"Fact {i}:", "max_tokens": 2, "temperature": 0})
                                          for i in range(200)))

    _wait_idle(server)
    rs = asyncio.run(fire())
    codes = [r.status_code for r in rs]
    assert set(codes) <= {200, 429}, codes
    assert codes.count(200) >= 12 and codes.count(429) > 0
    for r in rs:
        if r.status_code == 429:
            assert r.headers["retry-after"] == "1" and r.json()["error"]["code"] == "queue_full"
        else:
            assert r.json()["usage"]["completion_tokens"] >= 1
    _wait_idle(server)
    assert httpx.post(f"{server.base_url}/completions", json={"prompt": "Hi", "max_tokens": 2}).status_code == 200


def test_chat_page_in_chromium(server):
    """The page at / in a real browser: a question streams an answer with its sources; Stop ends a reply."""
    sync_api = pytest.importorskip("playwright.sync_api")
    from report_fixture import chromium

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(server.url + "/")
            page.wait_for_function("document.getElementById('model').textContent.includes('retrieval on')")
            page.fill("#temperature", "0")  # greedy: the same answer as the openai-client test's
            page.fill("#input", "Where is the Zorblat festival held?")
            page.press("#input", "Enter")
            answer = page.locator(".msg.assistant").last
            page.wait_for_selector(".msg.assistant .meta", timeout=180_000)
            assert answer.locator(".meta").get_attribute("data-finish") in ("stop", "length")
            assert "Quenmoor" in answer.locator(".text").inner_text()
            assert "quenmoor" in answer.locator(".sources li").first.inner_text()

            # a second turn (multi-turn: the history goes with it); stop it while it streams
            page.fill("#input", "Now count from one to five hundred, one number per line.")
            page.press("#input", "Enter")
            page.wait_for_function("document.querySelectorAll('.msg.assistant')[1]"
                                   ".querySelector('.text').textContent.length > 5", timeout=120_000)
            page.click("#stop")
            page.wait_for_selector(".msg.assistant:nth-of-type(4) .meta", timeout=30_000)
            assert page.locator(".msg.assistant .meta").nth(1).get_attribute("data-finish") == "stopped"
            assert not errors, errors
        finally:
            browser.close()
    _wait_idle(server, timeout=30)  # the stopped reply's request was cancelled on the server


def test_api_key_and_sigterm_drain(bundled_gguf, tmp_path):
    """With --api-key, /v1 needs it; SIGTERM lets a running stream finish, then the process exits 0."""
    with PrimerServer(str(bundled_gguf), "--api-key", "s3cret", "--max-batch", "2", log=tmp_path / "log") as s:
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=s.base_url, api_key="wrong", max_retries=0).models.list()
        c = openai.OpenAI(base_url=s.base_url, api_key="s3cret", max_retries=0, timeout=300)
        stream = c.completions.create(model=c.models.list().data[0].id, prompt=COUNT, max_tokens=40,
                                      temperature=0, stream=True)
        pieces = [next(stream).choices[0].text]
        s.proc.send_signal(signal.SIGTERM)
        for chunk in stream:
            pieces.append(chunk.choices[0].text)
        assert chunk.choices[0].finish_reason == "length" and "".join(pieces).startswith(" 7, 8, 9,")
        assert s.proc.wait(timeout=60) == 0


def test_a_port_in_use_is_a_clear_error(server):
    """A second server on a taken port says so and exits 2 (the model loads first: ~5 s)."""
    r = subprocess.run([sys.executable, "-m", "primer", "serve", "bundled", "--port", str(server.port)],
                       env=server.env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "address already in use" in r.stderr and f"could not start on 127.0.0.1:{server.port}" in r.stderr
    assert _in_flight(server) == 0  # the first server serves on
