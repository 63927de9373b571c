"""``edge-rt export``: a dense llama/qwen2/qwen3 model as integer-only ONNX QDQ graphs for NPUs.

Steps: read the model (GGUF master, Hugging Face folder, or a quantized GGUF dequantized to float);
rotate the residual stream (residual_rotation.py); build the float graph (onnx_graph.py) and run it
with ONNX Runtime's CPU EP over calibration text to measure every quantization point's range (with
``range_method="search"``: a first pass picks the SmoothQuant migration, the second also gathers each
projection input's x x^T for the weights' clip search and GPTQ rounding, onnx_ranges.py); choose the
extra 16-bit islands by the error they remove (onnx_islands.py); build the QDQ prefill (T tokens) and
decode (1 token) graphs with those encodings (int4 weights block-wise by default: onnx_blocks.py);
write them, the host's embedding table and ``manifest.json`` into a staging folder that becomes OUT_DIR
only when complete. Optionally compile HTP context binaries (``target='htp'``) and check every graph on
the HTP emulator (devices/qnn_htp.py).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, FrozenSet, List, Optional, Tuple

import numpy as np

from ..errors import InvalidArgumentError, ModelIOError, UnsupportedArchitectureError
from .evaluate import log_softmax
from .onnx_graph import MASK_VALUE, OPSET, SCHEMES, Dims, Encoding, GraphBuilder
from .onnx_islands import KL_TARGET, MIN_GAIN, MIN_GAIN_KL, IslandSearch, mean_kl, parse_islands, search_islands
from .onnx_runner import GraphRunner, float_session
from .onnx_weight_bits import WeightBitsChoice, choose_weight_bits, layer_weights
from .residual_rotation import ROTATION_FILE

Progress = Callable[[str, int, int], None]

DENSE_ARCHS = ("llama", "qwen2", "qwen3")
#: Calibration windows hold this many prefill chunks (fewer when the cache is shorter).
CALIB_WINDOW_CHUNKS = 4
#: Calibration tokens used at most by default.
DEFAULT_CALIB_TOKENS = 4096
#: Calibration windows the island search evaluates (each a full run of the QDQ graph per candidate).
ISLAND_WINDOWS = 4
#: int4 weights block-wise (QNN's LPBQ, onnx_blocks.py) with blocks of this many input columns; 0: per
#: channel. The sizes offered are those the HTP emulator was seen to take. 16: SmolLM2-135M's W4A8 export
#: is +6.6% perplexity against its float model at 16, +10.1% at 32 (benchmarks/RESULTS.md), for 6% more
#: graph bytes (uint8 block scales; 4-bit on the HTP: 4.25 bits per weight instead of 4.125).
DEFAULT_W4_BLOCK = 16
W4_BLOCKS = (0, 16, 32, 64)
FORMAT = "edge_rt.onnx_export/2"
#: Manifests this version reads: /1 had no residual rotation and no extra islands.
READABLE_FORMATS = (FORMAT, "edge_rt.onnx_export/1")


@dataclass
class ExportResult:
    out_dir: Path
    scheme: str
    graphs: Dict[str, Path]
    bytes: int
    n_calib_tokens: int
    seconds: float
    quantized_source: Optional[str] = None     # e.g. "Q4_1": the input was quantized, dequantized first
    check: Optional[Dict[str, Any]] = None
    notes: List[str] = field(default_factory=list)


def open_export_source(path: Path) -> Tuple[Any, Optional[str]]:
    """(SourceModel, the dominant quantized type if the input GGUF was quantized, else None)."""
    from .gguf_io import read_gguf
    from .pipeline import open_source

    path = Path(path)
    if path.is_file():
        with open(path, "rb") as f:
            is_gguf = f.read(4) == b"GGUF"
        if is_gguf:
            src = read_gguf(path, dequantize=True)
            qtypes = [t.src_type for t in src.tensors if t.src_type not in ("F32", "F16", "BF16")]
            return src, (max(set(qtypes), key=qtypes.count) if qtypes else None)
    return open_source(path), None


def model_dims(src: Any) -> Dims:
    md = src.metadata()
    a = src.arch
    if a not in DENSE_ARCHS or int(md.get(f"{a}.expert_count", 0) or 0) > 0:
        raise UnsupportedArchitectureError(
            f"[export] {src.path}: '{a}' with experts is a Mixture-of-Experts model; MoE export to ONNX is not "
            f"supported (dense {', '.join(DENSE_ARCHS)} only)" if a in DENSE_ARCHS or "moe" in a else
            f"[export] {src.path}: architecture '{a}' cannot be exported; supported: {', '.join(DENSE_ARCHS)}")
    g = lambda k, d=None: md.get(f"{a}.{k}", d)  # noqa: E731
    n_embd, n_head = int(g("embedding_length")), int(g("attention.head_count"))
    head_dim = int(g("attention.key_length", n_embd // n_head))
    scale_type = g("rope.scaling.type")
    n_vocab = src.tensor("token_embd.weight").shape[0]
    d = Dims(arch=a, n_layer=int(g("block_count")), n_embd=n_embd, n_head=n_head,
             n_head_kv=int(g("attention.head_count_kv", n_head)), head_dim=head_dim,
             n_rot=int(g("rope.dimension_count", head_dim)), n_vocab=n_vocab,
             eps=float(g("attention.layer_norm_rms_epsilon", 1e-5)), theta=float(g("rope.freq_base", 10000.0)),
             rope_scale=1.0 / float(g("rope.scaling.factor", 1.0)) if scale_type == "linear" else 1.0,
             neox=a != "llama")
    if d.n_head % d.n_head_kv:
        raise UnsupportedArchitectureError(f"[export] {src.path}: {d.n_head} heads is not a multiple of "
                                           f"{d.n_head_kv} KV heads")
    names = {t.name for t in src.tensors}
    if "blk.0.attn_q_norm.weight" in names and d.n_rot != d.head_dim:
        raise UnsupportedArchitectureError(f"[export] {src.path}: Q/K norms with partial RoPE are not supported")
    return d


def calibration_ids(tok: Any, text: str, n_tokens: int, n_cache: int, max_tokens: int) -> Tuple[List[List[int]], int]:
    """Calibration windows (each CALIB_WINDOW_CHUNKS chunks, fewer if the cache is short) and the
    window length. Too little text is an error naming the minimum."""
    chunks = max(1, min(CALIB_WINDOW_CHUNKS, n_cache // n_tokens))
    win = chunks * n_tokens
    ids = tok.tokenize(text, add_special=False)[:max_tokens]
    if len(ids) < win:
        raise InvalidArgumentError(
            f"[export] calibration text has {len(ids)} tokens; at least {win} are needed ({chunks} chunk(s) of "
            f"{n_tokens} tokens, --chunk); give a longer --calib file")
    return [ids[i:i + win] for i in range(0, len(ids) - win + 1, win)], win


def measure_ranges(d: Dims, weights: Dict[str, np.ndarray], windows: List[List[int]], n_tokens: int, n_cache: int,
                   scheme: str, threads: Optional[int] = None, progress: Optional[Progress] = None,
                   stats_for: Optional[Dict[str, str]] = None, stage: str = "calibrate",
                   ) -> Tuple[Dict[str, Tuple[float, float]], Dict[str, int], Dict[str, Any]]:
    """Min/max of every quantization point over the calibration windows, from the float graph on ORT
    CPU; and InputStats (onnx_ranges.py) of the points ``stats_for`` maps to their tensor names."""
    from .onnx_ranges import InputStats, as_rows

    spec = GraphBuilder(d, weights, SCHEMES[scheme], n_tokens, n_cache).build("calibration")
    sess = float_session(spec.model.SerializeToString(), threads)
    ranges: Dict[str, List[float]] = {}
    stats: Dict[str, Any] = {}
    new_names = {f"new_{k}.{il}": f"l{il}.cache_{k}" for il in range(d.n_layer) for k in "kv"}

    def see(res: Dict[str, np.ndarray]) -> None:
        for point in stats_for or {}:
            x = as_rows(point, res[point])
            stats.setdefault(point, InputStats.empty(x.shape[1])).add(x)
        for name, arr in res.items():
            point = new_names.get(name, name)
            if point not in spec.points:
                continue
            lo, hi = float(arr.min()), float(arr.max())
            r = ranges.setdefault(point, [lo, hi])
            r[0], r[1] = min(r[0], lo), max(r[1], hi)

    runner = GraphRunner(sess, d, weights["token_embd.weight"], n_tokens, n_cache)
    for i, w in enumerate(windows):
        runner.window(w, on_outputs=see, logits=False)
        if progress:
            progress(stage, i + 1, len(windows))
    emb = weights["token_embd.weight"]
    ranges["in.x"] = [float(emb.min()), float(emb.max())]       # any token may come: the whole table
    ranges["in.cos"] = ranges["in.sin"] = [-1.0, 1.0]
    ranges["in.mask"] = [MASK_VALUE, 0.0]
    return {k: (v[0], v[1]) for k, v in ranges.items()}, spec.points, stats


def _staging(out_dir: Path) -> Path:
    return out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}"


def _commit(staging: Path, out_dir: Path) -> None:
    """Replace ``out_dir`` by the complete ``staging`` folder (the old one removed only after)."""
    old = None
    if out_dir.exists():
        old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
        os.rename(out_dir, old)
    os.rename(staging, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def export_onnx(model: Path, out_dir: Path, *, scheme: str = "w8a8", calib: Optional[Path] = None,
                chunk: int = 64, ctx: int = 512, force: bool = False, target: Optional[str] = None,
                soc: str = "sm8650", check: Optional[str] = None, max_calib_tokens: int = DEFAULT_CALIB_TOKENS,
                threads: Optional[int] = None, progress: Optional[Progress] = None,
                range_method: str = "search", rotate: bool = True, islands: str = "auto",
                target_size: Optional[int] = None, w4_block: int = DEFAULT_W4_BLOCK) -> ExportResult:
    """Export ``model`` to ``out_dir`` (see the module docstring). Raises on bad input before any
    folder is made; on any failure nothing is left at ``out_dir`` (an existing one is kept)."""
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    if scheme not in SCHEMES:
        raise InvalidArgumentError(f"[export] unknown scheme {scheme!r}; expected one of {', '.join(SCHEMES)}")
    if range_method not in ("search", "minmax"):
        raise InvalidArgumentError(f"[export] unknown --ranges {range_method!r}; expected search or minmax")
    if w4_block not in W4_BLOCKS:
        raise InvalidArgumentError(f"[export] --w4-block {w4_block}: expected one of "
                                   f"{', '.join(map(str, W4_BLOCKS))} (0: int4 weights per channel)")
    if chunk < 1 or ctx < chunk:
        raise InvalidArgumentError(f"[export] --ctx ({ctx}) must be at least --chunk ({chunk}), and --chunk >= 1")
    for what, v in (("--target", target), ("--check", check)):
        if v not in (None, "htp"):
            raise InvalidArgumentError(f"[export] {what} {v!r}: only 'htp' (Qualcomm Hexagon) is supported")
    if target or check:
        from ..devices.qnn_htp import SOCS, require_qnn

        require_qnn()
        if soc not in SOCS:
            raise InvalidArgumentError(f"[export] unknown --soc {soc!r}; known: {', '.join(SOCS)}")
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as e:
        raise ImportError('[export] ONNX export needs onnx and onnxruntime: pip install "edge-rt[onnx]"') from e
    if out_dir.exists() and not force:
        raise InvalidArgumentError(f"[export] {out_dir} exists; pass --force to replace it")
    if not out_dir.parent.is_dir():
        raise ModelIOError(f"[export] parent folder of {out_dir} does not exist")

    from ..tokenizer import Tokenizer
    from .calibrate import read_text, text_digest

    src, quantized = open_export_source(model)
    d = model_dims(src)
    if islands not in ("auto", "none"):
        parse_islands(islands, d.n_layer)          # a bad name fails before any work
    if target_size is not None and range_method != "search":
        raise InvalidArgumentError("[export] --target-size measures sensitivity with the range search's statistics; "
                                   "it needs --ranges search")
    text = read_text(calib)
    tok = Tokenizer.from_metadata(src.metadata())
    windows, win = calibration_ids(tok, text, chunk, ctx, max_calib_tokens)
    weights = {t.name: t.load() for t in src.tensors}
    rotation = None
    if rotate:
        from .residual_rotation import rotate_residual

        rotation = rotate_residual(weights, d)
    alphas: Dict[str, Any] = {}
    grams: Dict[str, np.ndarray] = {}
    if range_method == "search":
        from .onnx_ranges import projection_inputs, smooth

        inputs = projection_inputs(d)
        if SCHEMES[scheme].a_bits == 8:     # SmoothQuant first: it changes the ranges measured below
            norms = {pt: t for t, (pt, _) in inputs.items() if pt.endswith("_norm")}
            _, _, st = measure_ranges(d, weights, windows, chunk, ctx, scheme, threads, progress, stats_for=norms,
                                      stage="smoothing")
            alphas = smooth(weights, d, st, SCHEMES[scheme].w_bits, w4_block=w4_block)
        ranges, _, st = measure_ranges(d, weights, windows, chunk, ctx, scheme, threads, progress,
                                            stats_for={pt: t for t, (pt, _) in inputs.items()})
        grams = {t: st[pt].gram for t, (pt, _) in inputs.items()}
    else:
        ranges, _, _ = measure_ranges(d, weights, windows, chunk, ctx, scheme, threads, progress)
    trials = _Trials(d, weights, scheme, windows, chunk, ctx, ranges, grams, threads,
                     output_errors=target_size is not None, w4_block=w4_block)
    chosen, search = _choose_islands(islands, trials, progress)
    bits_choice = _choose_weight_bits(target_size, trials, chosen, progress) if target_size is not None else None
    weight_bits = bits_choice.weight_bits(d) if bits_choice else None
    enc: Dict[str, Encoding] = {}          # filled by the prefill build, shared with the decode build

    staging = _staging(out_dir)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        graphs, specs = {}, {}
        for gname, T in (("prefill", chunk), ("decode", 1)):
            spec = trials.builder(T, chosen, weight_bits, encodings=enc).build(gname)
            import onnx

            # (onnx.checker does not know SimplifiedLayerNormalization, which ONNX Runtime registers in the
            # default domain; loading each graph in ORT is the validation)
            path = staging / f"{gname}.onnx"
            onnx.save(spec.model, str(path))
            graphs[gname], specs[gname] = path, spec
            if progress:
                progress("write", len(graphs), 2)
        np.save(staging / "embeddings.npy", weights["token_embd.weight"].astype(np.float16))
        if rotation is not None:
            np.save(staging / ROTATION_FILE, rotation)
        notes = []
        if target == "htp":
            from ..devices.qnn_htp import htp_session

            for gname, path in list(graphs.items()):
                htp_session(str(path), soc, context_file=staging / f"{gname}.{soc}_ctx.onnx")
            notes.append(f"HTP context binaries for {soc} written beside the graphs")
        manifest = _manifest(src, quantized, d, scheme, chunk, ctx, enc, specs, text_digest(text),
                             len(windows) * win, soc if target else None, w4_block)
        manifest["islands"] = {"extra_16_bit": sorted(chosen), "groups": search.groups if search else None,
                               "chosen_by": islands if search is None else
                               f"search: calibration KL vs the float graph, target {KL_TARGET}, "
                               f"min gain per group {MIN_GAIN:.0%} or {MIN_GAIN_KL}",
                               "trace": search.trace if search else []}
        manifest["weight_bits"] = bits_choice.to_json() if bits_choice else {
            "layers": "all int%d (the scheme's)" % SCHEMES[scheme].w_bits}
        manifest["residual_rotation"] = (
            {"file": ROTATION_FILE, "what": "the residual stream is rotated by this orthogonal Q (float32, "
             "[n_embd, n_embd]): embeddings.npy holds E Q; a GGUF row r corresponds to row r of E = rows @ Q^T"}
            if rotation is not None else None)
        manifest["calibration"]["ranges"] = (
            "SmoothQuant alpha searched per norm, then min/max (ORT CPU, float graph), weight clip per row "
            "minimizing output error" if range_method == "search" else "min/max (ORT CPU, float graph)")
        manifest["calibration"]["smoothquant_alpha"] = alphas
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
        _commit(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    res = ExportResult(out_dir=out_dir, scheme=scheme, graphs={k: out_dir / v.name for k, v in graphs.items()},
                       bytes=sum(f.stat().st_size for f in out_dir.iterdir() if f.is_file()),
                       n_calib_tokens=len(windows) * win, seconds=time.perf_counter() - t0,
                       quantized_source=quantized, notes=notes)
    if bits_choice is not None:
        int8 = sorted(il for il, b in bits_choice.bits.items() if b == 8)
        res.notes.append(f"--target-size {target_size:,} bytes: {len(int8)} of {d.n_layer} layers int8 "
                         f"({', '.join(map(str, int8)) or 'none'}), the rest int4; prefill.onnx is "
                         f"{(out_dir / 'prefill.onnx').stat().st_size:,} bytes")
    if quantized:
        res.notes.append(f"the source was quantized ({quantized}); it was dequantized to float first")
    if check == "htp":
        from .onnx_check import check_htp

        res.check = check_htp(out_dir, soc=soc, progress=progress)
    return res


class _Trials:
    """Trial QDQ prefill graphs of the export in progress (some islands, some weight widths) and their
    calibration KL against the float graph (QDQ semantics on ORT's CPU EP), on the first
    ``ISLAND_WINDOWS`` calibration windows. Rounding and output errors are shared with the final build."""

    def __init__(self, d: Dims, weights: Dict[str, np.ndarray], scheme: str, windows: List[List[int]], chunk: int,
                 ctx: int, ranges: Dict[str, Tuple[float, float]], grams: Dict[str, np.ndarray],
                 threads: Optional[int], output_errors: bool = False, w4_block: int = 0) -> None:
        self.d, self.w, self.s, self.chunk, self.ctx = d, weights, SCHEMES[scheme], chunk, ctx
        self.w4_block = w4_block
        self.windows, self.ranges, self.grams, self.threads = windows[:ISLAND_WINDOWS], ranges, grams, threads
        self.clips: Dict[Any, np.ndarray] = {}
        self.rounded: Dict[Any, Any] = {}
        # each rounding's output error, for --target-size (kept from the first rounding on: later builds reuse it)
        self.errors: Optional[Dict[Any, float]] = {} if output_errors else None
        self._ref: Optional[List[np.ndarray]] = None

    def builder(self, T: int, islands: FrozenSet[str] = frozenset(), weight_bits: Optional[Dict[str, int]] = None,
                encodings: Optional[Dict[str, Encoding]] = None, rounding: bool = True) -> GraphBuilder:
        return GraphBuilder(self.d, self.w, self.s, T, self.ctx, encodings=encodings, ranges=self.ranges,
                            clips=self.clips if rounding else {}, grams=self.grams if rounding else {},
                            rounded=self.rounded if rounding else {}, islands=islands, weight_bits=weight_bits,
                            errors=self.errors, w4_block=self.w4_block)

    def kl(self, islands: FrozenSet[str] = frozenset(), weight_bits: Optional[Dict[str, int]] = None) -> float:
        d, chunk, ctx = self.d, self.chunk, self.ctx
        if self._ref is None:
            fspec = GraphBuilder(d, self.w, self.s, chunk, ctx).build("float", calibration_outputs=False)
            frun = GraphRunner(float_session(fspec.model.SerializeToString(), self.threads), d,
                               self.w["token_embd.weight"], chunk, ctx)
            self._ref = [log_softmax(frun.window(w)) for w in self.windows]
        b = self.builder(chunk, islands, weight_bits)
        g = b.build("prefill")
        enc = b.enc
        run = GraphRunner(float_session(g.model.SerializeToString(), self.threads, optimize=False), d,
                          self.w["token_embd.weight"], chunk, ctx, cache_dtype=enc["l0.cache_k"].dtype,
                          cache_zero=[(enc[f"l{i}.cache_k"].zero_point, enc[f"l{i}.cache_v"].zero_point)
                                      for i in range(d.n_layer)])
        return mean_kl(self._ref, [run.window(w) for w in self.windows])


def _choose_islands(spec: str, trials: _Trials,
                    progress: Optional[Progress]) -> Tuple[FrozenSet[str], Optional[IslandSearch]]:
    """The extra 16-bit islands: none, a list (``parse_islands``) or the search (``auto``)."""
    if spec == "none" or trials.s.a_bits == 16:
        return frozenset(), None
    if spec != "auto":
        return parse_islands(spec, trials.d.n_layer), None
    found = search_islands(trials.d, trials.kl, progress)
    return found.chosen, found


def _choose_weight_bits(target_bytes: int, trials: _Trials, islands: FrozenSet[str],
                        progress: Optional[Progress]) -> WeightBitsChoice:
    d = trials.d
    every4 = {w: 4 for il in range(d.n_layer) for w in layer_weights(d, il)}
    smallest, largest = (trials.builder(trials.chunk, islands, {w: b for w in every4}, rounding=False)
                         .build("size").model.ByteSize() for b in (4, 8))
    return choose_weight_bits(d, trials.w, target_bytes, smallest, lambda bits: trials.kl(islands, bits),
                              lambda g, b: trials.errors[(g, b)], progress, w4_block=trials.w4_block,
                              graph_bytes_int8=largest)


def _manifest(src: Any, quantized: Optional[str], d: Dims, scheme: str, chunk: int, ctx: int,
              enc: Dict[str, Encoding], specs: Dict[str, Any], digest: str, n_calib: int,
              soc: Optional[str], w4_block: int) -> Dict[str, Any]:
    s = SCHEMES[scheme]
    kv_dtype = enc["l0.cache_k"].to_json()["dtype"]
    graphs = {}
    for gname in specs:
        T = chunk if gname == "prefill" else 1
        cache = [d.n_head_kv, ctx, d.head_dim]
        graphs[gname] = {
            "file": f"{gname}.onnx", "n_tokens": T, "n_cache": ctx,
            "inputs": {"x": ["float32", [T, d.n_embd]], "cos": ["float32", [T, d.head_dim]],
                       "sin": ["float32", [T, d.head_dim]], "mask": ["float32", [T, ctx + T]],
                       "past_k.{i}": [kv_dtype, cache], "past_v.{i}": [kv_dtype, cache]},
            "outputs": {"logits": ["float32", [T, d.n_vocab]],
                        "new_k.{i}": [kv_dtype, [d.n_head_kv, T, d.head_dim]],
                        "new_v.{i}": [kv_dtype, [d.n_head_kv, T, d.head_dim]]},
        }
        if soc:
            graphs[gname]["context_binary"] = f"{gname}.{soc}_ctx.onnx"     # EPContext model; its _qnn.bin beside
    weights = {}
    for spec in specs.values():
        weights.update(spec.weights)
    return {
        "format": FORMAT, "opset": OPSET,
        "scheme": {"name": scheme, "weight_bits": s.w_bits, "activation_bits": s.a_bits, "lm_head_weight_bits": 8,
                   "int4_weights": (f"block-wise (QNN LPBQ): blocks of {w4_block} input columns, a 4-bit integer "
                                    "scale per block under a float scale per output channel, where the block "
                                    "divides K; else per output channel" if w4_block else "per output channel"),
                   "kv_cache": kv_dtype, "layout": "MobileQuant: 16-bit residual stream, norm inputs/weights, "
                   "QK^T, masked scores, softmax output, lm_head input/output"},
        "source": {"path": str(Path(src.path).resolve()), "arch": d.arch,
                   "quantized": quantized is not None, "quantized_type": quantized,
                   "note": (f"source was {quantized}, dequantized to float before export" if quantized else
                            "float master")},
        "tokenizer": {"source": str(Path(src.path).resolve())},
        "dims": d.__dict__,
        "graphs": graphs,
        "host": {"embedding_gather": "runs on the host CPU: embeddings.npy (float16, [n_vocab, n_embd]) rows "
                 "are the graph input x",
                 "rope": "cos/sin tables in NEOX-halves layout (llama's Q/K rows are permuted to it); "
                 "1 and 0 past n_rot",
                 "mask_value": MASK_VALUE,
                 "cache": "new_k/new_v (the chunk's entries, cache encoding) go to slots [n_past, n_past + T); "
                 "the chunk itself sits at attention slots C..C+T-1"},
        "calibration": {"tokens": n_calib, "text_sha256_16": digest, "ranges": "min/max (ORT CPU, float graph)"},
        "activations": {p: e.to_json() for p, e in enc.items()},
        "weights": weights,
    }
