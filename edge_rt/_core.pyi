"""Type stub of edge_rt._core, the private pybind11 module built from native/bindings/.

Users go through the edge_rt package (``edge_rt.load``); this module's surface is for the package and
for tests. Every function that does real work releases the GIL. Errors are raised as the classes of
:mod:`edge_rt.errors` (the C++ error kind is mapped once in the binding); an interrupted computation
raises the exception its Python signal handler raised (``KeyboardInterrupt`` for Ctrl-C).
"""

import os
from typing import Any, Dict, List, Optional, Tuple, TypedDict, Union

import numpy as np
import numpy.typing as npt

# ---- system: ISA selection --------------------------------------------------------------------------

def isa() -> str:
    """Name of the ISA the kernels run on in this process ("scalar", "avx2", "avx512vnni").

    The best ISA compiled in and supported by the CPU, lowered by ``EDGE_RT_ISA`` when set.
    """

def best_isa() -> str:
    """Highest ISA both compiled into the library and supported by this CPU (ignores EDGE_RT_ISA)."""

def vec_ops_flavour() -> str:
    """Which llama.cpp x86 build's float vector arithmetic (SiLU, softmax, F16 attention dots) runs:
    "avx2" or "avx512". That of llama.cpp built natively on this CPU (avx512 where the best ISA is
    avx512vnni) unless ``EDGE_RT_VEC_OPS`` names one; every ISA computes it (a scalar twin where the ISA
    lacks its SIMD code), so ``EDGE_RT_ISA`` changes speed, not these bits."""

def cpu_supports(name: str) -> bool:
    """Whether this CPU (and OS register state) supports the ISA ``name``, whether or not it was
    compiled in. An unknown name raises InvalidArgumentError."""

def compiled_isas() -> List[str]:
    """ISAs whose kernels were built into the library, lowest first ("scalar" is always present)."""

# ---- GGUF -------------------------------------------------------------------------------------------

class TensorInfo(TypedDict):
    name: str
    type: str  # ggml type name, e.g. "Q4_K", "F16"
    type_id: int  # ggml type id
    shape: List[int]  # ne[0] first (innermost, contiguous dimension), as in ggml
    offset: int  # absolute byte offset of the data in the file
    n_bytes: int
    n_elements: int

Buffer = Union[bytes, bytearray, memoryview, npt.NDArray[np.uint8]]  # any buffer of raw block bytes

MetadataValue = Union[int, float, bool, str, List[int], List[float], List[bool], List[str]]

class GGUFFile:
    """A parsed GGUF header: metadata and tensor infos. Reads the header only, never tensor data.

    Raises ModelIOError when the file cannot be opened and ModelFormatError (naming the key or tensor)
    when it is not a valid GGUF.
    """

    def __init__(self, path: Union[str, bytes, "os.PathLike[str]"], max_metadata_bytes: int = 0) -> None: ...
    @property
    def metadata_bytes(self) -> int: ...
    def get(self, key: str, default: Any = None) -> Any: ...
    @property
    def path(self) -> str: ...
    @property
    def version(self) -> int: ...
    @property
    def file_size(self) -> int: ...
    @property
    def alignment(self) -> int: ...
    @property
    def data_offset(self) -> int:
        """Absolute byte offset of the tensor data section."""
    @property
    def metadata(self) -> Dict[str, MetadataValue]:
        """Metadata key/values in file order (arrays become lists; non-UTF-8 strings keep their bytes
        via surrogateescape). Cached: do not mutate."""
    @property
    def metadata_types(self) -> Dict[str, str]:
        """GGUF type name of each key, e.g. "UINT32" or "ARRAY[STRING]"."""
    @property
    def tensors(self) -> List[TensorInfo]:
        """Tensor infos in file order."""
    def tensor(self, name: str) -> TensorInfo:
        """The info of one tensor; KeyError if absent."""

# ---- kernels (for tests and tools) ------------------------------------------------------------------

def dequantize_row(type_name: str, data: Buffer, n: int) -> npt.NDArray[np.float32]:
    """Dequantize one weight row of ``n`` elements stored in GGUF block format ``type_name`` (its
    byte size must match exactly); returns shape ``(n,)``."""

def quantize_act(type_name: str, x: npt.ArrayLike) -> bytes:
    """Encode activations ``x`` (1-D float32, length a multiple of the activation block) in the
    activation format paired with weight type ``type_name`` (e.g. Q8_0 for Q4_0 weights); returns the
    raw block bytes."""

def vec_dot(type_name: str, w_bytes: Buffer, x: npt.ArrayLike, isa: Optional[str] = None) -> float:
    """Dot product of one weight row (raw blocks of ``type_name``) with float activations ``x``, which
    are first quantized to the paired activation format. ``isa`` picks a kernel variant (default: the
    active one); asking for an ISA the CPU lacks raises InvalidArgumentError."""

