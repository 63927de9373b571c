"""``edge-rt serve`` as a real process on loopback: the official ``openai`` client unchanged (base_url
only), OpenAI-shaped errors, the API key, the queue limit, /metrics and /health, a bounded load test
under --mem-budget, and faults (a client that disconnects, SIGINT mid-generation, the model file
truncated while serving, hostile templates in the GGUF). The embedded model (7 MB) serves, so replies
are Python-like noise; what is checked is the protocol and that every reply is the engine's own."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import statistics
import threading
import time

import pytest

import edge_rt

from helpers import fake_chat_extra_env
from server_process import DEFAULT_MODEL, ServerProcess

openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")
pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

MODEL_ID = "default"


@pytest.fixture(scope="module")
def srv():
    with ServerProcess() as s:
        yield s


def _client(srv, key="none"):
    return openai.OpenAI(base_url=srv.url + "/v1", api_key=key, max_retries=0, timeout=60)


def _metric(text: str, name: str, labels: str = "") -> float:
    m = re.search(rf"^edge_rt_{name}{re.escape(labels)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def test_openai_client_models_chat_and_completions(srv):
    client = _client(srv)
    assert [m.id for m in client.models.list()] == [MODEL_ID]
    msgs = [{"role": "system", "content": "You write Python."}, {"role": "user", "content": "def add(a, b):"}]
    chat = client.chat.completions.create(model=MODEL_ID, messages=msgs, max_tokens=12, seed=3)
    assert chat.object == "chat.completion" and chat.choices[0].message.role == "assistant"
    assert chat.choices[0].finish_reason in ("stop", "length")
    assert chat.usage.completion_tokens <= 12 and chat.usage.prompt_tokens > 0
    streamed = client.chat.completions.create(model=MODEL_ID, messages=msgs, max_tokens=12, seed=3, stream=True,
                                              stream_options={"include_usage": True})
    deltas, reasons, usage = [], [], None
    for ch in streamed:
        if ch.choices:
            deltas.append(ch.choices[0].delta.content or "")
            reasons.append(ch.choices[0].finish_reason)
        else:
            usage = ch.usage
    assert "".join(deltas) == chat.choices[0].message.content  # same seed: the same reply, streamed or not
    assert reasons[-1] == chat.choices[0].finish_reason and usage.completion_tokens == chat.usage.completion_tokens

    comp = client.completions.create(model=MODEL_ID, prompt="import os\n", max_tokens=10, temperature=0)
    assert comp.object == "text_completion" and comp.usage.completion_tokens <= 10
    with edge_rt.load(DEFAULT_MODEL, threads=1) as m:  # the server's text is the engine's greedy text
        assert comp.choices[0].text == m.generate("import os\n", max_tokens=10, temperature=0)
    pieces = [c.choices[0].text for c in client.completions.create(model=MODEL_ID, prompt="import os\n",
                                                                    max_tokens=10, temperature=0, stream=True)]
    assert "".join(pieces) == comp.choices[0].text


@pytest.mark.parametrize("path, body, status, param", [
    ("/v1/chat/completions", b"{not json", 400, None),
    ("/v1/chat/completions", b"[1, 2]", 400, None),
    ("/v1/chat/completions", {"model": "gpt-4", "messages": [{"role": "user", "content": "x"}]}, 400, "model"),
    ("/v1/chat/completions", {"messages": [{"role": "wizard", "content": "x"}]}, 400, "messages"),
    ("/v1/chat/completions", {"messages": "hello"}, 400, "messages"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "temperature": "hot"}, 400,
     "temperature"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "top_p": 7}, 400, "top_p"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "max_tokens": -1}, 400, "max_tokens"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "n": 2}, 400, "n"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x" * 4000}]}, 400, "messages"),
    ("/v1/completions", {"prompt": 5}, 400, "prompt"),
    ("/v1/completions", {"prompt": "x" * 4000, "stream": True}, 400, "prompt"),
    ("/v1/completions", {"prompt": "x", "stop": [1]}, 400, "stop"),
    ("/v1/nothing", {}, 404, None),
    ("/v1/completions", b'{"prompt": "' + b"x" * (9 * 2**20) + b'"}', 413, None),
])
def test_errors_are_openai_shaped_and_name_the_field(srv, path, body, status, param):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = httpx.post(srv.url + path, content=content, headers={"Content-Type": "application/json"}, timeout=30)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["param"] == param and err["message"] and err["type"]


def test_metrics_and_health(srv):
    _client(srv).completions.create(model=MODEL_ID, prompt="x = ", max_tokens=4)
    health = httpx.get(srv.url + "/health").json()
    assert health["status"] == "ok" and health["model"] == MODEL_ID and health["memory"]["total"] > 0
    text = httpx.get(srv.url + "/metrics").text
    for name in ("generated_tokens_total", "time_to_first_token_seconds", "decode_tokens_per_second",
                 "queue_depth", "memory_bytes", "weights_streamed_bytes_total", "sse_bytes_total",
                 "process_peak_resident_bytes"):
        assert f"# TYPE edge_rt_{name} " in text, name
    assert _metric(text, "generated_tokens_total") >= 1
    assert _metric(text, "memory_bytes", '{class="total"}') == health["memory"]["total"]


def test_api_key_is_required_on_the_api_but_not_on_health():
    with ServerProcess(DEFAULT_MODEL, "--api-key", "s3cret") as s:
        assert httpx.get(s.url + "/v1/models").status_code == 401
        r = httpx.get(s.url + "/v1/models", headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert httpx.get(s.url + "/metrics").status_code == 401
        assert httpx.get(s.url + "/health").status_code == 200
        with pytest.raises(openai.AuthenticationError):
            _client(s, "wrong").models.list()
        assert _client(s, "s3cret").completions.create(model=MODEL_ID, prompt="x", max_tokens=2).choices


def test_a_full_queue_answers_429_with_retry_after():
    async def burst(url):
        async with httpx.AsyncClient(timeout=60) as c:
            body = {"prompt": "def f():\n", "max_tokens": 200, "temperature": 0}
            return await asyncio.gather(*[c.post(url + "/v1/completions", json=body) for _ in range(8)])

    with ServerProcess(DEFAULT_MODEL, "--max-queue", "1", "--ctx", "256") as s:
        replies = asyncio.run(burst(s.url))
    codes = sorted(r.status_code for r in replies)
    assert codes.count(200) >= 1 and codes.count(429) >= 1 and set(codes) == {200, 429}, codes
    busy = [r for r in replies if r.status_code == 429]
    assert all(int(r.headers["Retry-After"]) >= 1 and r.json()["error"]["code"] == "queue_full" for r in busy)


def _peak_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))


class _MetricsSampler:
    """Reads /metrics every ``period`` seconds on a thread while a load runs: the highest value each memory
    class and the queue depth reached (a reading taken only after the load would miss a transient)."""

    def __init__(self, url: str, period: float = 0.05) -> None:
        self.url, self.period = url, period
        self.memory: dict = {}
        self.queue_depth = 0.0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=10) as http:
            while not self._stop.is_set():
                text = http.get(self.url + "/metrics").text
                for cls, value in re.findall(r'^edge_rt_memory_bytes\{class="([^"]+)"\} (\S+)$', text, re.M):
                    self.memory[cls] = max(self.memory.get(cls, 0.0), float(value))
                self.queue_depth = max(self.queue_depth, _metric(text, "queue_depth"))
                self.samples += 1
                self._stop.wait(self.period)

    def __enter__(self) -> "_MetricsSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(15)


def test_load_32_clients_x_4_requests_under_a_memory_budget():
    """Every request bounded in time; every reply complete (finish_reason, usage) and its own request's:
    greedy replies equal the engine's for that request's prompt (completions, streamed and not, and one
    request in four a chat). Memory classes within the budget at every reading taken during the load,
    peak RSS within budget + 64 MiB; the queue visibly filled."""
    budget = 10_000_000
    clients, per_client, n_tokens = 32, 4, 8
    prompts = {(c, i): f"# worker {c} task {i}\ndef job_{c}_{i}(" for c in range(clients) for i in range(per_client)}
    is_chat = {k: k[1] == 2 for k in prompts}
    with edge_rt.load(DEFAULT_MODEL, threads=1) as m:
        expected = {k: (m.chat([{"role": "user", "content": p}], max_tokens=n_tokens, temperature=0) if is_chat[k]
                        else m.generate(p, max_tokens=n_tokens, temperature=0)) for k, p in prompts.items()}

    async def client(c, http, url, latencies, texts):
        for i in range(per_client):
            t0 = time.monotonic()
            body = {"model": MODEL_ID, "max_tokens": n_tokens, "temperature": 0, "stream": i % 2 == 1}
            if is_chat[(c, i)]:
                path, body["messages"] = "/v1/chat/completions", [{"role": "user", "content": prompts[(c, i)]}]
            else:
                path, body["prompt"] = "/v1/completions", prompts[(c, i)]
            if body["stream"]:
                parts, reason = [], None
                async with http.stream("POST", url + path, json=body) as r:
                    assert r.status_code == 200
                    async for line in r.aiter_lines():
                        if line.startswith("data: {"):
                            choice = json.loads(line[6:])["choices"][0]
                            parts.append(choice["delta"].get("content", "") if is_chat[(c, i)] else choice["text"])
                            reason = choice["finish_reason"] or reason
                    assert line == "data: [DONE]" or parts
                texts[(c, i)] = ("".join(parts), reason)
            else:
                r = await http.post(url + path, json=body)
                assert r.status_code == 200, r.text
                choice = r.json()["choices"][0]
                text = choice["message"]["content"] if is_chat[(c, i)] else choice["text"]
                texts[(c, i)] = (text, choice["finish_reason"])
            latencies.append(time.monotonic() - t0)

    async def run(url):
        latencies, texts = [], {}
        async with httpx.AsyncClient(timeout=httpx.Timeout(120.0)) as http:
            await asyncio.wait_for(asyncio.gather(*[client(c, http, url, latencies, texts) for c in range(clients)]),
                                   timeout=300)
        return latencies, texts

    with ServerProcess(DEFAULT_MODEL, "--mem-budget", str(budget), "--max-queue", "64") as s:
        with _MetricsSampler(s.url) as sampled:
            latencies, texts = asyncio.run(run(s.url))
        metrics = httpx.get(s.url + "/metrics").text
        rss = _peak_rss(s.proc.pid)
    assert len(texts) == clients * per_client
    for key, (text, reason) in texts.items():
        assert reason in ("stop", "length"), key
        assert text == expected[key], key
    assert sampled.samples >= 10 and "total" in sampled.memory, sampled.samples
    assert all(v <= budget for v in sampled.memory.values()), sampled.memory
    assert sampled.queue_depth >= 1  # 32 clients, one model: requests waited, and the gauge said so
    assert _metric(metrics, "memory_budget_bytes") == budget
    assert _metric(metrics, "weights_streamed_bytes_total") > 0  # the budget made layers stream
    assert rss <= budget + 64 * 2**20, f"peak RSS {rss / 2**20:.1f} MiB"
    q = statistics.quantiles(latencies, n=100)
    ttft = [_metric(metrics, "time_to_first_token_seconds", '{quantile="%s"}' % p) for p in ("0.5", "0.99")]
    print(f"\n{len(latencies)} requests: latency p50 {q[49]:.3f} s, p99 {q[98]:.3f} s; TTFT p50 {ttft[0]:.3f} s, "
          f"p99 {ttft[1]:.3f} s; peak RSS {rss / 2**20:.1f} MiB (budget {budget / 2**20:.1f} MiB); highest "
          f"memory classes during the load {sampled.memory} over {sampled.samples} readings")


def _wait_for(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_a_client_that_disconnects_cancels_its_generation():
    # A long context and a streaming budget keep one generation running for seconds.
    with ServerProcess(DEFAULT_MODEL, "--ctx", "2048", "--mem-budget", "16MB") as s:
        def cancelled():
            return _metric(httpx.get(s.url + "/metrics").text, "generations_total", '{outcome="cancelled"}')

        body = {"prompt": "class A:\n", "max_tokens": 2000, "stream": True, "temperature": 1.0, "seed": 1}
        with httpx.stream("POST", s.url + "/v1/completions", json=body, timeout=60) as r:
            seen = 0
            for line in r.iter_lines():
                seen += line.startswith("data: {")
                if seen == 3:
                    # meanwhile a non-streaming client waits in the queue behind it, then gives up
                    with pytest.raises(httpx.ReadTimeout):
                        httpx.post(s.url + "/v1/completions", json={**body, "stream": False}, timeout=0.5)
                    break  # leaving the block closes the streaming connection mid-stream
        assert _wait_for(lambda: cancelled() == 2)  # the running one stopped, the queued one never ran
        assert _metric(httpx.get(s.url + "/metrics").text, "generated_tokens_total") < 2000
        with pytest.raises(httpx.ReadTimeout):  # a non-streaming client that gives up while generating
            httpx.post(s.url + "/v1/completions", json={**body, "stream": False}, timeout=0.5)
        assert _wait_for(lambda: cancelled() == 3)
        t0 = time.monotonic()  # the worker is free again at once
        assert _client(s).completions.create(model=MODEL_ID, prompt="x", max_tokens=2).choices
        assert time.monotonic() - t0 < 10
        s.send_signal(signal.SIGTERM)  # no abandoned request holds the drain
        assert s.wait(10) == 0, s.output


def test_sigint_mid_generation_finishes_the_reply_and_exits_cleanly():
    with ServerProcess(DEFAULT_MODEL, "--ctx", "1024", "--mem-budget", "12MB") as s:
        body = {"prompt": "class A:\n", "max_tokens": 400, "stream": True, "temperature": 1.0, "seed": 1}
        events = []
        with httpx.stream("POST", s.url + "/v1/completions", json=body, timeout=60) as r:
            for line in r.iter_lines():
                if line.startswith("data: "):
                    events.append(line[6:])
                    if len(events) == 2:
                        s.send_signal(signal.SIGINT)
        assert events[-1] == "[DONE]"  # the running reply was drained, not cut
        assert json.loads(events[-2])["choices"][0]["finish_reason"] in ("stop", "length")
        assert s.wait(30) == 0, s.output
        assert "SIGINT" in s.output and "stopped" in s.output and "Traceback" not in s.output
        with pytest.raises(httpx.ConnectError):
            httpx.get(s.url + "/health", timeout=5)


def test_model_file_truncated_while_serving_fails_requests_by_name(tmp_path):
    model = tmp_path / "model.gguf"
    shutil.copyfile(DEFAULT_MODEL, model)
    with ServerProcess(model, "--mem-budget", "9MB", "--model-id", MODEL_ID) as s:
        client = _client(s)
        assert client.completions.create(model=MODEL_ID, prompt="x", max_tokens=4).choices
        os.truncate(model, model.stat().st_size // 3)
        r = httpx.post(s.url + "/v1/completions", json={"prompt": "import sys\n", "max_tokens": 8}, timeout=60)
        assert r.status_code == 500, r.text
        err = r.json()["error"]
        assert err["type"] in ("ModelIOError", "ModelFormatError") and "model.gguf" in err["message"], err
        assert httpx.get(s.url + "/health").json()["status"] == "ok"  # the server stays up
        assert s.proc.poll() is None


def test_model_file_truncated_mid_stream_ends_the_stream_with_a_named_error(tmp_path):
    """Headers are out when the file breaks under a streamed reply: the stream carries an OpenAI-shaped
    error event naming the file, then [DONE]; the server stays up and answers the next request by name."""
    model = tmp_path / "model.gguf"
    shutil.copyfile(DEFAULT_MODEL, model)
    with ServerProcess(model, "--mem-budget", "16MB", "--ctx", "2048", "--model-id", MODEL_ID) as s:
        body = {"prompt": "class A:\n", "max_tokens": 2000, "stream": True, "temperature": 1.0, "seed": 1}
        events = []
        with httpx.stream("POST", s.url + "/v1/completions", json=body, timeout=60) as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                if line.startswith("data: "):
                    events.append(line[6:])
                    if len(events) == 3:
                        os.truncate(model, model.stat().st_size // 3)
        assert events[-1] == "[DONE]"
        err = json.loads(events[-2])["error"]
        assert err["type"] in ("ModelIOError", "ModelFormatError") and "model.gguf" in err["message"], err
        assert len(events) < 2000  # it stopped at the failure, not after the whole reply
        assert httpx.get(s.url + "/health").json()["status"] == "ok"
        r = httpx.post(s.url + "/v1/completions", json={"prompt": "x", "max_tokens": 4}, timeout=60)
        assert r.status_code == 500 and r.json()["error"]["type"] in ("ModelIOError", "ModelFormatError")
        assert s.proc.poll() is None


def test_sigterm_drains_the_running_and_the_queued_requests_then_exits_cleanly():
    """Requests received before SIGTERM are answered in full (the running one and those waiting behind
    it), new connections are refused, and the exit status is 0."""
    with ServerProcess(DEFAULT_MODEL, "--ctx", "1024", "--mem-budget", "12MB") as s:
        queued = {}

        def wait_behind(i):
            r = httpx.post(s.url + "/v1/completions", json={"prompt": f"def f{i}(", "max_tokens": 6,
                                                             "temperature": 0}, timeout=120)
            queued[i] = r

        body = {"prompt": "class A:\n", "max_tokens": 400, "stream": True, "temperature": 1.0, "seed": 1}
        events, waiters = [], [threading.Thread(target=wait_behind, args=(i,)) for i in range(2)]
        with httpx.stream("POST", s.url + "/v1/completions", json=body, timeout=120) as r:
            for line in r.iter_lines():
                if line.startswith("data: "):
                    events.append(line[6:])
                    if len(events) == 2:
                        for w in waiters:
                            w.start()
                        assert _wait_for(lambda: _metric(httpx.get(s.url + "/metrics").text, "queue_depth") == 2)
                        s.send_signal(signal.SIGTERM)
        for w in waiters:
            w.join(120)
        assert events[-1] == "[DONE]"
        assert json.loads(events[-2])["choices"][0]["finish_reason"] in ("stop", "length")
        assert sorted(queued) == [0, 1]
        for r in queued.values():
            assert r.status_code == 200, r.text
            assert r.json()["choices"][0]["finish_reason"] in ("stop", "length")
        assert s.wait(60) == 0, s.output
        assert "Traceback" not in s.output
        with pytest.raises(httpx.ConnectError):
            httpx.get(s.url + "/health", timeout=5)


@pytest.mark.parametrize("template, message", [
    ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "sandbox"),
    ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", "longer than the limit"),
    ("{{ 'x' * 10000000000 }}", "output limit"),
])
def test_hostile_template_in_the_gguf_fails_chat_by_name_and_the_server_stays_up(synthetic_model, template,
                                                                                  message):
    path = synthetic_model(chat_template=template)
    with ServerProcess(path, "--model-id", MODEL_ID) as s:
        t0 = time.monotonic()
        r = httpx.post(s.url + "/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]},
                       timeout=60)
        assert r.status_code == 500 and r.json()["error"]["type"] == "ChatTemplateError", r.text
        assert message in r.json()["error"]["message"] and time.monotonic() - t0 < 10
        assert _client(s).completions.create(model=MODEL_ID, prompt="ab", max_tokens=2).choices
        assert httpx.get(s.url + "/health").json()["status"] == "ok"


def test_serve_without_a_model_serves_the_chat_extra_model(tmp_path):
    with ServerProcess(None, env=fake_chat_extra_env(tmp_path, DEFAULT_MODEL)) as s:
        assert [m["id"] for m in httpx.get(s.url + "/v1/models").json()["data"]] == ["SmolLM2-135M-Instruct.Q4_1"]
        assert httpx.get(s.url + "/health").json()["model"] == "SmolLM2-135M-Instruct.Q4_1"


def test_smollm2_through_the_server_answers_as_the_engine_does():
    import real_models

    name = "smollm2-135m-instruct-q4_1"
    path = real_models.model_path(name)
    if path is None:
        pytest.skip(real_models.unavailable_reason(name))
    msgs = [{"role": "user", "content": "What does HTTP stand for?"}]
    with ServerProcess(path, "--ctx", "512", "--model-id", "smollm2") as s:
        reply = _client(s).chat.completions.create(model="smollm2", messages=msgs, max_tokens=16, temperature=0)
    with edge_rt.load(path, threads=1, n_ctx=512) as m:
        assert reply.choices[0].message.content == m.chat(msgs, max_tokens=16, temperature=0)
    assert reply.choices[0].message.content.startswith("HTTP stands for")


def test_template_option_overrides_a_hostile_gguf_template(synthetic_model):
    path = synthetic_model(chat_template="{{ ''.__class__.__mro__[1].__subclasses__() }}")
    with ServerProcess(path, "--model-id", MODEL_ID, "--template", "chatml") as s:
        r = _client(s).chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": "hi"}],
                                               max_tokens=2)
        assert r.choices[0].finish_reason in ("stop", "length")
        assert r.usage.prompt_tokens > 0


def test_metrics_report_the_expert_cache_of_a_moe_model_under_a_budget():
    moe = DEFAULT_MODEL.parents[2] / "models" / "tiny-code-moe-f16.gguf"
    with ServerProcess(moe, "--mem-budget", "12MB", "--model-id", MODEL_ID) as s:
        assert _client(s).completions.create(model=MODEL_ID, prompt="import os\n", max_tokens=8).choices
        text = httpx.get(s.url + "/metrics").text
    assert 0.0 < _metric(text, "expert_cache_hit_rate") <= 1.0
    assert _metric(text, "memory_bytes", '{class="expert_cache"}') > 0
