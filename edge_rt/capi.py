"""edge_rt through its C ABI (``libedge_rt.so``, ``native/include/edge_rt/edge_rt.h``) with cffi in ABI mode.

For machines where the shared library exists but the pybind11 module ``edge_rt._core`` cannot be built (no
Python headers, no compiler for the extension, another Python than the one the wheel was built for): nothing
here imports ``_core``. It is also how the test suite checks the C ABI.

The library is looked up in order: the ``EDGE_RT_LIB`` environment variable (a path), ``libedge_rt.so`` next
to this package (the wheel installs it there; ``tools/devbuild.sh`` copies it there), then the system's
library path (``ctypes.util.find_library("edge_rt")``). Needs ``cffi`` (``pip install cffi``; the ``capi``
extra).

Example::

    from edge_rt.capi import CModel
    with CModel("model.gguf", threads=2) as m:
        ids = m.tokenize("def main():")
        print(m.detokenize(m.generate_tokens(ids, max_tokens=32)))

:class:`CModel` raises the exceptions of :mod:`edge_rt.errors` for the ABI's status codes
(:class:`CancelledError` for a cancelled generation); each carries ``status``, the code's name.
"""

from __future__ import annotations

import ctypes.util
import os
import threading
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

from .errors import (
    EdgeRTError,
    InvalidArgumentError,
    ModelFormatError,
    ModelIOError,
    OutOfMemoryError,
    UnsupportedArchitectureError,
    UnsupportedTypeError,
)

__all__ = ["CDEF", "CModel", "CancelledError", "ffi", "library", "library_path"]

#: The declarations of edge_rt.h, as cffi reads them (tests/test_capi.py checks they equal the header's).
CDEF = """
#define EDGE_RT_ABI_VERSION 1
typedef enum edge_rt_status {
    EDGE_RT_OK = 0,
    EDGE_RT_ERR_INVALID_ARGUMENT = 1,
    EDGE_RT_ERR_MODEL_FORMAT = 2,
    EDGE_RT_ERR_UNSUPPORTED = 3,
    EDGE_RT_ERR_UNSUPPORTED_TYPE = 4,
    EDGE_RT_ERR_IO = 5,
    EDGE_RT_ERR_OUT_OF_MEMORY = 6,
    EDGE_RT_ERR_CANCELLED = 7,
    EDGE_RT_ERR_INVALID_HANDLE = 8,
    EDGE_RT_ERR_BUFFER_TOO_SMALL = 9,
    EDGE_RT_ERR_CONTEXT_FULL = 10,
    EDGE_RT_ERR_INTERNAL = 11
} edge_rt_status;
typedef struct edge_rt_model edge_rt_model;
typedef struct edge_rt_options {
    uint32_t struct_size;
    const char* model_path;
    int64_t n_ctx;
    int32_t n_threads;
    uint64_t mem_budget;
    int32_t window;
    int64_t n_ubatch;
    uint64_t expert_cache_bytes;
    const char* io_mode;
} edge_rt_options;
typedef struct edge_rt_memory_report {
    uint32_t struct_size;
    uint64_t budget;
    uint64_t total;
    uint64_t pinned_weights;
    uint64_t window_slots;
    uint64_t expert_cache;
    uint64_t kv_cache;
    uint64_t scratch;
    uint64_t metadata;
    int32_t streaming;
    int32_t window;
    uint64_t streamed_bytes_per_token;
} edge_rt_memory_report;
typedef struct edge_rt_model_info {
    uint32_t struct_size;
    int32_t n_vocab;
    int64_t n_ctx;
    int32_t n_layer;
    int32_t n_embd;
    int32_t n_threads;
    int32_t bos_token;
    int32_t eos_token;
    int32_t can_tokenize;
    char arch[32];
    char isa[32];
} edge_rt_model_info;
typedef int (*edge_rt_token_callback)(int32_t token, const char* piece, size_t piece_len, void* user_data);
typedef enum edge_rt_finish_reason {
    EDGE_RT_FINISH_EOG = 0,
    EDGE_RT_FINISH_LENGTH = 1,
    EDGE_RT_FINISH_CONTEXT = 2,
    EDGE_RT_FINISH_CANCELLED = 3
} edge_rt_finish_reason;
typedef struct edge_rt_generate_result {
    uint32_t struct_size;
    int32_t n_tokens;
    int32_t finish_reason;
    double prefill_seconds;
    double decode_seconds;
} edge_rt_generate_result;
int32_t edge_rt_abi_version(void);
const char* edge_rt_version(void);
const char* edge_rt_last_error(const edge_rt_model* model);
const char* edge_rt_status_name(edge_rt_status status);
void edge_rt_options_init(edge_rt_options* options);
edge_rt_status edge_rt_model_create(const edge_rt_options* options, edge_rt_model** out);
edge_rt_status edge_rt_model_free(edge_rt_model* model);
edge_rt_status edge_rt_model_info_get(edge_rt_model* model, edge_rt_model_info* info);
edge_rt_status edge_rt_memory_report_get(edge_rt_model* model, edge_rt_memory_report* report);
int32_t edge_rt_token_is_eog(edge_rt_model* model, int32_t token);
edge_rt_status edge_rt_tokenize(edge_rt_model* model, const char* text, size_t text_len, int add_special,
                                int parse_special, int32_t* out, size_t cap, size_t* n_out);
edge_rt_status edge_rt_detokenize(edge_rt_model* model, const int32_t* ids, size_t n_ids, int special,
                                  char* out, size_t cap, size_t* n_out);
edge_rt_status edge_rt_eval(edge_rt_model* model, const int32_t* tokens, size_t n_tokens, float* logits,
                            size_t logits_cap);
edge_rt_status edge_rt_reset(edge_rt_model* model);
int64_t edge_rt_n_past(edge_rt_model* model);
edge_rt_status edge_rt_generate(edge_rt_model* model, const int32_t* prompt, size_t n_prompt,
                                int32_t max_tokens, edge_rt_token_callback callback, void* user_data,
                                edge_rt_generate_result* result);
edge_rt_status edge_rt_cancel(edge_rt_model* model);
"""