RATE_MATRIX_BYTES: int  # kernel_rate's in-cache matrix (arithmetic)
RATE_RAM_MATRIX_BYTES: int  # kernel_rate's matrix streamed from RAM

class KernelRate(TypedDict):
    decode_per_s: float  # weight elements x 1 activation row per second, one thread
    prefill_per_s: float  # weight elements x 8 activation rows per second; 0 unless the matrix fits in cache
    repack_bytes_per_s: float  # bytes/s of the gemm_x8 repack a streamed slot gets; 0: the type is not repacked
    rows: int
    cols: int
    decode_kernel: str  # "gemm_x8", "dot_rows_blockwise" or "vec_dot"
    prefill_kernel: str

def kernel_rate(type_name: str, isa: str, min_seconds: float = 0.05,
                matrix_bytes: int = ...) -> KernelRate:
    """Single-thread throughput of the type's matmul kernels on the ISA, as the engine runs them
    (native/include/edge_rt/kernel_rate.h); the GIL is released while it runs."""
    ...

# ---- integer kernels (docs/integer_spec.md; wrapped by edge_rt.quantize.intkernels) ------------------
# Codes are C-contiguous numpy arrays of exactly their width's dtype (uint8 / uint16; weights int8 codes
# or uint8 packed int4); encodings are (scale, zero_point, bits). ``isa`` None runs the active ISA.

Encoding = tuple  # (scale: float, zero_point: int, bits: int)

def int_fixed_multiplier(real: float, precision: int) -> tuple:
    """(m, s) with real ~= m * 2^-s and m of ``precision`` bits."""

def int_precision_for(acc_bound: int) -> int:
    """Multiplier bits for an accumulator bound."""

def int_gemm(a: np.ndarray, ea: Encoding, w: np.ndarray, w_bits: int, s_w: np.ndarray, ey: Encoding,
             isa: Optional[str] = None) -> np.ndarray:
    """Codes (M, N) of a (M, K) . w^T; w (N, K) int8 codes or (N, (K + 1) // 2) uint8 packed int4."""

def int_matmul(a: np.ndarray, ea: Encoding, b: np.ndarray, eb: Encoding, ey: Encoding,
               isa: Optional[str] = None) -> np.ndarray:
    """Codes (M, N) of a (M, K) . b (N, K)^T, both activations."""

def int_add(a: np.ndarray, ea: Encoding, b: np.ndarray, eb: Encoding, ey: Encoding,
            isa: Optional[str] = None) -> np.ndarray:
    """Elementwise Add of two code arrays of one shape."""

def int_mul(a: np.ndarray, ea: Encoding, b: np.ndarray, eb: Encoding, ey: Encoding,
            isa: Optional[str] = None) -> np.ndarray:
    """Elementwise Mul of two code arrays of one shape."""

def int_requantize(a: np.ndarray, ea: Encoding, ey: Encoding, isa: Optional[str] = None) -> np.ndarray:
    """Codes of ``a`` in another encoding."""

def int_rmsnorm(a: np.ndarray, ea: Encoding, g: np.ndarray, eg: Encoding, eps: float, ey: Encoding,
                isa: Optional[str] = None) -> np.ndarray:
    """RMSNorm over the last axis; g (D,) uint16 weight codes."""

def int_softmax(a: np.ndarray, table: np.ndarray, ey: Encoding, isa: Optional[str] = None) -> np.ndarray:
    """Softmax over the last axis with the input's exp table (uint32, 2^bits entries)."""

def int_lut(a: np.ndarray, table: np.ndarray, isa: Optional[str] = None) -> np.ndarray:
    """table[a] elementwise (2^bits entries of uint8 or uint16)."""

# ---- engine -----------------------------------------------------------------------------------------

class EngineInfo(TypedDict):
    arch: str
    n_vocab: int
    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_ff: int
    n_rot: int
    n_ctx_train: int
    n_ctx: int
    rope_freq_base: float
    rope_scale: float
    rope_kind: str  # "normal" or "neox"
    rms_eps: float
    tied_output: bool
    n_expert: int                # 0 for a dense model
    n_expert_used: int
    n_ff_exp: int
    n_ff_shexp: int              # 0 = no shared expert
    expert_weights_norm: bool
    n_params: int
    file_size: int
    weight_bytes: int
    kv_cache_bytes: int
    tensor_types: Dict[str, int]  # ggml type name -> number of tensors
    isa: str
    threads: int
    expert_predictor: Optional[str]

