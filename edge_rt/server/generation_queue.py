"""One worker thread that runs every generation of the server, one at a time, in arrival order.

A :class:`~edge_rt.model.Model` runs one generation at a time (its KV cache holds one sequence) and
the engine does not batch sequences, so the server serializes: requests wait in a bounded FIFO and the
worker streams each one's pieces back to the event loop that asked. The engine call releases the GIL,
so the event loop keeps serving (health, metrics, queueing, other streams' writes) while it computes.

Contract:
* :meth:`GenerationQueue.submit` is called from the event loop; it raises :class:`QueueFull` when
  ``max_queue`` requests are already waiting (the running one does not count).
* Each :class:`Job` receives, on its asyncio queue, ``("piece", str)`` events, then exactly one of
  ``("done", GenerationResult)`` or ``("error", Exception)``.
* Setting ``job.cancel`` (a client went away) stops its generation before the next token, or drops it
  from the queue unstarted.
* Everything that touches the engine (generation, memory and stream telemetry) runs on the worker
  thread; :attr:`GenerationQueue.telemetry` is the snapshot taken after each job, for ``/metrics``.
"""

from __future__ import annotations

import asyncio
import collections
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Deque, Dict, Iterator, Optional

from ..errors import EdgeRTError

__all__ = ["Job", "GenerationQueue", "QueueFull"]


class QueueFull(Exception):
    """Raised by :meth:`GenerationQueue.submit` when the wait queue is full."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"the server is busy: retry in about {retry_after_s} s")
        self.retry_after_s = retry_after_s


@dataclass
class Job:
    """One request: ``kind`` "chat" (``payload`` = messages) or "completion" (``payload`` = prompt
    text), ``params`` the keyword arguments of Model.chat_stream / Model.stream."""

    kind: str
    payload: Any
    params: Dict[str, Any]
    loop: asyncio.AbstractEventLoop
    events: "asyncio.Queue[tuple]" = field(default_factory=asyncio.Queue)
    cancel: threading.Event = field(default_factory=threading.Event)
    arrived: float = field(default_factory=time.monotonic)
    started: Optional[float] = None
    first_piece: Optional[float] = None


class GenerationQueue:
    """The worker and its FIFO; see the module docstring. ``stats`` (a :class:`ServerStats`-like
    object with ``job_finished(job, result, outcome)``) is told how each job ended."""

    def __init__(self, model: Any, max_queue: int, stats: Any) -> None:
        self._model = model
        self._max_queue = max_queue
        self._stats = stats
        self._jobs: "queue.Queue[Optional[Job]]" = queue.Queue()
        self._waiting = 0
        self._busy = False
        self._lock = threading.Lock()
        self._recent_s: Deque[float] = collections.deque(maxlen=32)  # durations of recent jobs
        self._thread = threading.Thread(target=self._run, name="edge-rt-generation", daemon=True)
        self.telemetry: Dict[str, Any] = {}
        self._snapshot()

    @property
    def depth(self) -> int:
        """Requests waiting (not counting the one generating)."""
        return self._waiting

    @property
    def busy(self) -> bool:
        """True while a generation runs."""
        return self._busy

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float) -> None:
        """Cancel waiting jobs, let the running one finish (or be cancelled), stop the worker."""
        with self._lock:
            pending = []
            while True:
                try:
                    pending.append(self._jobs.get_nowait())
                except queue.Empty:
                    break
        for job in pending:
            if job is not None:
                job.cancel.set()
                self._emit(job, ("error", EdgeRTError("[serve] the server is shutting down")))
        self._jobs.put(None)
        self._thread.join(timeout)

    def submit(self, job: Job) -> None:
        with self._lock:
            if self._waiting >= self._max_queue:
                typical = sorted(self._recent_s)[len(self._recent_s) // 2] if self._recent_s else 1.0
                raise QueueFull(max(1, int(typical * (self._waiting + 1) + 0.999)))
            self._waiting += 1
            self._jobs.put(job)

    # ---- worker thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            with self._lock:
                self._waiting -= 1
            if job.cancel.is_set():  # its client left while it waited: answer (nobody reads it) and skip
                self._stats.job_finished(job, None, "cancelled")
                self._emit(job, ("error", EdgeRTError("[serve] the client disconnected before its turn")))
                continue
            self._busy = True
            try:
                self._execute(job)
            finally:
                self._busy = False
                self._recent_s.append(time.monotonic() - (job.started or job.arrived))
                self._snapshot()

    def _execute(self, job: Job) -> None:
        job.started = time.monotonic()
        pieces: Optional[Iterator[str]] = None
        try:
            if job.kind == "chat":
                pieces = self._model.chat_stream(job.payload, **job.params)
            else:
                pieces = self._model.stream(job.payload, **job.params)
            for piece in pieces:
                if job.first_piece is None:
                    job.first_piece = time.monotonic()
                self._emit(job, ("piece", piece))
                if job.cancel.is_set():
                    break
            pieces.close()  # records the finish reason ("aborted" when cancelled)
            result = self._model.last_result
            outcome = "cancelled" if job.cancel.is_set() else "ok"
            self._stats.job_finished(job, result, outcome)
            self._emit(job, ("done", result))
        except Exception as e:  # every failure goes to its own request; the worker serves the next
            if pieces is not None:
                pieces.close()
            self._stats.job_finished(job, self._model.last_result if pieces is not None else None, "error")
            self._emit(job, ("error", e))

    def _emit(self, job: Job, event: tuple) -> None:
        try:
            job.loop.call_soon_threadsafe(job.events.put_nowait, event)
        except RuntimeError:  # the event loop is closed: nobody is listening any more
            pass

    def _snapshot(self) -> None:
        """Engine telemetry for /metrics, read here because only this thread may touch the engine."""
        m = self._model
        try:
            t: Dict[str, Any] = {"memory": m.memory_report(), "stream": m.stream_stats()}
            t["experts"] = m.expert_stats() if t["memory"].get("total_experts") else None
        except EdgeRTError:  # a closed model: keep the last snapshot
            return
        self.telemetry = t
