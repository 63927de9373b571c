"""Qualcomm HTP (Hexagon NPU) through ONNX Runtime's QNN execution provider, emulated on x86-64 Linux.

The ``onnxruntime-qnn`` wheel (the optional extra ``edge-rt[qnn]``; Qualcomm's libraries carry Qualcomm's
licence) is a plugin EP whose x86 ``libQnnHtp.so`` emulates the HTP. A session made here registers the
plugin, targets ``htp_arch`` 75 / ``soc_model`` 57 (Snapdragon 8 Gen 3, SM8650) and disables the CPU
fallback: a QDQ graph either runs entirely on the emulated NPU or fails to load. That is the legality
proof ``edge-rt export --check htp`` gives. The emulator is not bit-identical to ORT's CPU QDQ kernels.
"""

from __future__ import annotations

import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

from ..errors import EdgeRTError

#: SoC name -> (htp_arch, soc_model) as QNN numbers them.
SOCS: Dict[str, Tuple[str, str]] = {"sm8650": ("75", "57")}
EP_NAME = "QNNExecutionProvider"
INSTALL_HINT = 'pip install "edge-rt[qnn]"'


class NotNpuLegalError(EdgeRTError, RuntimeError):
    """A graph has nodes the QNN HTP backend does not take (``nodes`` lists "name (op)")."""

    def __init__(self, msg: str, nodes: List[str]) -> None:
        super().__init__(msg)
        self.nodes = nodes


_registered = False


def require_qnn(op: str = "[export]") -> Any:
    """The onnxruntime_qnn module, or an ImportError naming the extra to install."""
    try:
        import onnxruntime  # noqa: F401
        import onnxruntime_qnn
    except ImportError as e:
        raise ImportError(f"{op} the Qualcomm HTP emulator needs onnxruntime-qnn: {INSTALL_HINT}") from e
    return onnxruntime_qnn


def _register() -> Any:
    global _registered
    import onnxruntime as ort

    oq = require_qnn()
    if not _registered:
        ort.register_execution_provider_library(EP_NAME, oq.get_library_path())
        _registered = True
    return oq


@contextmanager
def _stderr_to(path: Path) -> Iterator[None]:
    """ONNX Runtime names the refused nodes only in its C++ log (fd 2): capture it for the error."""
    saved = os.dup(2)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(fd, 2)
    os.close(fd)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


_UNSUPPORTED = re.compile(r"name:\s*([^,]*),\s*type:\s*([A-Za-z0-9_]+)")


def htp_session(model: Any, soc: str = "sm8650", context_file: Optional[Path] = None) -> Any:
    """An InferenceSession running ``model`` (path or bytes) wholly on the emulated HTP. Raises
    NotNpuLegalError naming the nodes QNN refused. ``context_file``: also write the ahead-of-time
    compiled context binary for ``soc`` there (``ep.context_enable``)."""
    import onnxruntime as ort

    oq = _register()
    arch, soc_model = SOCS[soc]
    devs = [d for d in ort.get_ep_devices() if d.ep_name == EP_NAME]
    if not devs:
        raise EdgeRTError(f"[qnn] ONNX Runtime lists no {EP_NAME} device after registering {oq.get_library_path()}")
    so = ort.SessionOptions()
    so.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    so.log_severity_level = 3
    if context_file is not None:
        so.add_session_config_entry("ep.context_enable", "1")
        so.add_session_config_entry("ep.context_file_path", str(context_file))
        so.add_session_config_entry("ep.context_embed_mode", "0")
    so.add_provider_for_devices(devs[:1], {"backend_path": oq.get_qnn_htp_path(), "htp_arch": arch,
                                           "soc_model": soc_model})
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "ort.log"
        try:
            with _stderr_to(log):
                return ort.InferenceSession(model, so)
        except Exception as e:  # ORT raises its own Fail/InvalidGraph classes
            text = log.read_text(errors="replace")
            nodes = sorted({f"{n.strip() or '?'} ({t})" for n, t in _UNSUPPORTED.findall(text)})
            what = f": {', '.join(nodes[:20])}" + (f" and {len(nodes) - 20} more" if len(nodes) > 20 else "") \
                if nodes else ""
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise NotNpuLegalError(f"[qnn] the HTP backend refused the graph{what} ({first})", nodes) from None