class MemoryReport(TypedDict):
    budget: int  # bytes; 0 = none
    classes: Dict[str, int]  # pinned_weights, window_slots, expert_cache, kv_cache, scratch, metadata, npu
    total: int
    streaming: bool
    window: int
    slot_bytes: int
    pinned_units: List[int]  # layer ids; n_layer = the output head
    streamed_units: List[int]
    streamed_bytes_per_token: int
    io: str  # "direct" | "buffered" | "" (resident)
    expert_cache_slots: int  # MoE under a budget: experts the cache holds; 0 otherwise
    expert_slot_bytes: int
    total_experts: int  # n_layer * n_expert

class StreamStats(TypedDict):
    bytes_read: int
    io_seconds: float
    stall_seconds: float
    acquires: int
    stalls: int

class StreamEvent(TypedDict):
    unit: int
    io_start: float
    io_end: float
    wait_start: float
    acquired: float
    released: float
    bytes: int

class ExpertPrediction(TypedDict):
    predicted: int  # experts this predictor named for the layer
    correct: int    # of which the router then selected
    needed: int     # experts the router selected in passes where the predictor ran

class ExpertLayerStats(TypedDict):
    uses: int
    hits: int
    same_layer: ExpertPrediction
    next_layer: ExpertPrediction

class ExpertStats(TypedDict):
    cache_slots: int
    slot_bytes: int
    total_experts: int
    uses: int  # (layer, expert) selections, per micro-batch
    hits: int  # cached or already being read
    misses: int  # read on demand
    bytes_read: int
    reads_on_demand: int
    reads_speculative: int
    speculative_unused: int
    predictions_dropped: int
    stall_seconds: float
    layers: List[ExpertLayerStats]

class ExpertReadEvent(TypedDict):
    layer: int
    expert: int
    speculative: bool
    io_start: float
    io_end: float

class BudgetFloor(TypedDict):
    weights: int           # one window slot + embedding row buffer (MoE: + routers and one expert)
    expert_predictor: int  # the predictor's weights; 0 without one
    kv_cache: int
    scratch: int
    metadata: int          # parsed GGUF metadata the engine keeps + EngineOptions.host_metadata_bytes
    npu: int               # EngineOptions.npu_bytes: the NPU prefill stage
    total: int             # the least mem_budget that loads

MAX_THREADS: int  # Engine's threads are in [1, MAX_THREADS]
MAX_N_CTX: int  # and n_ctx in [1, MAX_N_CTX]

class EngineOptions:
    """Settings of an Engine (native/include/edge_rt/engine_options.h), one property per load() keyword.
    0 means the default for every count and size. Names are parsed when set (InvalidArgumentError);
    ranges are checked by check_options() and by Engine()."""

    threads: int  # worker threads, [1, MAX_THREADS]
    n_ctx: int  # KV cache capacity in tokens, [1, MAX_N_CTX]
    n_ubatch: int  # prefill micro-batch; 0 = 256, or 128 under a budget or for MoE
    mem_budget: int  # hard cap in bytes on pinned weights + window slots + KV cache + scratch; 0 = none
    window: int  # streaming window slots; 0 = the largest that fits
    io_mode: str  # "auto", "direct" (O_DIRECT) or "buffered" (pread + fadvise DONTNEED)
    prefetch: bool  # False = each streamed layer read when needed, no overlap
    expert_cache_bytes: int  # MoE under a budget: bytes of the expert cache; 0 = what the budget leaves
    expert_policy: str  # "lfu" (decayed use counts) or "lru"
    expert_prefetch: str  # "next", "same", "both" or "off"
    speculative_cap_bytes: int  # speculative expert bytes in flight; 0 = 2 * n_expert_used experts
    prediction_width: int  # experts predicted per token and layer; 0 = n_expert_used
    expert_predictor: str  # sidecar GGUF for next-layer prediction; "" = the router
    expert_predictor_optional: bool  # found next to the model: left out (see Engine.notes) when unused or unusable
    host_metadata_bytes: int  # caller-held metadata (the Python tokenizer), counted in the metadata class
    npu_bytes: int  # the caller's NPU prefill stage (graph weights and buffers), counted in the npu class
    repack: bool  # Q4_0/Q4_K summed as llama.cpp's repacked copies (default); False: as --no-repack
    def __init__(self) -> None: ...

def check_options(options: EngineOptions) -> None:
    """InvalidArgumentError for an option out of range (the checks Engine() makes first)."""

def minimum_budget(path: str, options: EngineOptions) -> BudgetFloor:
    """The least ``mem_budget`` an Engine with these options (and the default window and expert
    cache) loads with (GGUF header only).

    Raises as ``Engine(...)`` for the options, the file, the model and the predictor."""
    ...

IO_CHUNK_BYTES: int  # one streaming read request
IO_THREADS: int  # streaming reads in flight

class PlannedUnit(TypedDict):
    unit: int  # layer id; n_layer = the output head
    tensors: List[str]
    bytes: int  # packed bytes of its 4096-aligned runs
    runs: int
    pinned: bool

