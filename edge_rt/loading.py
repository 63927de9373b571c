"""Opening a model: ``edge_rt.load(path, ...)`` and ``edge_rt.minimum_budget(path, ...)``.

``load`` turns its keyword arguments into one ``_core.EngineOptions`` (the core checks their ranges and
parses their names: native/include/edge_rt/engine_options.h), reads the GGUF header for the tokenizer
and the training context, builds the engine and returns a :class:`~edge_rt.model.Model`.
"""

from __future__ import annotations

import os
import re
import warnings
from fractions import Fraction
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Dict, Optional, Tuple, Union

import numpy as np

from .errors import InvalidArgumentError, ModelFormatError, ModelIOError, OutOfMemoryError

if TYPE_CHECKING:
    from .model import Model

__all__ = ["load", "minimum_budget", "default_threads", "parse_size", "predictor_path_for"]

PathLike = Union[str, "os.PathLike[str]"]

DEFAULT_N_CTX = 2048


def _core() -> ModuleType:
    """Import the compiled extension, turning a missing build into an actionable message."""
    try:
        from . import _core as core  # type: ignore[attr-defined]
    except ImportError as e:
        raise ImportError(
            "edge_rt's native extension (edge_rt._core) is not available: "
            f"{e}. Install the package with `pip install .` or, in a source checkout, "
            "build it with `tools/devbuild.sh`.") from e
    return core


def default_threads() -> int:
    """Physical cores usable by this process (at least 1); the default thread count of :func:`load`."""
    n: Optional[int] = None
    try:
        import psutil

        n = psutil.cpu_count(logical=False)
    except Exception:  # psutil missing or unable to read the topology
        n = None
    if not n:
        n = os.cpu_count() or 1
    try:
        n = min(n, len(os.sched_getaffinity(0)))  # respect taskset / cgroup cpusets
    except (AttributeError, OSError):
        pass
    return max(1, int(n))


MAX_SIZE = 2**63 - 1  # the engine counts bytes in 64 bits


def parse_size(value: Union[int, str], what: str = "[load] memory size") -> int:
    """Bytes from an int or a string like ``"1.5GB"``, ``"800MiB"``, ``"4096"`` (decimal kB/MB/GB,
    binary KiB/MiB/GiB; a bare number is bytes). ``what`` names the value in error messages.

    Raises:
        InvalidArgumentError: not a size, negative, or above 2**63 - 1 bytes.
    """
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        size = int(value)
    elif isinstance(value, str):
        m = re.fullmatch(r"\s*(-?)([0-9]*\.?[0-9]+)\s*([kKmMgGtT]i?[bB]?|[bB])?\s*", value)
        if not m:
            raise InvalidArgumentError(f"{what}: cannot parse {value!r} (examples: '1.5GB', '800MiB', '4096')")
        number, unit = Fraction(m.group(2)), (m.group(3) or "B").upper().rstrip("B")  # exact, any length
        scale = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
                 "KI": 2**10, "MI": 2**20, "GI": 2**30, "TI": 2**40}[unit]
        if m.group(1) and number:
            raise InvalidArgumentError(f"{what} must be >= 0, got {value!r}")
        size = int(number * scale)
    else:
        raise InvalidArgumentError(f"{what} must be an int or a string like '1.5GB', got {value!r}")
    if size < 0:
        raise InvalidArgumentError(f"{what} must be >= 0, got {value!r}")
    if size > MAX_SIZE:
        raise InvalidArgumentError(f"{what} {value!r} is too large (at most {MAX_SIZE} bytes)")
    return size