class CancelledError(EdgeRTError):
    """The generation or evaluation was cancelled (:meth:`CModel.cancel`, or the token callback asked)."""


_FINISH = {0: "eog", 1: "length", 2: "context", 3: "cancelled"}

try:  # cffi is optional: only this module needs it
    import cffi

    ffi: Any = cffi.FFI()
    ffi.cdef(CDEF)
except ImportError:  # pragma: no cover - reported when the library is first used
    ffi = None

_lib: Any = None
_lib_path: Optional[Path] = None
_lib_lock = threading.Lock()


def library_path() -> Path:
    """Where libedge_rt.so is taken from (see the module docstring); raises ModelIOError if none is found."""
    env = os.environ.get("EDGE_RT_LIB")
    if env:
        p = Path(env)
        if not p.is_file():
            raise ModelIOError(f"[capi] EDGE_RT_LIB={env!r} is not a file")
        return p
    here = Path(__file__).resolve().parent / "libedge_rt.so"
    if here.is_file():
        return here
    found = ctypes.util.find_library("edge_rt")
    if found:
        return Path(found)
    raise ModelIOError("[capi] libedge_rt.so not found: set EDGE_RT_LIB to its path, or build it "
                       "(cmake -S native -B build/native && cmake --build build/native --target edge_rt)")


def library() -> Any:
    """The loaded C library (cffi ABI mode), opened once per process."""
    global _lib, _lib_path
    if ffi is None:
        raise ImportError("edge_rt.capi needs cffi: pip install cffi (or pip install 'edge_rt[capi]')")
    with _lib_lock:
        if _lib is None:
            path = library_path()
            lib = ffi.dlopen(str(path))
            if lib.edge_rt_abi_version() != lib.EDGE_RT_ABI_VERSION:
                raise EdgeRTError(f"[capi] {path} has ABI version {lib.edge_rt_abi_version()}, this module "
                                  f"expects {lib.EDGE_RT_ABI_VERSION}")
            _lib, _lib_path = lib, path
    return _lib


def _error_class(status: int) -> type:
    lib = library()
    return {
        lib.EDGE_RT_ERR_INVALID_ARGUMENT: InvalidArgumentError,
        lib.EDGE_RT_ERR_MODEL_FORMAT: ModelFormatError,
        lib.EDGE_RT_ERR_UNSUPPORTED: UnsupportedArchitectureError,
        lib.EDGE_RT_ERR_UNSUPPORTED_TYPE: UnsupportedTypeError,
        lib.EDGE_RT_ERR_IO: ModelIOError,
        lib.EDGE_RT_ERR_OUT_OF_MEMORY: OutOfMemoryError,
        lib.EDGE_RT_ERR_CANCELLED: CancelledError,
        lib.EDGE_RT_ERR_INVALID_HANDLE: InvalidArgumentError,
        lib.EDGE_RT_ERR_CONTEXT_FULL: InvalidArgumentError,
        lib.EDGE_RT_ERR_BUFFER_TOO_SMALL: InvalidArgumentError,
    }.get(status, EdgeRTError)


