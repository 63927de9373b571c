"""``edge-rt serve`` as a child process for the server tests: started on a free port, its stderr read
on a thread (so the pipe never fills), stopped with a signal, its exit status and output checked."""

from __future__ import annotations

import re
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import List, Optional

from helpers import python_child

DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "edge_rt" / "models" / "default.gguf"


class ServerProcess:
    """A running ``python -m edge_rt serve MODEL --port 0 ARGS`` (no MODEL argument when ``model`` is None);
    ``url`` is its base URL."""

    def __init__(self, model: Optional[Path] = DEFAULT_MODEL, *args: str, threads: int = 1,
                 start_timeout: float = 60.0, env: Optional[dict] = None) -> None:
        model_arg = [] if model is None else [str(model)]
        cmd = ["-m", "edge_rt", "serve", *model_arg, "--port", "0", "-t", str(threads), *args]
        kwargs = {"env": env} if env is not None else {}
        self.proc = python_child(cmd, popen=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                 **kwargs)
        self.lines: List[str] = []
        self._ready = threading.Event()
        self.url = ""
        threading.Thread(target=self._read, daemon=True).start()
        if not self._ready.wait(start_timeout) or not self.url:
            self.stop()
            raise RuntimeError("edge-rt serve did not start:\n" + "".join(self.lines))

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            m = re.search(r"on (http://\S+?:\d+) ", line)
            if m and not self.url:
                self.url = m.group(1)
                self._ready.set()
        self._ready.set()  # exited before announcing

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def send_signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> Optional[int]:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        deadline = time.monotonic() + 5
        while not self._ready.is_set() and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.proc.returncode

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