#: What the Python side holds per byte of parsed C++ metadata (GGUFFile.metadata_bytes) while a model
#: loads: the metadata as Python objects plus the Tokenizer built from it. Measured as RSS growth of
#: ``dict(header.metadata)`` + ``Tokenizer.from_metadata`` over metadata_bytes: 8.4x (llama.cpp's gpt-2
#: vocabulary), 8.3x (llama-bpe), 5.8x (llama-spm), 7.4x and 5.6x (synthetic one-million-token gpt2 and
#: llama vocabularies); rounded up for margin. ``load(mem_budget=...)`` counts it in the ``metadata`` class.
HOST_METADATA_FACTOR = 10


def _open_model_header(path: PathLike, threads: Optional[int], n_ctx: Optional[int], opts: Any
                       ) -> Tuple[Path, Any, str]:
    """What :func:`load` and :func:`minimum_budget` share: the path checked; ``threads`` and ``n_ctx``
    set on ``opts`` (defaulted: n_ctx from the training context) and every option in ``opts`` checked
    by the core before the header is read (so a bad value is reported ahead of the warning for an
    n_ctx past the training context); the parsed header (an ``_core.GGUFFile``, its metadata not yet
    converted to Python) and the architecture; ``opts.host_metadata_bytes`` set to what the Python
    metadata and tokenizer will hold (:data:`HOST_METADATA_FACTOR`). Under ``opts.mem_budget`` the
    C++ reader refuses metadata that alone would exceed it, before allocating it
    (OutOfMemoryError stating what it needs). Reads the GGUF header only."""
    from .gguf_file import existing_file

    p = existing_file(path, "[load]")
    core = _core()
    _set_option(opts, "threads", default_threads() if threads is None else threads)
    _set_option(opts, "n_ctx", DEFAULT_N_CTX if n_ctx is None else n_ctx)
    core.check_options(opts)

    # Header only: fails fast and clearly on a non-GGUF file.
    header = core.GGUFFile(str(p), max_metadata_bytes=opts.mem_budget)
    opts.host_metadata_bytes = HOST_METADATA_FACTOR * header.metadata_bytes
    arch = header.get("general.architecture")
    if not isinstance(arch, str) or not arch:
        raise ModelFormatError(f"[load] {p}: metadata key 'general.architecture' is missing or not a non-empty "
                               f"string (got {arch!r:.60})")
    if arch == "expert_predictor":
        raise InvalidArgumentError(f"[load] {p} is an expert predictor (edge-rt fit-predictor), not a model: load the "
                                   "model it was fitted for, with expert_predictor= this file (or next to it as "
                                   "MODEL.predictor.gguf)")
    raw_ctx = header.get(f"{arch}.context_length")
    n_ctx_train: Optional[int] = None
    if isinstance(raw_ctx, (int, np.integer)) and not isinstance(raw_ctx, bool) and raw_ctx >= 1:
        n_ctx_train = int(raw_ctx)
    if n_ctx is None:
        opts.n_ctx = min(DEFAULT_N_CTX, n_ctx_train) if n_ctx_train else DEFAULT_N_CTX
    elif n_ctx_train and n_ctx > n_ctx_train:
        warnings.warn(f"n_ctx={n_ctx} exceeds the model's training context ({n_ctx_train}); "
                      "output quality may degrade past it", stacklevel=3)
    return p, header, arch


def _set_option(opts: Any, name: str, value: Any, label: Optional[str] = None) -> None:
    """opts.name = value for an integer option: a value that is not an int is the caller's error (the
    ranges are the core's to check)."""
    if not is_int(value):
        raise InvalidArgumentError(f"[load] {label or name} must be an integer, got {value!r}")
    try:
        setattr(opts, name, int(value))
    except TypeError:  # beyond the field's C++ type: out of every range the core accepts
        raise InvalidArgumentError(f"[load] {label or name} {value!r} is out of range") from None


