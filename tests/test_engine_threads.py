"""The engine shared between Python threads and with Python signal handlers.

Each scenario runs in a child process with a deadline, so a deadlock fails the test instead of
hanging the suite. The child evaluates a prompt long enough (about a second) for the other thread,
or a timer signal, to arrive while the engine is between layers.
"""

from __future__ import annotations

import pytest

from helpers import python_child

# A 12-layer model; 1500 prompt tokens (three micro-batches) take one to a few seconds on one thread.
DEEP = dict(n_layer=12, n_embd=512, n_ff=1024, n_head=4, n_head_kv=2)

_OTHER_THREAD_CHILD = r"""
import sys, threading, time
import numpy as np
from edge_rt import _core, _testing
path, budget, op = sys.argv[1], int(sys.argv[2]), sys.argv[3]
eng = _testing.engine(path, 1, 2048, mem_budget=budget)
toks = (np.arange(1500) % 500 + 3).astype(np.int32)
a = threading.Thread(target=lambda: eng.eval(toks, False), daemon=True)
a.start()
while eng.n_past == 0:  # the first micro-batch is done: eval holds the engine for the others
    time.sleep(0.001)
assert a.is_alive(), "eval ended before the call: nothing would be tested"
if op == "reset":
    eng.reset()
elif op == "truncate":
    eng.truncate(0)
elif op == "set_observer":
    eng.set_observer(None)
else:
    getattr(eng, op)()
a.join(30)
print("ALIVE" if a.is_alive() else "DONE", eng.n_past, flush=True)
"""


@pytest.mark.parametrize("op,budget", [("reset", 0), ("truncate", 0), ("clear_stream_telemetry", 36 << 20),
                                       ("set_observer", 0), ("memory_report", 0)])
def test_engine_call_from_another_thread_waits_for_eval(synthetic_model, op, budget):
    """Calls that change or read engine state wait for a running eval instead of deadlocking it (they
    used to hold the GIL while waiting for the engine, which eval needs between layers)."""
    path = synthetic_model(**DEEP)
    r = python_child(["-c", _OTHER_THREAD_CHILD, str(path), str(budget), op], capture_output=True, text=True,
                     timeout=60)
    assert r.returncode == 0, r.stderr
    state, n_past = r.stdout.split()
    assert state == "DONE"
    # the call ran after the eval (it waited for it): reset/truncate leave 0, the others 1500
    assert int(n_past) == (0 if op in ("reset", "truncate") else 1500)


_HANDLER_CHILD = r"""
import signal, sys
import numpy as np
from edge_rt import _core, _testing
eng = _testing.engine(sys.argv[1], 1, 2048)
what = sys.argv[2]
class Deadline(Exception):
    pass
def on_alarm(sig, frame):
    if what == "raise":
        raise Deadline("deadline exceeded")
    eng.clear_stream_telemetry()  # touches the engine from inside its own eval
signal.signal(signal.SIGALRM, on_alarm)
signal.setitimer(signal.ITIMER_REAL, 0.2)
toks = (np.arange(1500) % 500 + 3).astype(np.int32)
try:
    eng.eval(toks, False)
    print("FINISHED", eng.n_past)
except BaseException as e:
    print(type(e).__name__, eng.n_past, str(e).replace(" ", "_")[:100])
eng.eval(toks[:4], False)  # usable afterwards
print("AFTER", eng.n_past)
"""


def test_signal_handler_exception_reaches_the_caller(synthetic_model):
    """An exception raised by a Python signal handler during eval is the one the caller gets (it used to
    be replaced by KeyboardInterrupt), eval is rolled back, and the engine stays usable."""
    path = synthetic_model(**DEEP)
    r = python_child(["-c", _HANDLER_CHILD, str(path), "raise"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    first, after = r.stdout.splitlines()
    assert first.split()[:2] == ["Deadline", "0"], r.stdout
    assert after == "AFTER 4"


def test_signal_handler_using_the_engine_raises_instead_of_deadlocking(synthetic_model):
    """A signal handler that calls into the engine while that same thread is inside eval gets a clear
    error (it used to deadlock on the engine's own lock)."""
    path = synthetic_model(**DEEP)
    r = python_child(["-c", _HANDLER_CHILD, str(path), "touch"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    first, after = r.stdout.splitlines()
    name, n_past, msg = first.split()
    assert (name, n_past) == ("InvalidArgumentError", "0"), r.stdout
    assert "busy_evaluating_on_this_thread" in msg
    assert after == "AFTER 4"


_STATS_CHILD = r"""
import sys
import numpy as np
import edge_rt
from edge_rt import _core, _testing
from edge_rt.quantize.calibrate import ActivationStatsObserver
path = sys.argv[1]
toks = (np.arange(1500) % 500 + 3).astype(np.int32)
budget = edge_rt.minimum_budget(path, threads=1, n_ctx=2048)["total"]  # every layer streams
per_token = _testing.engine(path, 1, 2048, mem_budget=budget).memory_report()["streamed_bytes_per_token"]
# The injected read error hits the middle of the first pass, after about half the layers added rows.
eng = _testing.engine(path, 1, 2048, mem_budget=budget, fault_after_bytes=per_token // 2)
stats = ActivationStatsObserver()
eng.set_observer(stats)
try:
    eng.eval(toks, False)
except edge_rt.ModelIOError:
    pass
rows = lambda: {k: int(v[1].sum()) for k, v in stats.stats().items()}
print(eng.n_past, eng.stream_stats()["bytes_read"] >= per_token // 4, sum(rows().values()))
eng = _testing.engine(path, 1, 2048)  # the same run without a fault: two evals, both committed
stats = ActivationStatsObserver()
eng.set_observer(stats)
eng.eval(toks[:4], False)
eng.eval(toks[4:8], False)
print(sorted({n for k, n in rows().items() if k.startswith("blk.")}))
"""


def test_failed_eval_leaves_no_calibration_rows(synthetic_model):
    """Activation statistics count only evaluations that complete (a failed eval left the rows of the
    layers it had run, which a retry then counted twice)."""
    path = synthetic_model(**DEEP)
    r = python_child(["-c", _STATS_CHILD, str(path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    first, after = r.stdout.splitlines()
    assert first == "0 True 0", r.stdout  # layers ran and read before the error; none of their rows stay
    assert after == "[8]", r.stdout  # two completed evals: each layer's matrix saw exactly their 8 rows
