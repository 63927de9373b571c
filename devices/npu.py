"""NPU prefill backends: what runs an exported prefill graph (``edge-rt export``) for ``load(npu=...)``.

A backend takes the graph contract of quantize/onnx_graph.py as it is: :meth:`PrefillBackend.run` gets
one chunk's named inputs (``x``, ``cos``, ``sin``, ``mask``, ``past_k.{i}``, ``past_v.{i}``) and returns
the named outputs (``logits``, ``new_k.{i}``, ``new_v.{i}``). Anything that computes that contract plugs
in by adding a factory to :data:`BACKENDS`.

* ``qnn-htp``: ONNX Runtime with Qualcomm's QNN execution provider, the HTP backend with the CPU fallback
  disabled (devices/qnn_htp.py; on x86-64 Linux the ``onnxruntime-qnn`` wheel emulates the HTP);
* ``cpu-ep``: the same graph on ONNX Runtime's CPU execution provider. It is not an NPU: it stands in for
  one where none is present, and says so (``stand_in``);
* ``cuda`` / ``tensorrt``: ONNX Runtime's CUDA or TensorRT execution provider on an NVIDIA GPU (a Jetson's
  integrated one: the jetson image's onnxruntime-gpu), with the CPU fallback disabled like ``qnn-htp``, so a
  graph the GPU cannot run whole is an error. Where that provider is absent (this x86 machine), an error
  naming it and what the installed ONNX Runtime offers;
* ``int-ref``: the C++ integer kernels that follow docs/integer_spec.md bit for bit, run over the whole
  graph on codes (quantize/int_graph.py ``IntGraph``): the integer reference of what an NPU computes, on
  the CPU (a stand-in, and it says so).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import numpy as np

from ..errors import BackendUnavailableError, InvalidArgumentError

#: Graph optimizations for ``cpu-ep``. Off: every QDQ node runs as DequantizeLinear -> float op ->
#: QuantizeLinear, the format's defining semantics, which the HTP also follows. On, ORT fuses them into
#: its integer kernels, whose u8 x s8 products can saturate on AVX2 without VNNI (onnx_runner.py).
CPU_EP_OPTIMIZE = False


@dataclass
class PrefillBackend:
    """One loaded prefill graph on one backend. ``name``: the ``npu=`` value; ``device``: what runs it,
    in words; ``stand_in``: True when it is not an NPU but runs in place of one."""

    name: str
    device: str
    stand_in: bool
    _run: Callable[[Dict[str, np.ndarray]], Dict[str, np.ndarray]]

    def run(self, feed: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """One chunk: the graph's inputs by name -> its outputs by name."""
        return self._run(feed)


def _ort(name: str, device: str, stand_in: bool, session: Any) -> PrefillBackend:
    names = [o.name for o in session.get_outputs()]
    return PrefillBackend(name, device, stand_in, lambda feed: dict(zip(names, session.run(None, feed))))


def _qnn_htp(graph: Path, threads: Optional[int]) -> PrefillBackend:
    from .qnn_htp import INSTALL_HINT, htp_session, require_qnn

    try:
        require_qnn("[npu]")
    except ImportError as e:
        raise BackendUnavailableError(f"[npu] backend 'qnn-htp' cannot load: onnxruntime-qnn is not installed "
                                      f"({INSTALL_HINT})") from e
    import platform

    emulated = platform.machine() in ("x86_64", "AMD64")
    device = ("Qualcomm HTP (SM8650), emulated on x86-64 by onnxruntime-qnn" if emulated
              else "Qualcomm HTP (SM8650)") + ", CPU fallback disabled"
    return _ort("qnn-htp", device, False, htp_session(str(graph)))


def _cpu_ep(graph: Path, threads: Optional[int]) -> PrefillBackend:
    try:
        import onnxruntime  # noqa: F401

        from ..quantize.onnx_runner import float_session
    except ImportError as e:
        raise BackendUnavailableError('[npu] backend \'cpu-ep\' cannot load: onnxruntime is not installed '
                                      '(pip install "edge-rt[onnx]")') from e
    return _ort("cpu-ep", "ONNX Runtime CPU EP, standing in for an NPU (none is used)", True,
                float_session(str(graph), threads, optimize=CPU_EP_OPTIMIZE))


#: npu= name -> the ONNX Runtime execution provider of the GPU backends (TensorRT runs beside CUDA, which
#: takes what TensorRT does not).
GPU_PROVIDERS = {"cuda": ("CUDAExecutionProvider",),
                 "tensorrt": ("TensorrtExecutionProvider", "CUDAExecutionProvider")}


def _ort_gpu(name: str) -> Callable[[Path, Optional[int]], PrefillBackend]:
    def factory(graph: Path, threads: Optional[int]) -> PrefillBackend:
        providers = GPU_PROVIDERS[name]
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise BackendUnavailableError(f"[npu] backend '{name}' cannot load: onnxruntime is not installed "
                                          "(a GPU build: onnxruntime-gpu, as the Jetson image has)") from e
        have = ort.get_available_providers()
        if providers[0] not in have:
            raise BackendUnavailableError(
                f"[npu] backend '{name}' cannot load: this ONNX Runtime ({ort.__version__}) has no "
                f"{providers[0]} (it offers {', '.join(have)}); a GPU build (onnxruntime-gpu, or the Jetson "
                "image's) provides it")
        so = ort.SessionOptions()
        so.add_session_config_entry("session.disable_cpu_ep_fallback", "1")  # all of the graph on the GPU
        if threads:
            so.intra_op_num_threads = int(threads)
        session = ort.InferenceSession(str(graph), so, providers=list(providers))
        return _ort(name, f"NVIDIA GPU through ONNX Runtime's {' + '.join(providers)}, CPU fallback disabled",
                    False, session)

    return factory


def _int_ref(graph: Path, threads: Optional[int]) -> PrefillBackend:
    try:
        from ..quantize import intkernels
        from ..quantize.int_graph import IntGraph
    except ImportError as e:
        raise BackendUnavailableError(f"[npu] backend 'int-ref' cannot load: {e} (pip install \"edge-rt[onnx]\")"
                                      ) from e
    from .._core import isa

    runner = IntGraph(graph, intkernels)
    return PrefillBackend("int-ref", f"edge_rt's C++ integer kernels (docs/integer_spec.md) on the CPU, ISA {isa()}, "
                          "standing in for an NPU", True, runner.run)


#: npu= name -> factory(prefill graph path, threads) -> PrefillBackend. Raises BackendUnavailableError
#: when the backend cannot load here (its reason and, where one exists, the package to install). The
#: graph's folder is the export folder: a backend that runs its own kernels (int-ref) reads the weights'
#: and activations' encodings from manifest.json there (quantize/onnx_export_folder.py ExportFolder).
BACKENDS: Dict[str, Callable[[Path, Optional[int]], PrefillBackend]] = {
    "qnn-htp": _qnn_htp, "cpu-ep": _cpu_ep, "cuda": _ort_gpu("cuda"), "tensorrt": _ort_gpu("tensorrt"),
    "int-ref": _int_ref}


def check_backend_name(name: Any) -> str:
    if not isinstance(name, str) or name not in BACKENDS:
        raise InvalidArgumentError(f"[npu] unknown backend {name!r}; available: {', '.join(BACKENDS)}")
    return name


def open_backend(name: str, graph: Path, threads: Optional[int] = None) -> PrefillBackend:
    """The prefill graph at ``graph`` loaded on backend ``name`` (see the module docstring)."""
    return BACKENDS[check_backend_name(name)](Path(graph), threads)