def _memory_options(opts: Any, op: str, mem_budget: Optional[Union[int, str]], window: Optional[int], prefetch: bool,
                    expert_cache: Optional[Union[int, str]], expert_prefetch: str) -> None:
    """Sets the placement options load() and plan() share on ``opts`` (errors name ``op``), so a plan
    places a model exactly as loading it would."""
    if mem_budget is not None:
        opts.mem_budget = parse_size(mem_budget, f"[{op}] mem_budget")
        if opts.mem_budget == 0:
            raise InvalidArgumentError(f"[{op}] mem_budget must be > 0 bytes (None, the default, means no budget)")
    if window is not None:
        _set_option(opts, "window", window)
    opts.prefetch = bool(prefetch)
    if expert_cache is not None:
        opts.expert_cache_bytes = parse_size(expert_cache, f"[{op}] expert_cache")
    opts.expert_prefetch = str(expert_prefetch)


def _predictor_options(opts: Any, model: Path, choice: Optional[PathLike]) -> None:
    """Sets the expert predictor of ``load(expert_predictor=choice)``: None = the router; "auto" =
    ``<model>.predictor.gguf`` when it exists, used only if next-layer prefetch would use it and the
    file is usable (the core decides, and says why not in ``Engine.notes``); else that file."""
    if choice is None:
        return
    if _is_auto(choice):
        found = predictor_path_for(model)
        if found.is_file():
            opts.expert_predictor, opts.expert_predictor_optional = str(found), True
        return
    path = Path(os.fspath(choice)).expanduser()
    if not path.is_file():
        raise ModelIOError(f"[load] expert predictor file not found: {path}")
    opts.expert_predictor = str(path)


def minimum_budget(path: PathLike, threads: Optional[int] = None, n_ctx: Optional[int] = None, *,
                   prefetch: bool = True, expert_prefetch: str = "next",
                   expert_predictor: Optional[PathLike] = "auto", npu_model: Optional[PathLike] = None,
                   ) -> Dict[str, int]:
    """The least ``mem_budget`` with which :func:`load` loads this model, in bytes, by what needs it.

    The arguments as in :func:`load` (``prefetch`` and ``expert_prefetch`` decide whether a fitted
    expert predictor is used, and so counted); with ``load``'s default ``window`` and ``expert_cache``
    (an explicit window or expert cache needs room for what it asks). Reads the GGUF header (and the
    predictor's), not the weights. ``npu_model``: an export folder whose NPU prefill stage is counted
    too (``load(npu=..., npu_model=...)``; ``n_ctx`` then defaults to the export's).

    Returns:
        Bytes ``{"weights", "expert_predictor", "kv_cache", "scratch", "metadata", "npu", "total"}``: one window
        slot for the largest streamed unit and the embedding row buffer (MoE: also the routers and one
        expert), the fitted predictor's weights (0 without one), the KV cache for ``n_ctx`` tokens, the
        scratch buffers, the metadata (the parsed GGUF key/values and the tokenizer built from them,
        :data:`HOST_METADATA_FACTOR`), the NPU stage (0 without ``npu_model``), and their sum; and the
        ``threads`` and ``n_ctx`` they are for
        (the defaults resolved).
        ``load(..., mem_budget=total)`` with those loads; one byte less raises OutOfMemoryError.

    Raises:
        As :func:`load` for the path, the file, the model, ``threads``, ``n_ctx`` and the predictor.
    """
    core = _core()
    opts = core.EngineOptions()
    opts.prefetch = bool(prefetch)
    opts.expert_prefetch = str(expert_prefetch)
    if npu_model is not None:
        from .npu_stage import estimate_bytes, open_export

        folder = open_export(npu_model)
        n_ctx = folder.n_cache if n_ctx is None else n_ctx
        opts.npu_bytes = sum(estimate_bytes(folder).values())
    p, header, _ = _open_model_header(path, threads, n_ctx, opts)
    del header  # one parsed copy at a time: core.minimum_budget parses its own
    _predictor_options(opts, p, expert_predictor)
    floor = dict(core.minimum_budget(str(p), opts))
    return {**floor, "threads": opts.threads, "n_ctx": opts.n_ctx}


