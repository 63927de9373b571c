"""``edge-rt quantize``: read a master, calibrate, choose types, write the GGUF.

Stages, each reported through ``progress(stage, done, total, detail)``:

1. open the input (GGUF master or Hugging Face directory) and check every tensor is finite;
2. calibration (activation statistics from running the master on text, or loaded from ``.npz``);
3. for ``target_bpw`` / ``target_bytes``: per-tensor sensitivity and the budgeted search
   (``quantize.sensitivity``, ``quantize.mixed``);
4. encode and write, tensor by tensor.

The result summarises the file (size, bits per weight, tensors and bytes per type, seconds).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..atomic_io import write_text_atomic
from ..errors import EdgeRTError, InvalidArgumentError, ModelFormatError, ModelIOError
from . import codec
from .block_types import TYPE_NAMES
from .calibrate import DEFAULT_CALIB_TOKENS, CalibStats, calibrate, read_text, token_windows
from .gguf_io import SourceModel, overhead_bytes, read_gguf, write_gguf
from .rules import FILE_TYPE, file_type_of, is_quantizable, plan_uniform
from .sensitivity import (
    DEFAULT_CANDIDATES,
    METHODS,
    Sensitivity,
    SwapEvaluator,
    base_types,
    encode_tensor,
    measure_sensitivity,
    searchable,
)

Progress = Callable[[str, int, int, str], None]

#: Types ``--type`` accepts: every type of the registry.
UNIFORM_TYPES = TYPE_NAMES
#: Tokens of calibration text the sensitivity runs use (a subset of the calibration tokens).
DEFAULT_SENS_TOKENS = 1024


@dataclass
class QuantizeResult:
    out: Path
    file_size: int
    n_params: int
    tensor_bytes: int
    types: Dict[str, str]
    per_type: Dict[str, Dict[str, int]]
    seconds: float
    stage_seconds: Dict[str, float] = field(default_factory=dict)
    calib: Optional[str] = None
    outputs: Dict[str, Path] = field(default_factory=dict)
    predicted_kl: Optional[float] = None
    notes: List[str] = field(default_factory=list)
    rounding: Optional[str] = None   # how levels were chosen: "GPTQ error feedback" or "nearest level"

    @property
    def bpw(self) -> float:
        return 8.0 * self.tensor_bytes / max(self.n_params, 1)


def open_source(path: Path) -> SourceModel:
    """A GGUF master file or a Hugging Face checkpoint directory."""
    path = Path(path)
    if not path.exists():
        raise ModelIOError(f"[quantize] input not found: {path}")
    if path.is_dir():
        from .safetensors_io import read_hf_dir

        return read_hf_dir(path)
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise ModelFormatError(f"[quantize] {path} is neither a GGUF file nor a Hugging Face directory")
    return read_gguf(path)


def check_finite(src: SourceModel, progress: Optional[Progress] = None) -> None:
    """NaN or Inf anywhere: an error naming the tensor and the first bad element."""
    for i, t in enumerate(src.tensors):
        x = t.load()
        bad = ~np.isfinite(x)
        if bad.any():
            idx = tuple(int(v) for v in np.argwhere(bad)[0])
            what = "NaN" if np.isnan(x[idx]) else "Inf"
            raise ModelFormatError(f"[quantize] tensor '{t.name}' has {int(bad.sum())} non-finite weights "
                                   f"({what} at index {idx}); fix the checkpoint before quantizing")
        if progress:
            progress("check", i + 1, len(src.tensors), t.name)


def write_master(src: SourceModel, out: Path) -> Path:
    """The input at full precision as GGUF (what the engine runs for calibration and evaluation)."""
    types = base_types(src)
    write_gguf(src, out, types, lambda t, ty: encode_tensor(t, ty, None),
               file_type=FILE_TYPE["F16"] if "F16" in types.values() else FILE_TYPE["F32"])
    return out


def engine_backend(master: Path, threads: Optional[int]) -> Tuple[str, Optional[str]]:
    """'edge_rt' when the engine loads the master, else 'llama_cpp' (with the reason)."""
    from ..loading import load

    try:
        with load(master, threads=threads):
            return "edge_rt", None
    except (EdgeRTError, ValueError) as e:
        import importlib.util

        if importlib.util.find_spec("llama_cpp") is None:
            raise
        return "llama_cpp", " ".join(str(e).split())


def quantize_model(inp: Path, out: Path, *, qtype: Optional[str] = None, target_bpw: Optional[float] = None,
                   target_bytes: Optional[int] = None, calib_text: Optional[Path] = None, use_calib: bool = True,
                   load_calib: Optional[Path] = None, save_calib: Optional[Path] = None,
                   calib_tokens: int = DEFAULT_CALIB_TOKENS, candidates: Sequence[str] = DEFAULT_CANDIDATES,
                   method: str = "calibrated", sens_tokens: int = DEFAULT_SENS_TOKENS,
                   load_sensitivity: Optional[Path] = None, report: bool = True, plot: Optional[Path] = None,
                   threads: Optional[int] = None, backend: Optional[str] = None, gptq: bool = True,
                   progress: Optional[Progress] = None) -> QuantizeResult:
    """Quantize ``inp`` into ``out`` (one of ``qtype`` / ``target_bpw`` / ``target_bytes``).

    ``gptq``: with calibration, record each matrix's input second moments and choose levels by GPTQ
    error feedback (quantize/gptq.py) for every block type; the scales are the same search either way.

    Report files (mixed precision, ``report=True``) go next to ``out``: ``OUT.recipe.json``,
    ``OUT.tensor-types.txt`` (llama-quantize rules), ``OUT.sensitivity.tsv``, ``OUT.sensitivity.json``.
    """
    t_start = time.perf_counter()
    stage_s: Dict[str, float] = {}
    notes: List[str] = []
    modes = sum(x is not None for x in (qtype, target_bpw, target_bytes))
    if modes != 1:
        raise InvalidArgumentError("[quantize] give exactly one of --type, --target-bpw, --target-size")
    if qtype is not None:
        qtype = qtype.upper()
        if qtype not in UNIFORM_TYPES:
            raise InvalidArgumentError(f"[quantize] unknown --type {qtype!r}; "
                                       f"expected one of {', '.join(UNIFORM_TYPES)}")
    cands = tuple(c.upper() for c in candidates)
    for c in cands:
        if c not in codec.ALL_TYPES or c in ("F32",):
            raise InvalidArgumentError(f"[quantize] unknown candidate type {c!r}")
    out = Path(out)
    inp = Path(inp)
    if out.resolve() == inp.resolve():
        raise InvalidArgumentError("[quantize] OUT must differ from IN")
    if out.is_dir():
        raise InvalidArgumentError(f"[quantize] OUT {out} is a directory; give a file path")
    if save_calib is not None:
        save_calib = Path(save_calib)
        if save_calib.resolve() in (inp.resolve(), out.resolve()):
            raise InvalidArgumentError(f"[quantize] --save-calib {save_calib} would overwrite "
                                       f"{'IN' if save_calib.resolve() == inp.resolve() else 'OUT'}; give another path")
        if save_calib.is_dir():
            raise InvalidArgumentError(f"[quantize] --save-calib {save_calib} is a directory; give a file path")
    if method not in METHODS:  # checked before the calibration run that precedes the sensitivity one
        raise InvalidArgumentError(f"[quantize] unknown sensitivity method {method!r}; "
                                   f"expected one of {', '.join(METHODS)}")
    if target_bpw is not None and not (0 < target_bpw <= 32):
        raise InvalidArgumentError(f"[quantize] --target-bpw must be in (0, 32], got {target_bpw}")

    t0 = time.perf_counter()
    src = open_source(inp)
    check_finite(src, progress)
    stage_s["read"] = time.perf_counter() - t0
    mixed = qtype is None
    shapes = src.shapes()
    float_out = qtype in ("F32", "F16", "BF16")

    with tempfile.TemporaryDirectory(prefix="edge_rt_quant_") as tmpd:
        master: Optional[Path] = src.path if src.path.is_file() else None

        def need_master() -> Path:
            nonlocal master
            if master is None:
                master = write_master(src, Path(tmpd) / "master.gguf")
            return master

        # ---- calibration -------------------------------------------------------------------
        stats: Optional[CalibStats] = None
        calib_desc: Optional[str] = None
        text: Optional[str] = None
        t0 = time.perf_counter()
        if load_calib is not None:
            stats = CalibStats.load(load_calib)
            stats.check_model(shapes)
            calib_desc = f"loaded {load_calib} ({stats.meta.get('n_tokens', '?')} tokens)"
            if gptq and not stats.gram and not float_out:
                notes.append(f"GPTQ off: {load_calib} has no input matrices (recorded without GPTQ); "
                             "calibrate again to use it")
        elif use_calib and not float_out:
            text = read_text(calib_text)
            try:
                calib_progress = (lambda d, n: progress("calibrate", d, n, "")) if progress else None
                stats = calibrate(need_master(), text, src=src, threads=threads, max_tokens=calib_tokens,
                                  gram=gptq, progress=calib_progress)
                runner = "edge_rt" if stats.meta["runner"] == "edge_rt" else "the NumPy reference forward"
                calib_desc = (f"{stats.meta['n_tokens']} tokens of {calib_text or 'the built-in held-out code sample'}"
                              f" on {runner}")
                if stats.meta.get("runner_reason"):
                    notes.append(f"calibration ran on the NumPy reference forward: {stats.meta['runner_reason']}")
                if stats.meta.get("gram_skipped"):
                    notes.append(f"GPTQ off: {stats.meta['gram_skipped']}")
                if save_calib is None:
                    save_calib = out.with_name(out.name + ".calib.npz")
                stats.save(save_calib)
                calib_desc += f", saved to {save_calib}"
            except EdgeRTError as e:
                if isinstance(e, InvalidArgumentError):
                    raise
                msg = " ".join(str(e).split())
                notes.append(f"no calibration statistics ({msg}); quantizing without importance weights")
        if stats is not None and not gptq:
            stats.gram, stats.gram_alias = {}, {}
        rounding = "GPTQ error feedback" if stats is not None and stats.gram else "nearest level"
        if mixed and text is None:
            text = read_text(calib_text)
        stage_s["calibrate"] = time.perf_counter() - t0

        # ---- types -------------------------------------------------------------------------
        sens: Optional[Sensitivity] = None
        outputs: Dict[str, Path] = {}
        if not mixed:
            types = plan_uniform({t.name: (t.shape, t.src_type) for t in src.tensors}, qtype)
        else:
            t0 = time.perf_counter()
            types = base_types(src)
            fixed = sum(codec.tensor_bytes(types[t.name], t.shape) for t in src.tensors
                        if not is_quantizable(t.name, t.shape))
            if target_bytes is not None:
                budget = int(target_bytes) - overhead_bytes(src, types) - fixed
                target_desc = f"file size {target_bytes:,} bytes"
            else:
                budget = int(target_bpw * src.n_params / 8) - fixed
                target_desc = f"{target_bpw} bits per weight"
            if load_sensitivity is not None:
                import json

                sens = Sensitivity.from_json(json.loads(Path(load_sensitivity).read_text()))
            else:
                evaluator = None
                if method != "proxy":
                    m = need_master()
                    be = backend
                    if be is None:
                        be, why = engine_backend(m, threads)
                        if why:
                            notes.append(f"sensitivity measured with llama.cpp (edge_rt cannot run this model: {why})")
                    from .evaluate import LogitsRunner

                    with LogitsRunner(m, be, None, threads) as r:
                        ids = r.tokenize(text)
                        n_ctx = r.n_ctx
                    windows = token_windows(ids, n_ctx, sens_tokens)
                    if not windows:
                        raise InvalidArgumentError("[quantize] the calibration text has too few tokens")
                    evaluator = SwapEvaluator(src, windows, backend=be, threads=threads, n_ctx=n_ctx, stats=stats,
                                              workdir=Path(tmpd))
                try:
                    sens = measure_sensitivity(
                        src, method=method, candidates=cands, stats=stats, evaluator=evaluator,
                        progress=(lambda d, n, name: progress("sensitivity", d, n, name)) if progress else None)
                finally:
                    if evaluator is not None:
                        evaluator.close()
            from .mixed import search

            # A matrix no candidate type fits (its rows are not a multiple of their blocks) stays at
            # full precision: its bytes come out of the budget too.
            unplaced = [t for t in searchable(src) if not sens.dkl.get(t.name)]
            if unplaced:
                kept = sum(codec.tensor_bytes(types[t.name], t.shape) for t in unplaced)
                budget -= kept
                notes.append(f"{len(unplaced)} matrices fit no candidate type and stay {types[unplaced[0].name]} "
                             f"({kept:,} bytes), e.g. {unplaced[0].name} (rows of {unplaced[0].shape[-1]})")
            chosen = search(sens, budget)
            types.update(chosen)
            stage_s["search"] = time.perf_counter() - t0
            notes.append(f"target {target_desc}: {budget:,} bytes for the quantized matrices")

        # ---- write -------------------------------------------------------------------------
        t0 = time.perf_counter()
        target_ft = qtype if qtype is not None else None
        ft = file_type_of(types, shapes, target_ft)
        size = write_gguf(src, out, types, lambda t, ty: encode_tensor(t, ty, stats), file_type=ft,
                          progress=(lambda d, n, name: progress("write", d, n, name)) if progress else None)
        stage_s["write"] = time.perf_counter() - t0

    per_type: Dict[str, Dict[str, int]] = {}
    tbytes = 0
    for t in src.tensors:
        ty = types[t.name]
        b = codec.tensor_bytes(ty, t.shape)
        tbytes += b
        row = per_type.setdefault(ty, {"tensors": 0, "params": 0, "bytes": 0})
        row["tensors"] += 1
        row["params"] += t.n_elements
        row["bytes"] += b
    res = QuantizeResult(out=out, file_size=size, n_params=src.n_params, tensor_bytes=tbytes, types=types,
                         per_type=per_type, seconds=time.perf_counter() - t_start, stage_seconds=stage_s,
                         calib=calib_desc, notes=notes, rounding=rounding if not float_out else None)
    if mixed and sens is not None:
        from .mixed import predicted_kl, write_recipe, write_rules, write_sensitivity_table

        res.predicted_kl = predicted_kl(sens, {n: types[n] for n in sens.dkl})
        if report:
            import json

            base = out.with_name(out.name)
            info = {"input": str(inp), "output": str(out), "file_size": size, "bpw": res.bpw,
                    "target_bpw": target_bpw, "target_bytes": target_bytes, "calibration": calib_desc,
                    "quantizer": codec.implementation()}
            outputs["recipe"] = write_recipe(Path(str(base) + ".recipe.json"), types, sens=sens, info=info)
            outputs["rules"] = write_rules(Path(str(base) + ".tensor-types.txt"), types,
                                           [t.name for t in searchable(src)])
            outputs["sensitivity"] = write_sensitivity_table(Path(str(base) + ".sensitivity.tsv"), sens, types)
            p = Path(str(base) + ".sensitivity.json")
            write_text_atomic(p, json.dumps(sens.to_json()) + "\n")
            outputs["sensitivity_json"] = p
        if plot is not None:
            outputs["plot"] = plot_predicted(sens, src, types, plot, title=f"{inp.name}: predicted size vs KL")
    if save_calib is not None and stats is not None and load_calib is None:
        outputs["calib"] = Path(save_calib)
    res.outputs = outputs
    return res


def plot_predicted(sens: Sensitivity, src: SourceModel, chosen: Dict[str, str], path: Path, title: str) -> Path:
    """Pareto plot of PREDICTED KL (sum of sensitivities) vs tensor MiB: searched frontier, uniform
    types (llama-quantize rules), and the written mix. The benchmark draws the measured one."""
    from .mixed import frontier, mix_bytes, pareto_plot, predicted_kl

    names = list(sens.dkl)
    fixed = sum(codec.tensor_bytes(t, src.tensor(n).shape) for n, t in base_types(src).items() if n not in sens.dkl)
    lo = sum(min(sens.bytes[n].values()) for n in names if sens.bytes[n])
    hi = sum(max(sens.bytes[n].values()) for n in names if sens.bytes[n])
    pts = frontier(sens, np.linspace(lo, hi, 24))
    mib = 1 / 2**20
    searched = [((b + fixed) * mib, max(k, 1e-9)) for b, k, _ in pts]
    presets = {}
    for ty in sens.candidates:
        plan = plan_uniform({t.name: (t.shape, t.src_type) for t in src.tensors}, ty)
        mix = {n: plan[n] for n in names}
        if all(mix[n] in sens.dkl[n] for n in names):
            presets[f"{ty} (rules)"] = ((mix_bytes(sens, mix) + fixed) * mib, max(predicted_kl(sens, mix), 1e-9))
    mine = {n: chosen[n] for n in names}
    return pareto_plot(path, searched=searched, presets=presets, title=title,
                       xlabel="tensor data (MiB)", ylabel="predicted KL divergence (nats, sum of sensitivities)",
                       chosen=[("written", (mix_bytes(sens, mine) + fixed) * mib, max(predicted_kl(sens, mine), 1e-9))])
