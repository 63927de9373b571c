#!/usr/bin/env python3
"""``edge-rt serve`` vs llama-cpp-python's OpenAI server on the same GGUF, the same load and threads.

Both servers run as child processes on loopback. One *run* is a load: ``--clients`` concurrent
clients, each sending ``--requests`` streamed ``/v1/chat/completions`` requests one after another
(greedy, ``--max-tokens``, a different question per request). Runs alternate A B A B (``--runs``
each, >= 5 for the protocol) after one warm-up run per server. Per run:

* requests/s = requests / wall time of the run;
* time to first token (TTFT) = request sent -> first streamed content, p50 and p99 over the run;
* tokens/s per client = the client's completion tokens / its wall time, median over clients
  (completion tokens: the streamed text re-tokenized with the model's tokenizer; both servers are
  greedy on the same model, so they count the same text the same way);
* peak RSS = the server process's VmHWM after all its runs.

``repeat_penalty`` is sent as 1.0 (off): llama-cpp-python's server defaults it to 1.1, edge_rt to 1.0.

Medians over runs with min-max; ratios edge_rt / llama-cpp-python. Both servers run one generation
at a time (edge_rt's queue; llama-cpp-python's server holds a lock around its one model), so requests/s
is bounded by one sequence's decode speed in both. llama-cpp-python's server by default lets a new
request interrupt the one streaming (``interrupt_requests``), which under concurrent clients returns
mostly empty replies; it runs with ``--interrupt_requests False`` so both finish every request. The
completion tokens of each server are printed: greedy on the same model, they should match.

    python benchmarks/serve.py --model ~/.cache/edge_rt/test-data/models/SmolLM2-135M-Instruct.Q4_1.gguf

Needs llama-cpp-python's server extra and edge_rt's server (``pip install ".[serve-bench]"``).
Writes benchmarks/out/serve.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = [
    "What is the capital of France?", "Name three prime numbers.", "What does HTTP stand for?",
    "How many legs does a spider have?", "Write a haiku about the sea.", "What is a hash map?",
    "Translate 'good morning' into Spanish.", "Why is the sky blue?",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(name: str, model: Path, threads: int, n_ctx: int) -> Dict[str, Any]:
    port = free_port()
    if name == "edge_rt":
        cmd = [sys.executable, "-m", "edge_rt", "serve", str(model), "--port", str(port), "-t", str(threads),
               "--ctx", str(n_ctx), "--model-id", "model", "--max-queue", "1024"]
    else:
        # llama_cpp.server as the peer, opened as edge_rt/llama_cpp_peer.py opens llama.cpp (no AMX buffers on an
        # AMX build, where they segfault)
        cmd = [sys.executable, "-c", "import sys; from edge_rt.llama_cpp_peer import run_module; "
               "run_module('llama_cpp.server', sys.argv[1:])", "--model", str(model), "--port", str(port),
               "--n_threads", str(threads), "--n_threads_batch", str(threads), "--n_ctx", str(n_ctx),
               "--model_alias", "model", "--verbose", "False", "--interrupt_requests", "False"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    import httpx

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/v1/models", timeout=2).status_code == 200:
                return {"name": name, "proc": proc, "url": url}
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"{name} server exited with {proc.returncode}: {' '.join(cmd)}")
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"{name} server did not start")


def peak_rss(pid: int) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", text).group(1)) * 1024


async def one_load(url: str, clients: int, requests: int, max_tokens: int, count_tokens) -> Dict[str, Any]:
    import httpx

    ttft: List[float] = []
    client_tok_s: List[float] = []
    n_tokens: List[int] = []

    async def client(c: int, http: "httpx.AsyncClient") -> None:
        tokens, t_client = 0, time.monotonic()
        for i in range(requests):
            question = QUESTIONS[(c * requests + i) % len(QUESTIONS)]
            body = {"model": "model", "messages": [{"role": "user", "content": question}], "stream": True,
                    "max_tokens": max_tokens, "temperature": 0.0, "repeat_penalty": 1.0}
            t0, first, text = time.monotonic(), None, []
            async with http.stream("POST", url + "/v1/chat/completions", json=body) as r:
                r.raise_for_status()
                async for line in r.aiter_lines():
                    if not line.startswith("data: {"):
                        continue
                    delta = json.loads(line[6:])["choices"][0].get("delta", {}).get("content")
                    if delta:
                        if first is None:
                            first = time.monotonic() - t0
                        text.append(delta)
            ttft.append(first if first is not None else time.monotonic() - t0)
            tokens += count_tokens("".join(text))
        client_tok_s.append(tokens / (time.monotonic() - t_client))
        n_tokens.append(tokens)

    t0 = time.monotonic()
    async with httpx.AsyncClient(timeout=httpx.Timeout(600.0)) as http:
        await asyncio.gather(*[client(c, http) for c in range(clients)])
    wall = time.monotonic() - t0
    q = statistics.quantiles(ttft, n=100) if len(ttft) > 1 else [ttft[0]] * 99
    return {"rps": clients * requests / wall, "ttft_p50": q[49], "ttft_p99": q[98],
            "tok_s_client": statistics.median(client_tok_s), "wall_s": wall, "tokens": sum(n_tokens)}


def summary(values: List[float]) -> str:
    return f"{statistics.median(values):.3g} [{min(values):.3g}-{max(values):.3g}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, required=True, help="GGUF chat model (e.g. SmolLM2-135M-Instruct Q4_1)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--ctx", type=int, default=1024)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--requests", type=int, default=2, help="requests per client per run")
    ap.add_argument("--max-tokens", type=int, default=24)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()

    sys.path.insert(0, str(ROOT))
    from edge_rt.tokenizer import Tokenizer

    tok = Tokenizer.from_gguf(args.model)

    def count_tokens(text: str) -> int:
        return len(tok.tokenize(text, add_special=False))

    servers = [start(name, args.model, args.threads, args.ctx) for name in ("edge_rt", "llama_cpp")]
    results: Dict[str, List[Dict[str, Any]]] = {s["name"]: [] for s in servers}
    try:
        for s in servers:  # warm-up
            asyncio.run(one_load(s["url"], args.clients, 1, args.max_tokens, count_tokens))
        for run in range(args.runs):
            for s in servers:
                r = asyncio.run(one_load(s["url"], args.clients, args.requests, args.max_tokens, count_tokens))
                results[s["name"]].append(r)
                print(f"run {run + 1} {s['name']}: {r['rps']:.3f} req/s, TTFT p50 {r['ttft_p50']:.3f} s, "
                      f"{r['tok_s_client']:.2f} tok/s per client, {r['tokens']} tokens", file=sys.stderr)
        rss = {s["name"]: peak_rss(s["proc"].pid) for s in servers}
    finally:
        for s in servers:
            s["proc"].terminate()
            s["proc"].wait(30)

    print(f"\n{args.model.name}, {args.threads} thread(s), {args.clients} clients x {args.requests} streamed chat "
          f"requests per run, {args.max_tokens} greedy tokens max, {args.runs} interleaved runs each; "
          "median [min-max]")
    from edge_rt.llama_cpp_peer import peer_note

    print(f"Peer: {peer_note()}.\n")
    print("| server | requests/s | TTFT p50 s | TTFT p99 s | tok/s per client | peak RSS MiB |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, runs in results.items():
        cols = [summary([r[k] for r in runs]) for k in ("rps", "ttft_p50", "ttft_p99", "tok_s_client")]
        print(f"| {name} | {' | '.join(cols)} | {rss[name] / 2**20:.0f} |")
    med = {n: {k: statistics.median(r[k] for r in runs) for k in ("rps", "ttft_p50", "ttft_p99", "tok_s_client")}
           for n, runs in results.items()}
    print(f"| edge_rt / llama_cpp | {med['edge_rt']['rps'] / med['llama_cpp']['rps']:.2f}x | "
          f"{med['edge_rt']['ttft_p50'] / med['llama_cpp']['ttft_p50']:.2f}x | "
          f"{med['edge_rt']['ttft_p99'] / med['llama_cpp']['ttft_p99']:.2f}x | "
          f"{med['edge_rt']['tok_s_client'] / med['llama_cpp']['tok_s_client']:.2f}x | "
          f"{rss['edge_rt'] / rss['llama_cpp']:.2f}x |")
    out = ROOT / "benchmarks" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "serve.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                "runs": results, "peak_rss": rss}, indent=2))


if __name__ == "__main__":
    main()
