"""Server counters and their Prometheus text exposition (``GET /metrics``).

Counters are updated by the generation worker (one thread) and by request handlers (the event loop);
each update is a few integer/float additions under one lock. Quantiles (time to first token, tokens/s)
are computed over the most recent :data:`WINDOW` requests.
"""

from __future__ import annotations

import collections
import os
import threading
from typing import Any, Deque, Dict, List, Optional

__all__ = ["ServerStats", "WINDOW"]

WINDOW = 1024


def _quantile(values: List[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def _peak_rss() -> Optional[int]:
    """The process's peak resident set (VmHWM) in bytes, where /proc has it."""
    try:
        with open(f"/proc/{os.getpid()}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


class ServerStats:
    """What /metrics reports. ``job_finished`` is the generation worker's hook."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: Dict[tuple, int] = collections.Counter()  # (endpoint, status code) -> count
        self.outcomes: Dict[str, int] = collections.Counter()  # ok / cancelled / error
        self.prompt_tokens = 0
        self.generated_tokens = 0
        self.prefill_seconds = 0.0
        self.decode_seconds = 0.0
        self.sse_bytes = 0
        self._ttft: Deque[float] = collections.deque(maxlen=WINDOW)
        self._tok_s: Deque[float] = collections.deque(maxlen=WINDOW)

    def request_done(self, endpoint: str, status: int) -> None:
        with self._lock:
            self.requests[(endpoint, status)] += 1

    def sent(self, n_bytes: int) -> None:
        with self._lock:
            self.sse_bytes += n_bytes

    def job_finished(self, job: Any, result: Any, outcome: str) -> None:
        with self._lock:
            self.outcomes[outcome] += 1
            if result is None:
                return
            self.prompt_tokens += result.n_prompt - result.n_cached
            self.generated_tokens += result.n_generated
            self.prefill_seconds += result.prefill_s
            self.decode_seconds += result.decode_s
            if job.first_piece is not None:
                self._ttft.append(job.first_piece - job.arrived)
            if result.decode_tok_s > 0:
                self._tok_s.append(result.decode_tok_s)

    def ttft_quantiles(self) -> Dict[str, Optional[float]]:
        """Time to first token p50/p99 in seconds (None before the first request) and the count."""
        with self._lock:
            values = list(self._ttft)
        if not values:
            return {"p50": None, "p99": None, "count": 0}
        return {"p50": _quantile(values, 0.5), "p99": _quantile(values, 0.99), "count": len(values)}

    def prometheus(self, queue_depth: int, busy: bool, telemetry: Dict[str, Any]) -> str:
        """The exposition text (format 0.0.4)."""
        lines: List[str] = []

        def metric(name: str, kind: str, help_text: str, samples: List[tuple]) -> None:
            lines.append(f"# HELP edge_rt_{name} {help_text}")
            lines.append(f"# TYPE edge_rt_{name} {kind}")
            for labels, value in samples:
                label = "{" + ",".join(f'{k}="{v}"' for k, v in labels) + "}" if labels else ""
                lines.append(f"edge_rt_{name}{label} {value}")

        with self._lock:
            metric("requests_total", "counter", "HTTP requests by endpoint and status code.",
                   [((("endpoint", e), ("code", c)), n) for (e, c), n in sorted(self.requests.items())])
            metric("generations_total", "counter", "Generations by outcome (ok, cancelled by the client, error).",
                   [((("outcome", o),), n) for o, n in sorted(self.outcomes.items())])
            metric("prompt_tokens_total", "counter", "Prompt tokens evaluated (KV cache reuse excluded).",
                   [((), self.prompt_tokens)])
            metric("generated_tokens_total", "counter", "Tokens generated.", [((), self.generated_tokens)])
            metric("prefill_seconds_total", "counter", "Seconds spent evaluating prompts.",
                   [((), f"{self.prefill_seconds:.6f}")])
            metric("decode_seconds_total", "counter", "Seconds spent generating tokens.",
                   [((), f"{self.decode_seconds:.6f}")])
            metric("sse_bytes_total", "counter", "Bytes of server-sent events written to clients.",
                   [((), self.sse_bytes)])
            ttft, tok_s = list(self._ttft), list(self._tok_s)
        metric("time_to_first_token_seconds", "summary",
               f"Request arrival to first generated text (queue wait included), last {WINDOW} requests.",
               [((("quantile", q),), f"{_quantile(ttft, q):.6f}") for q in (0.5, 0.9, 0.99)])
        metric("decode_tokens_per_second", "summary", f"Decode speed per request, last {WINDOW} requests.",
               [((("quantile", q),), f"{_quantile(tok_s, q):.3f}") for q in (0.5, 0.9, 0.99)])
        metric("queue_depth", "gauge", "Requests waiting for the model.", [((), queue_depth)])
        metric("busy", "gauge", "1 while a generation runs.", [((), int(busy))])
        mem = telemetry.get("memory") or {}
        if mem:
            metric("memory_bytes", "gauge", "Engine memory by class (edge_rt.Model.memory_report).",
                   [((("class", k),), v) for k, v in mem["classes"].items()] + [((("class", "total"),), mem["total"])])
            metric("memory_budget_bytes", "gauge", "The --mem-budget (0: none).", [((), mem["budget"])])
        stream = telemetry.get("stream") or {}
        if stream:
            metric("weights_streamed_bytes_total", "counter", "Weight bytes read from the model file while "
                   "generating (layers streamed under --mem-budget).", [((), stream["bytes_read"])])
            metric("stream_stall_seconds_total", "counter", "Compute time spent waiting for weight reads.",
                   [((), f"{stream['stall_seconds']:.6f}")])
        experts = telemetry.get("experts")
        if experts:
            metric("expert_cache_hit_rate", "gauge", "MoE expert cache hits / uses since start.",
                   [((), f"{experts['hit_rate'] or 0.0:.6f}")])
        peak = _peak_rss()
        if peak is not None:
            metric("process_peak_resident_bytes", "gauge", "Peak resident set of the server process (VmHWM).",
                   [((), peak)])
        return "\n".join(lines) + "\n"
