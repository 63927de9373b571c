"""``edge-rt serve``: an OpenAI-compatible HTTP server over one model (Starlette on uvicorn).

    from edge_rt.server import serve
    serve(edge_rt.load("model.gguf"), host="127.0.0.1", port=8080)

See :mod:`edge_rt.server.app` for the routes. The server needs the ``serve`` extra
(``pip install "edge_rt[serve]"``: starlette and uvicorn).
"""

from __future__ import annotations

import contextlib
import signal
import socket
import sys
import threading
from typing import Any, Callable, Iterator, Optional

__all__ = ["serve", "create_app"]


def create_app(model: Any, **kwargs: Any) -> Any:
    """See :func:`edge_rt.server.app.create_app`."""
    from .app import create_app as make

    return make(model, **kwargs)


def _require_stack() -> None:
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise ImportError(f"edge-rt serve needs starlette and uvicorn ({e}): pip install \"edge_rt[serve]\"") from None


def serve(model: Any, *, model_id: str, host: str = "127.0.0.1", port: int = 8080, api_key: Optional[str] = None,
          max_queue: int = 64, drain_timeout: int = 30, log_requests: bool = False, template: Optional[str] = None,
          announce: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True)) -> None:
    """Serve ``model`` until SIGINT or SIGTERM, then drain: stop accepting connections, let the
    requests already received finish (for at most ``drain_timeout`` seconds, then uvicorn cancels
    them), answer any still queued with an error, return. ``port`` 0 picks a free port; ``announce``
    gets the URL line; ``template`` overrides the model's chat template (see Model.chat_template)."""
    _require_stack()
    import uvicorn

    app = create_app(model, model_id=model_id, api_key=api_key, max_queue=max_queue, template=template)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise OSError(e.errno, f"cannot listen on {host}:{port}: {e.strerror}") from None
    sock.listen(2048)  # connections made before uvicorn's loop starts wait in the backlog, not refused
    bound = sock.getsockname()[1]
    class DrainingServer(uvicorn.Server):
        """uvicorn's server, except that after a graceful shutdown it returns instead of raising the
        signal again: a drained server exits with status 0 (a second signal still forces the exit)."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            original = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in original.items():
                    signal.signal(sig, handler)

        def handle_exit(self, sig: int, frame: Any) -> None:
            if not self.should_exit:
                announce(f"edge-rt serve: {signal.Signals(sig).name}: no new connections; finishing running "
                         f"requests (at most {drain_timeout} s; again to force)")
            super().handle_exit(sig, frame)

    # Plain asyncio and h11 (no uvloop/httptools/websockets even where installed): the protocol stack the
    # tests exercise (disconnect detection, graceful drain) is the one that runs.
    config = uvicorn.Config(app, log_level="warning", access_log=log_requests, lifespan="on", loop="asyncio",
                            http="h11", ws="none", timeout_graceful_shutdown=drain_timeout, timeout_keep_alive=5)
    server = DrainingServer(config)
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    announce(f"edge-rt serve: {model_id} on http://{shown}:{bound} (chat page /, OpenAI base_url "
             f"http://{shown}:{bound}/v1); Ctrl-C stops")
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    announce("edge-rt serve: stopped")