class Plan(TypedDict):
    streaming: bool  # a mem_budget was set (else every unit pinned: a resident load)
    units: List[PlannedUnit]
    streamed: List[int]
    window: int
    slot_bytes: int
    pinned_bytes: int
    embd_buf_bytes: int
    moe: bool
    router_bytes: int
    expert_slot_bytes: int
    expert_slots: int
    total_experts: int
    pinned_class_bytes: int
    window_class_bytes: int
    expert_class_bytes: int
    reserved: int  # bytes the other classes hold before the weights are placed
    minimum_budget: BudgetFloor

def plan(path: str, options: EngineOptions) -> Plan:
    """The placement ``Engine(path, options)`` would make (GGUF header only). Raises as ``Engine(...)``,
    including OutOfMemoryError below the minimum budget."""
    ...

class Engine:
    """A loaded model with its KV cache. Not thread-safe: one call at a time per Engine.

    Raises ModelIOError, ModelFormatError, UnsupportedArchitectureError, UnsupportedTypeError,
    InvalidArgumentError or OutOfMemoryError.
    """

    def __init__(self, path: str, options: EngineOptions) -> None: ...
    @property
    def notes(self) -> List[str]:
        """What the engine left out instead of failing (an unusable optional expert predictor)."""
    def eval(self, tokens: npt.NDArray[np.int32], all_logits: bool = False) -> npt.NDArray[np.float32]:
        """Run ``tokens`` (1-D int32, n >= 1) at positions ``n_past .. n_past+n-1`` and append them to
        the KV cache.

        Returns float32 logits of shape ``(n, n_vocab)`` when ``all_logits``, else ``(1, n_vocab)`` for
        the last token. Raises InvalidArgumentError if ``n_past + n > n_ctx`` or a token id is outside
        ``[0, n_vocab)``; KeyboardInterrupt if interrupted by a signal.
        """
    def reset(self) -> None:
        """Clear the KV cache (``n_past`` becomes 0)."""
    def truncate(self, n_past: int) -> None:
        """Keep only the first ``n_past`` positions of the KV cache (``0 <= n_past <= self.n_past``)."""
    def write_kv(self, layer: int, first: int, k: npt.NDArray[np.float32], v: npt.NDArray[np.float32]) -> None:
        """Store K and V rows ``(n, kv_dim)`` (K after RoPE, in the model's rotation layout) at positions
        ``[first, first + n)`` of ``layer`` as fp16. ``first`` may not leave a gap past the rows the layer
        holds; ``first + n <= n_ctx``. InvalidArgumentError otherwise."""
    def commit_kv(self, n_past: int) -> None:
        """Append the rows write_kv stored: ``n_past`` advances to the argument (every layer must hold them)."""
    def read_kv(self, layer: int, first: int, n: int) -> Tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """(k, v) ``(n, kv_dim)`` float32: cached rows ``[first, first + n)`` of ``layer`` (within ``n_past``)."""
    @property
    def kv_dim(self) -> int: ...
    @property
    def n_past(self) -> int: ...
    @property
    def n_ctx(self) -> int: ...
    @property
    def n_vocab(self) -> int: ...
    @property
    def threads(self) -> int: ...
    def info(self) -> EngineInfo: ...
    def memory_report(self) -> MemoryReport: ...
    def stream_stats(self) -> StreamStats: ...
    def stream_events(self) -> List[StreamEvent]: ...
    def expert_stats(self) -> ExpertStats: ...
    def expert_events(self) -> List[ExpertReadEvent]: ...
    def clear_stream_telemetry(self) -> None:
        """Zero the stream and expert counters and drop the timeline events."""
    def set_observer(self, observer: Optional[Any]) -> None:
        """Install an evaluation observer (the edge_rt.observer.EvalObserver contract), or remove it with None."""

class testing:
    """Hooks for edge_rt's own tests; not an API."""

    @staticmethod
    def inject_io_fault(options: EngineOptions, after_bytes: int, short_read: bool = False) -> None:
        """Streaming reads fail (EIO, or a short read) once after_bytes have been read."""

    @staticmethod
    def c_pre_tokenizers() -> List[Dict[str, Any]]:
        """The tokenizer.ggml.pre names the C tokenizer runs: name, split, ignore_merges, add_bos, bos_is_null."""

    class CTokenizer:
        """The C ABI's tokenizer (native/include/edge_rt/tokenizer.h), for parity tests on vocabulary files."""

        def __init__(self, path: str) -> None: ...
        def tokenize(self, text: bytes, add_special: bool = True, parse_special: bool = False) -> List[int]: ...
        def detokenize(self, ids: List[int], special: bool = False) -> bytes: ...
        @property
        def can_tokenize(self) -> bool: ...
        def is_eog(self, token: int) -> bool: ...