def load(path: PathLike, threads: Optional[int] = None, n_ctx: Optional[int] = None, *,
         mem_budget: Optional[Union[int, str]] = None, window: Optional[int] = None, io_mode: str = "auto",
         prefetch: bool = True, expert_cache: Optional[Union[int, str]] = None, expert_policy: str = "lfu",
         expert_prefetch: str = "next", expert_prediction_width: Optional[int] = None,
         expert_predictor: Optional[PathLike] = "auto", npu: Optional[str] = None,
         npu_model: Optional[PathLike] = None, npu_scheme: Optional[str] = None, plan: Optional[str] = None,
         profile: Optional[Union[PathLike, Dict[str, Any]]] = None, repack: bool = True) -> "Model":
    """Load a GGUF model for inference.

    Args:
        path: GGUF model file.
        threads: Worker threads; default :func:`default_threads` (physical cores, at least 1).
        n_ctx: KV cache capacity in tokens; default ``min(2048, n_ctx_train)``. A value above the
            model's training context is allowed but warns (quality usually degrades past it).
        mem_budget: Hard cap on the engine's memory (pinned weights + window slots + KV cache +
            scratch + metadata: the tokenizer and GGUF key/values), bytes (> 0) or a string like
            ``"1.5GB"``. Without it (``None``) every weight is
            read into RAM.
            With it, the largest layers that fit stay pinned and the rest stream from the file
            through a window of layer slots, read ahead by I/O threads (see :meth:`Model.memory_report`).
        window: Streaming window slots (needs ``mem_budget``); default (``None`` or 0) the largest
            number that fits the budget.
        io_mode: ``"auto"`` (O_DIRECT where the filesystem allows, else buffered reads that drop the
            page cache behind them), ``"direct"`` or ``"buffered"``.
        prefetch: ``False`` reads each streamed layer when it is needed, with no overlap (a window of
            one slot; no expert prediction); the placement of pinned layers is unchanged. At the minimum
            ``mem_budget`` (nothing pinned) it is the naive load-compute-free baseline.
        expert_cache: Mixture-of-Experts models under a budget: bytes (or ``"600MB"``) for the expert
            cache; default (``None`` or 0) what the budget leaves after the layer placement. Experts are not part of
            the layer window: each (layer, expert) is cached and read on its own.
        expert_policy: Expert cache eviction: ``"lfu"`` (default; decayed use counts, least recent on
            ties) or ``"lru"``. LFU had the higher hit rate and read fewer bytes in every case
            benchmarks/moe.py measured.
        expert_prefetch: Which predictors read experts ahead of the router: ``"next"`` (default; layer
            i+1's router on layer i's attention output), ``"same"`` (layer i's router on the hidden
            state entering layer i), ``"both"`` or ``"off"``. On the Mixtral-shaped benchmark
            ``"next"`` was the fastest or level with the fastest at every cache size, reading fewer
            bytes than ``"both"``: same-layer predictions come too late to hide much and add reads.
            Predictions change what is read when, never the output (see :meth:`Model.expert_stats`).
        expert_prediction_width: Experts each predictor names per token and layer; default (``None``
            or 0) the model's ``expert_used_count``. Wider predictions raise recall and cost bytes.
        expert_predictor: A fitted next-layer expert predictor (a sidecar GGUF written by
            ``edge-rt fit-predictor``) whose correction next-layer prefetch adds to layer i+1's router
            scores. ``"auto"`` (default) uses ``<model>.predictor.gguf`` when that file exists and
            next-layer prefetch runs (MoE, ``mem_budget`` set, ``prefetch`` on, ``expert_prefetch``
            ``"next"`` or ``"both"``), and falls back to the router with a warning if that file is
            unusable; ``None`` always uses the router; a path requires that file (an unusable one is an
            error). The predictor's bytes count as pinned weights. ``info()["expert_predictor"]``
            names the file in use.
        npu: Prefill prompts on an NPU backend: ``"qnn-htp"`` (ONNX Runtime's QNN EP on the
            Hexagon NPU; on x86-64 its emulator), ``"cpu-ep"`` (ONNX Runtime's CPU EP, standing in
            for an NPU, and saying so in ``info()``), ``"cuda"`` / ``"tensorrt"`` (ONNX Runtime's GPU
            providers, e.g. a Jetson's, CPU fallback disabled) or ``"int-ref"`` (the C++ integer kernels of
            docs/integer_spec.md over the whole graph, on the CPU). The prompt runs in chunks through
            ``npu_model``'s prefill graph and its K/V is handed to the engine's cache; the last prompt
            token and decode run on the CPU from this GGUF (see :mod:`edge_rt.npu_model`). A backend
            that cannot load is an error, never replaced by another.
        npu_model: The folder ``edge-rt export`` wrote for this model (needed with ``npu``). It must
            be of this model (architecture, shapes and embeddings are compared) and for ``n_ctx``
            cache slots (``n_ctx`` defaults to the export's ``--ctx``).
        npu_scheme: Require the export's scheme (``"w8a8"``, ...); default: any.
        plan: ``"auto"``: let the planner (:func:`edge_rt.planner.choose`) pick what is not given: without
            ``mem_budget``, resident when the model fits the profile's usable memory, else that memory as
            the budget; the window with the fastest predicted decode; ``threads`` the profile's cores.
            The plan, with its predicted speeds, is :attr:`Model.plan`. Reads the header only.
        profile: The device profile ``plan="auto"`` plans for: a dict, a JSON file, a shipped profile's
            name (``edge-rt plan --help`` lists them); default this machine's (``edge-rt profile``).
        repack: Sum Q4_0 and Q4_K matrices as llama.cpp's x86 build sums the interleaved copies it
            repacks them into (default; edge_rt interleaves them in RAM too, for its prompt kernels).
            False: as llama.cpp with ``--no-repack`` does, in the file's layout: the bits of such a
            llama.cpp (an AMX build is opened that way by :mod:`edge_rt.llama_cpp_peer`); prompts of
            those types run slower.

    Raises:
        ModelIOError: the file does not exist or cannot be read (the message names the path).
        ModelFormatError: the file is not a valid GGUF model.
        UnsupportedArchitectureError, UnsupportedTypeError: the model cannot run on edge_rt.
        InvalidArgumentError: ``threads``, ``n_ctx``, ``mem_budget`` or another option is out of range.
        OutOfMemoryError: weights or KV cache do not fit, or ``mem_budget`` is below the model's
            minimum (one layer slot + KV cache + scratch, + the NPU stage's ``npu`` class; the
            message states it, and :func:`minimum_budget` gives it without loading).
        BackendUnavailableError: the ``npu`` backend cannot run here (the message says what to install).
    """
    chosen = None
    if plan is not None:
        if plan != "auto":
            raise InvalidArgumentError(f"[load] plan must be 'auto' or None, got {plan!r}")
        from .planner import choose

        chosen = choose(path, profile, mem_budget=mem_budget, threads=threads, n_ctx=n_ctx, window=window,
                        prefetch=prefetch, expert_cache=expert_cache, expert_prefetch=expert_prefetch,
                        expert_predictor=expert_predictor)
        mem_budget, window, threads = (chosen["choice"][k] for k in ("mem_budget", "window", "threads"))
    elif profile is not None:
        raise InvalidArgumentError("[load] profile= is what plan='auto' plans for: pass plan='auto' too")
    core = _core()
    opts = core.EngineOptions()
    stage_folder = None
    if npu is not None or npu_model is not None:
        from .devices.npu import check_backend_name
        from .npu_stage import estimate_bytes, open_export

        if npu is None:
            raise InvalidArgumentError("[npu] npu_model= needs npu=: the backend to prefill on (qnn-htp, cpu-ep, "
                                       "int-ref)")
        check_backend_name(npu)
        stage_folder = open_export(npu_model)
        if n_ctx is None:
            n_ctx = stage_folder.n_cache
        opts.npu_bytes = sum(estimate_bytes(stage_folder).values())
    _memory_options(opts, "load", mem_budget, window, prefetch, expert_cache, expert_prefetch)
    opts.io_mode = str(io_mode)
    opts.expert_policy = str(expert_policy)
    opts.repack = bool(repack)
    if expert_prediction_width is not None:
        _set_option(opts, "prediction_width", expert_prediction_width, "expert_prediction_width")
    try:
        p, header, arch = _open_model_header(path, threads, n_ctx, opts)
    except OutOfMemoryError:
        if not opts.mem_budget:
            raise
        # The metadata alone exceeds the budget (the reader stopped before allocating past it). The
        # engine states the whole minimum; measuring it takes unbounded parses, one at a time.
        p = Path(os.fspath(path)).expanduser()
        opts.host_metadata_bytes = HOST_METADATA_FACTOR * core.GGUFFile(str(p)).metadata_bytes
        _predictor_options(opts, p, expert_predictor)
        core.Engine(str(p), opts)
        raise
    _predictor_options(opts, p, expert_predictor)
    if opts.mem_budget and opts.mem_budget < core.minimum_budget(str(p), opts)["total"]:
        # Refuse before the Python metadata and tokenizer are built: the engine refuses this budget
        # with the message that states the minimum, before it allocates anything past the metadata.
        del header
        core.Engine(str(p), opts)

    from .tokenizer import Tokenizer

    # Same as Tokenizer.from_gguf(p), without parsing the header (and its vocabulary) a second time.
    md: Dict[str, Any] = dict(header.metadata)
    stage = None
    if stage_folder is not None:
        from .devices.npu import open_backend
        from .npu_stage import NpuStage, check_export

        check_export(stage_folder, header, md, opts.n_ctx, npu_scheme)
        stage = NpuStage(stage_folder, open_backend(str(npu), stage_folder.graph_path("prefill"), opts.threads))
    tokenizer = Tokenizer.from_metadata(md)
    del header  # the engine parses its own copy (counted in the metadata class); drop this one first
    engine = core.Engine(str(p), opts)
    for note in engine.notes:
        warnings.warn(note, stacklevel=2)
    if tokenizer.n_vocab > engine.n_vocab:
        raise ModelFormatError(f"[load] {p}: tokenizer has {tokenizer.n_vocab} tokens but the output "
                               f"layer only {engine.n_vocab}")
    from .model import Model

    tok_model = md.get("tokenizer.ggml.model")
    template = md.get("tokenizer.chat_template")
    kwargs: Dict[str, Any] = dict(path=p, tokenizer_model=tok_model if isinstance(tok_model, str) else None,
                                  chat_template=template if isinstance(template, str) and template else None)
    if stage is not None:
        from .npu_model import NpuModel

        model: "Model" = NpuModel(engine, tokenizer, stage, **kwargs)
    else:
        model = Model(engine, tokenizer, **kwargs)
    model.load_options = {"mem_budget": opts.mem_budget or None, "window": window, "prefetch": bool(prefetch),
                          "expert_cache": expert_cache, "expert_prefetch": expert_prefetch,
                          "expert_predictor": expert_predictor}
    model.plan = chosen
    return model


def predictor_path_for(model_path: PathLike) -> Path:
    """Where ``expert_predictor="auto"`` looks for a model's fitted expert predictor."""
    p = Path(os.fspath(model_path))
    return p.with_name(p.name + ".predictor.gguf")


def _is_auto(choice: object) -> bool:
    return isinstance(choice, str) and choice == "auto"


def is_int(x: object) -> bool:
    """An int (numpy ints included), not a bool."""
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)