def _raise(status: int, handle: Any = None) -> None:
    lib = library()
    message = ffi.string(lib.edge_rt_last_error(handle if handle is not None else ffi.NULL))
    err = _error_class(status)(message.decode("utf-8", "backslashreplace"))
    err.status = ffi.string(lib.edge_rt_status_name(status)).decode()
    raise err


class CModel:
    """A model loaded through the C ABI; the keywords are edge_rt_options' fields (0 = default).

    Not a drop-in :class:`edge_rt.Model`: greedy generation only (:meth:`generate_tokens`), logits of the last
    token (:meth:`eval`). Calls on one CModel are serialized by the library; :meth:`cancel` may be called from
    any thread. ``last_result`` describes the last generation that ended on this object, whichever thread ran it.
    """

    def __init__(self, path: Union[str, os.PathLike], *, n_ctx: int = 0, threads: int = 0, mem_budget: int = 0,
                 window: int = 0, n_ubatch: int = 0, expert_cache_bytes: int = 0,
                 io_mode: Optional[str] = None) -> None:
        lib = library()
        opts = ffi.new("edge_rt_options*")
        lib.edge_rt_options_init(opts)
        keep = [ffi.new("char[]", os.fsencode(os.fspath(path)))]  # alive until create returns
        opts.model_path = keep[0]
        if io_mode is not None:
            keep.append(ffi.new("char[]", io_mode.encode()))
            opts.io_mode = keep[-1]
        for name, value in (("n_ctx", n_ctx), ("n_threads", threads), ("mem_budget", mem_budget),
                            ("window", window), ("n_ubatch", n_ubatch), ("expert_cache_bytes", expert_cache_bytes)):
            try:
                setattr(opts, name, value)
            except (OverflowError, TypeError) as e:
                raise InvalidArgumentError(f"[capi] {name}={value!r}: {e}") from None
        out = ffi.new("edge_rt_model**")
        status = lib.edge_rt_model_create(opts, out)
        if status != lib.EDGE_RT_OK:
            _raise(status)
        self._h = out[0]
        self._lib = lib
        info = self.info()
        self.n_vocab: int = info["n_vocab"]
        self.n_ctx: int = info["n_ctx"]
        self.last_result: Optional[Dict[str, Any]] = None

    # ---- lifetime -----------------------------------------------------------------------------------

    def close(self) -> None:
        """Frees the model (edge_rt_model_free); later calls raise InvalidArgumentError (invalid handle)."""
        if self._h is not None:
            self._lib.edge_rt_model_free(self._h)
            self._h = None

    def __enter__(self) -> "CModel":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_h", None) is not None:
            self.close()

    def _handle(self) -> Any:
        return self._h if self._h is not None else ffi.NULL

    def _check(self, status: int) -> None:
        if status != self._lib.EDGE_RT_OK:
            _raise(status, self._handle())

    # ---- queries -------------------------------------------------------------------------------------

    def info(self) -> Dict[str, Any]:
        info = ffi.new("edge_rt_model_info*")
        info.struct_size = ffi.sizeof("edge_rt_model_info")
        self._check(self._lib.edge_rt_model_info_get(self._handle(), info))
        out = {k: getattr(info, k) for k in ("n_vocab", "n_ctx", "n_layer", "n_embd", "n_threads", "bos_token",
                                             "eos_token")}
        out["can_tokenize"] = bool(info.can_tokenize)
        out["arch"] = ffi.string(info.arch).decode()
        out["isa"] = ffi.string(info.isa).decode()
        return out

    def memory_report(self) -> Dict[str, Any]:
        r = ffi.new("edge_rt_memory_report*")
        r.struct_size = ffi.sizeof("edge_rt_memory_report")
        self._check(self._lib.edge_rt_memory_report_get(self._handle(), r))
        classes = {k: getattr(r, k) for k in ("pinned_weights", "window_slots", "expert_cache", "kv_cache", "scratch",
                                               "metadata")}
        return {"budget": r.budget, "total": r.total, "classes": classes, "streaming": bool(r.streaming),
                "window": r.window, "streamed_bytes_per_token": r.streamed_bytes_per_token}

    def is_eog(self, token: int) -> bool:
        answer = self._lib.edge_rt_token_is_eog(self._handle(), token)
        if answer < 0:
            _raise(self._lib.EDGE_RT_ERR_INVALID_ARGUMENT, self._handle())
        return bool(answer)

    @property
    def n_past(self) -> int:
        n = self._lib.edge_rt_n_past(self._handle())
        if n < 0:
            _raise(self._lib.EDGE_RT_ERR_INVALID_HANDLE, self._handle())
        return int(n)

    # ---- tokens --------------------------------------------------------------------------------------

    def tokenize(self, text: Union[str, bytes], add_special: bool = True, parse_special: bool = False) -> List[int]:
        data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else bytes(text)
        n = ffi.new("size_t*")
        cap = len(data) + 8
        while True:
            out = ffi.new("int32_t[]", cap)
            status = self._lib.edge_rt_tokenize(self._handle(), data, len(data), add_special, parse_special, out,
                                                cap, n)
            if status == self._lib.EDGE_RT_ERR_BUFFER_TOO_SMALL:
                cap = n[0]
                continue
            self._check(status)
            return list(out[0:n[0]])

    def detokenize_bytes(self, ids: Sequence[int], special: bool = False) -> bytes:
        arr = self._ids(ids)
        n = ffi.new("size_t*")
        cap = 16 * len(ids) + 16
        while True:
            out = ffi.new("char[]", cap)
            status = self._lib.edge_rt_detokenize(self._handle(), arr, len(ids), special, out, cap, n)
            if status == self._lib.EDGE_RT_ERR_BUFFER_TOO_SMALL:
                cap = n[0]
                continue
            self._check(status)
            return bytes(ffi.buffer(out, n[0]))

    def detokenize(self, ids: Sequence[int], special: bool = False) -> str:
        return self.detokenize_bytes(ids, special).decode("utf-8", errors="replace")

    @staticmethod
    def _ids(ids: Sequence[int]) -> Any:
        try:
            return ffi.new("int32_t[]", [int(t) for t in ids])
        except OverflowError as e:
            raise InvalidArgumentError(f"[capi] token id out of the int32 range: {e}") from None

    # ---- evaluation ----------------------------------------------------------------------------------

    def eval(self, tokens: Sequence[int]) -> List[float]:
        """Appends tokens to the KV cache; returns the last token's logits (n_vocab floats)."""
        logits = ffi.new("float[]", self.n_vocab)
        self._check(self._lib.edge_rt_eval(self._handle(), self._ids(tokens), len(tokens), logits, self.n_vocab))
        return list(logits)

    def reset(self) -> None:
        self._check(self._lib.edge_rt_reset(self._handle()))

    def cancel(self) -> None:
        """Stops the generate/eval running on this model (from another thread), or the next one."""
        self._check(self._lib.edge_rt_cancel(self._handle()))

    def generate_tokens(self, prompt: Sequence[int], max_tokens: Optional[int] = 128,
                        on_token: Optional[Callable[[int, bytes], Optional[bool]]] = None) -> List[int]:
        """Greedy generation after ``prompt`` from an empty KV cache (edge_rt_generate): the ids
        ``Model.generate_tokens(prompt, max_tokens, temperature=0)`` yields. ``on_token(id, piece_bytes)``
        returning True cancels (CancelledError; ``last_result`` then holds the tokens so far). An exception in
        on_token cancels too and is re-raised."""
        tokens: List[int] = []
        raised: List[BaseException] = []

        def collect(token: int, piece: Any, piece_len: int, _user: Any) -> int:
            tokens.append(token)
            if on_token is not None and on_token(token, bytes(ffi.buffer(piece, piece_len))):
                return 1
            return 0

        def on_error(exc_type: Any, exc: BaseException, tb: Any) -> int:
            raised.append(exc)
            return 1  # cancel

        callback = ffi.callback("edge_rt_token_callback", collect, onerror=on_error)
        result = ffi.new("edge_rt_generate_result*")
        result.struct_size = ffi.sizeof("edge_rt_generate_result")
        if max_tokens is not None and not (isinstance(max_tokens, int) and 0 <= max_tokens < 2**31):
            raise InvalidArgumentError(f"[generate] max_tokens must be an integer >= 0 or None, got {max_tokens!r}")
        limit = -1 if max_tokens is None else max_tokens
        status = self._lib.edge_rt_generate(self._handle(), self._ids(prompt), len(prompt), limit, callback,
                                            ffi.NULL, result)
        self.last_result = {"token_ids": tokens, "finish_reason": _FINISH.get(result.finish_reason, "error"),
                            "prefill_s": result.prefill_seconds, "decode_s": result.decode_seconds}
        if raised:
            raise raised[0]
        self._check(status)
        return tokens
