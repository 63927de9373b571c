"""The ``edge-rt`` command line: ``run``, ``inspect``, ``bench``, ``convert``, ``quantize``, ``eval``,
``fit-predictor``; ``chat`` and ``serve`` (edge_rt/cli_chat.py).

Errors a user can cause (missing file, not a GGUF, unsupported model, bad value) print one line,
``edge-rt: error: <message>``, on stderr and exit with status 1; usage errors exit with 2 (Click's
convention); an interrupt exits with 130. Generated text goes to stdout, everything else to stderr,
so ``edge-rt run ... > out.txt`` captures only the text.
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
import warnings
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import typer

from . import __version__
from .cli_plan import PROFILE_OPTION, profile_choice
from .errors import EdgeRTError, InvalidArgumentError
from .quantize.block_types import QUANTIZED_TYPES, TYPE_NAMES

app = typer.Typer(
    name="edge-rt",
    help="On-device LLM inference on the CPU: run, inspect, benchmark, convert, quantize and evaluate GGUF models.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

#: Model used by ``edge-rt run`` without a MODEL argument, when the package ships one.
DEFAULT_MODEL = Path(__file__).resolve().parent / "models" / "default.gguf"
SYNTHETIC_PRESET = "tiny"


# ---- helpers ---------------------------------------------------------------------------------------

def _err(msg: str) -> None:
    typer.echo(f"edge-rt: {msg}", err=True)


def _one_line(e: BaseException) -> str:
    msg = " ".join(str(e).split())
    if isinstance(e, OSError) and not isinstance(e, EdgeRTError) and e.filename is not None and e.strerror:
        msg = f"{e.strerror}: {e.filename}"
    return msg or type(e).__name__


@contextlib.contextmanager
def _user_errors() -> Iterator[None]:
    """Turn the errors a user can cause into one line on stderr and exit status 1 (130 on ^C)."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            try:
                yield
            finally:
                for w in caught:
                    _err(f"warning: {' '.join(str(w.message).split())}")
    except (EdgeRTError, OSError, ImportError) as e:
        # BrokenPipeError: the reader went away (edge-rt run | head); stop quietly.
        if isinstance(e, BrokenPipeError):
            _silence_stdout()
            raise typer.Exit(0) from None
        _err(f"error: {_one_line(e)}")
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        _err("interrupted")
        raise typer.Exit(130) from None


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "'": "'", '"': '"'}


def _unescape(text: str) -> str:
    """``\\n``, ``\\t``, ``\\r``, ``\\\\`` and quotes as the characters (llama.cpp's escape processing);
    other backslashes stay as they are."""
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(0)), text)


def _check_budget_option(mem_budget: Optional[str]) -> None:
    """llama.cpp's -m is the model; here it is --mem-budget: say so instead of 'cannot parse'."""
    if mem_budget is not None and mem_budget.strip().lower().endswith(".gguf"):
        raise InvalidArgumentError(f"-m/--mem-budget is the memory budget (e.g. 1.5GB), got the file {mem_budget!r}: "
                                   "give the model as the first argument (edge-rt COMMAND MODEL)")


def _silence_stdout() -> None:
    """After a broken pipe, point stdout at /dev/null so the interpreter's final flush stays quiet."""
    try:
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def _fmt_count(n: int) -> str:
    for div, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            return f"{n / div:.2f} {unit}"
    return str(n)


def _table(headers: List[str], rows: List[List[Any]], indent: str = "  ") -> str:
    cells = [headers] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for j, r in enumerate(cells):
        parts = [r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:])]
        lines.append(indent + "  ".join(parts).rstrip())
        if j == 0:
            lines.append(indent + "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"edge-rt {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """On-device LLM inference: run, inspect and benchmark GGUF models on the CPU."""


# ---- run -------------------------------------------------------------------------------------------

def _resolve_model(model: Optional[Path]) -> Path:
    if model is not None:
        return model
    if DEFAULT_MODEL.is_file():
        return DEFAULT_MODEL
    from .synthetic import ensure_synthetic_model

    _err(f"no MODEL given and no embedded model in this build: using the synthetic model "
         f"'{SYNTHETIC_PRESET}' (random weights, so the text is meaningless)")
    _err(f"preparing synthetic model '{SYNTHETIC_PRESET}' (generated once, then cached) ...")
    path = ensure_synthetic_model(SYNTHETIC_PRESET)
    _err(f"synthetic model: {path}")
    return path


# MoE options shared by run and bench (Typer reads them as metadata; one object may serve both).
_EXPERT_CACHE = typer.Option(
    None, "--expert-cache", help="MoE under --mem-budget: expert weight bytes to cache, e.g. 600MB (default: what "
                                 "the budget leaves after the layers).")
_EXPERT_POLICY = typer.Option("lfu", "--expert-policy", help="Expert cache eviction: lfu or lru.")
_EXPERT_PREFETCH = typer.Option(
    "next", "--expert-prefetch", help="Read predicted experts ahead of the router: next, same, both or off.")
_EXPERT_PREDICTION_WIDTH = typer.Option(
    None, "--expert-prediction-width", min=1,
    help="Experts each predictor names per token and layer (default: the model's expert_used_count).")
_EXPERT_PREDICTOR = typer.Option(
    "auto", "--expert-predictor",
    help="Next-layer expert predictor from edge-rt fit-predictor: a file, 'none' (the router), or 'auto' "
         "(MODEL.predictor.gguf when it exists).")


# NPU prefill options shared by run, bench, chat and serve.
_NPU = typer.Option(None, "--npu", help="Prefill prompts on an NPU backend: qnn-htp (Qualcomm HTP; its emulator on "
                    "x86), cpu-ep (ONNX Runtime's CPU EP standing in for an NPU), cuda or tensorrt (ONNX Runtime's GPU "
                    "providers, e.g. on a Jetson) or int-ref; needs --npu-model. "
                    "Decode stays on the CPU.")
_NPU_MODEL = typer.Option(None, "--npu-model", help="The folder `edge-rt export MODEL DIR` wrote for this model; "
                          "--ctx defaults to its --ctx.")
_NPU_SCHEME = typer.Option(None, "--npu-scheme", help="Require the export's scheme (w8a8, w4a8, ...).")


def _predictor_choice(value: str) -> Optional[str]:
    return None if value.lower() == "none" else value




@app.command()
def run(
    model: Optional[Path] = typer.Argument(
        None, show_default=False,
        help="GGUF model file. Default: the embedded model if this build has one, else a synthetic "
             "random-weight model generated on first use."),
    prompt: str = typer.Option("Once upon a time", "-p", "--prompt", help="Text to complete."),
    max_tokens: int = typer.Option(128, "-n", "--max-tokens", min=-1,
                                   help="Most tokens to generate (-1: until end of text or a full context)."),
    temperature: float = typer.Option(0.8, "--temperature", "--temp", help="Sampling temperature; 0 = greedy."),
    top_k: int = typer.Option(40, "--top-k", min=0, help="Top-k sampling (0 = off)."),
    top_p: float = typer.Option(0.95, "--top-p", min=0.0, max=1.0, help="Nucleus sampling (1.0 = off)."),
    seed: Optional[int] = typer.Option(None, "--seed", min=0,
                                       help="Sampler seed for reproducible output (default: random)."),
    stop: Optional[List[str]] = typer.Option(
        None, "--stop", help="Stop string (repeatable); \\n, \\t, \\r and \\\\ are unescaped, as llama.cpp does."),
    threads: Optional[int] = typer.Option(None, "-t", "--threads", min=1,
                                          help="Worker threads (default: physical cores)."),
    ctx: Optional[int] = typer.Option(None, "-c", "--ctx", min=1,
                                      help="Context size in tokens (default: min(2048, training context))."),
    stats: bool = typer.Option(False, "--stats", help="Print token counts and speeds on stderr at the end."),
    mem_budget: Optional[str] = typer.Option(
        None, "--mem-budget", "-m",
        help="Hard cap on the engine's memory, e.g. 1.5GB or 800MiB: layers that do not fit stream from the file."),
    window: Optional[int] = typer.Option(
        None, "--window", min=1,
        help="Streaming window slots, with --mem-budget (default: the largest that fits the budget)."),
    expert_cache: Optional[str] = _EXPERT_CACHE,
    expert_policy: str = _EXPERT_POLICY,
    expert_prefetch: str = _EXPERT_PREFETCH,
    expert_prediction_width: Optional[int] = _EXPERT_PREDICTION_WIDTH,
    expert_predictor: str = _EXPERT_PREDICTOR,
    npu: Optional[str] = _NPU,
    npu_model: Optional[Path] = _NPU_MODEL,
    npu_scheme: Optional[str] = _NPU_SCHEME,
    profile: str = PROFILE_OPTION,
    repack: bool = typer.Option(
        True, "--repack/--no-repack",
        help="Sum Q4_0/Q4_K matrices as llama.cpp sums the copies it repacks them into (default), or, with "
             "--no-repack, as llama.cpp --no-repack does in the file's layout (its bits; slower prompts)."),
) -> None:
    """Generate text from a prompt, streaming it to stdout (the prompt is echoed first)."""
    with _user_errors():
        from .loading import load

        _check_budget_option(mem_budget)
        path = _resolve_model(model)
        m = load(path, threads=threads, n_ctx=ctx, mem_budget=mem_budget, window=window, expert_cache=expert_cache,
                 expert_policy=expert_policy, expert_prefetch=expert_prefetch,
                 expert_prediction_width=expert_prediction_width, expert_predictor=_predictor_choice(expert_predictor),
                 npu=npu, npu_model=npu_model, npu_scheme=npu_scheme, repack=repack)
        with m:
            # stream() validates its arguments when called: fail before anything reaches stdout.
            pieces = m.stream(prompt, max_tokens=None if max_tokens < 0 else max_tokens,
                              temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
                              stop=[_unescape(x) for x in stop] if stop else None)
            out = sys.stdout
            out.write(prompt)
            out.flush()
            last = prompt
            for piece in pieces:
                out.write(piece)
                out.flush()
                last = piece
            if not last.endswith("\n"):
                out.write("\n")
            out.flush()
            res = m.last_result
            if stats and res is not None:
                _err(f"prompt tokens {res.n_prompt} (reused {res.n_cached}), "
                     f"prefill {res.prefill_tok_s:.1f} tok/s")
                _err(f"generated {res.n_generated} tokens, decode {res.decode_tok_s:.1f} tok/s, "
                     f"finish: {res.finish_reason}, threads {m.threads}")
                from .benchmark import telemetry

                _print_telemetry(telemetry(m, n_tokens=max(1, res.n_decode + 1)))
                cli_plan.predicted_beside_measured(m, profile_choice(profile), res.n_prompt,
                                                   {"decode_tok_s": res.decode_tok_s,
                                                    "prefill_tok_s": res.prefill_tok_s})


def _print_telemetry(t: Dict[str, Any]) -> None:
    """Memory classes and, when layers stream or experts are cached, per-token telemetry on stderr
    (``t`` is :func:`edge_rt.benchmark.telemetry`'s dict)."""
    rep, n_tokens = t["memory"], t["n_tokens"]
    classes = ", ".join(f"{k} {_fmt_bytes(v)}" for k, v in rep["classes"].items() if v)
    budget = _fmt_bytes(rep["budget"]) if rep["budget"] else "none"
    _err(f"memory {_fmt_bytes(rep['total'])} (budget {budget}): {classes}")
    if t.get("npu"):
        n = t["npu"]
        _err(f"npu prefill on {n['backend']} ({n['device']}): {n['chunks']} chunks of {n['chunk']} tokens, "
             f"{n['backend_ms_per_chunk']:.1f} ms/chunk on the backend + {n['host_ms_per_chunk']:.1f} ms/chunk "
             "host (Python: feeds, dequantization, KV hand-off)")
    if t["experts"] is not None:
        _print_experts(rep, t["experts"]["stats"], t["experts"]["predictor"], n_tokens)
    if t["streaming"] is None:
        return
    _err(f"streaming {len(rep['streamed_units'])} of {len(rep['streamed_units']) + len(rep['pinned_units'])} "
         f"layers through {rep['window']} slots of {_fmt_bytes(rep['slot_bytes'])}, {rep['io']} I/O")
    s = t["streaming"]
    _err(f"per token: read {_fmt_bytes(int(s['bytes_per_token']))}, I/O {s['io_s_per_token'] * 1e3:.1f} ms, "
         f"stall {s['stall_s_per_token'] * 1e3:.1f} ms, compute {s['compute_s_per_token'] * 1e3:.1f} ms, "
         f"I/O hidden behind compute {s['overlap'] * 100:.0f}%")


def _print_experts(rep: Dict[str, Any], s: Dict[str, Any], fitted: Optional[str], n_tokens: int) -> None:
    """Expert cache telemetry on stderr: hit rate, reads, stall and per-layer prediction quality."""
    _err(f"expert cache {rep['expert_cache_slots']} of {rep['total_experts']} experts "
         f"({_fmt_bytes(rep['expert_cache_slots'] * rep['expert_slot_bytes'])}): hit rate "
         f"{(s['hit_rate'] or 0) * 100:.1f}% ({s['hits']} of {s['uses']}), "
         f"read {_fmt_bytes(s['bytes_read'] // n_tokens)}/token ({s['reads_on_demand']} on demand, "
         f"{s['reads_speculative']} predicted, {s['speculative_unused']} predicted reads unused), "
         f"stall {s['stall_seconds'] / n_tokens * 1e3:.1f} ms/token")
    by = {"same_layer": "layer i's router",
          "next_layer": f"fitted, {Path(fitted).name}" if fitted else "layer i's router"}
    for key, name in (("same_layer", "same-layer"), ("next_layer", "next-layer")):
        rows = [(il, layer[key]) for il, layer in enumerate(s["layers"]) if layer[key]["predicted"]]
        if not rows:
            continue
        pred = sum(p["predicted"] for _, p in rows)
        corr = sum(p["correct"] for _, p in rows)
        need = sum(p["needed"] for _, p in rows)
        per_layer = " ".join(f"{il}:{p['recall']:.2f}" for il, p in rows)
        _err(f"{name} prediction: precision {corr / pred:.2f}, recall {corr / max(1, need):.2f}; recall by layer "
             f"{per_layer} (predictor: {by[key]})")


# ---- inspect ---------------------------------------------------------------------------------------

def _print_inspect(d: Dict[str, Any]) -> None:
    w = typer.echo
    tok = d["tokenizer"]
    w(f"file          {d['path']}")
    w(f"gguf version  {d['gguf_version']}")
    w(f"architecture  {d['architecture'] or '(missing)'}" + (f"  ({d['name']})" if d.get("name") else ""))
    w(f"parameters    {_fmt_count(d['n_parameters'])} ({d['n_parameters']:,})")
    w(f"file size     {_fmt_bytes(d['file_size'])} ({d['file_size']:,} bytes)")
    bpw = 8.0 * d["tensor_bytes"] / d["n_parameters"] if d["n_parameters"] else 0.0
    w(f"tensors       {d['n_tensors']} ({_fmt_bytes(d['tensor_bytes'])}, {bpw:.2f} bits/weight)")
    tok_desc = tok["model"] or "(none)"
    if tok["n_vocab"] is not None:
        tok_desc += f", {tok['n_vocab']} tokens"
    if tok.get("pre"):
        tok_desc += f", pre-tokenizer {tok['pre']}"
    w(f"tokenizer     {tok_desc}")
    if d.get("isa"):
        w(f"cpu isa       {d['isa']}")
    mem = d["memory"]
    if "minimum_budget" in mem:
        mb = mem["minimum_budget"]
        parts = [f"weights {_fmt_bytes(mb['weights'])}"]
        if mb["expert_predictor"]:
            parts.append(f"expert predictor {_fmt_bytes(mb['expert_predictor'])}")
        parts += [f"KV cache {_fmt_bytes(mb['kv_cache'])}", f"scratch {_fmt_bytes(mb['scratch'])}",
                  f"metadata {_fmt_bytes(mb['metadata'])}"]
        w(f"min budget    {_fmt_bytes(mb['total'])} ({mb['total']:,} bytes) for --mem-budget at n_ctx {mb['n_ctx']}, "
          f"{mb['threads']} thread{'' if mb['threads'] == 1 else 's'}: "
          + " + ".join(parts))
    else:
        w(f"min budget    n/a: {mem.get('not_runnable')}")
    if d["hyperparameters"]:
        w("")
        w("hyperparameters")
        width = max(len(k) for k in d["hyperparameters"])
        for k, v in d["hyperparameters"].items():
            w(f"  {k.ljust(width)}  {f'{v:.6g}' if isinstance(v, float) else v}")
    w("")
    w("tensor types")
    total = d["tensor_bytes"] or 1
    w(_table(["type", "tensors", "parameters", "bytes", "share"],
             [[t, v["tensors"], f"{v['parameters']:,}", _fmt_bytes(v["bytes"]), f"{100.0 * v['bytes'] / total:.1f}%"]
              for t, v in d["tensor_types"].items()]))
    w("")
    w("bytes per layer")
    w(_table(["layer", "tensors", "parameters", "bytes", "types"],
             [[k, v["tensors"], f"{v['parameters']:,}", _fmt_bytes(v["bytes"]),
               " ".join(f"{t}x{n}" for t, n in sorted(v["types"].items()))]
              for k, v in d["layers"].items()]))


@app.command()
def inspect(
    model: Path = typer.Argument(..., show_default=False, help="GGUF model file."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON instead of tables."),
    threads: Optional[int] = typer.Option(None, "-t", "--threads", min=1,
                                          help="Worker threads the minimum budget is for (default: physical cores)."),
    ctx: Optional[int] = typer.Option(None, "-c", "--ctx", min=1,
                                      help="Context size the minimum budget is for (default: as `run`)."),
) -> None:
    """Show a model's architecture, size, tensor types, bytes per layer, hyperparameters, and the
    smallest --mem-budget it runs in.

    Reads only the GGUF header: no weights are loaded.
    """
    with _user_errors():
        from .inspection import inspect as inspect_model

        d = inspect_model(model, threads=threads, n_ctx=ctx)
        if as_json:
            typer.echo(json.dumps(d, indent=2, default=str))
        else:
            _print_inspect(d)


# ---- bench -----------------------------------------------------------------------------------------

@app.command()
def bench(
    ctx: typer.Context,
    model: Optional[Path] = typer.Argument(None, show_default=False, metavar="MODEL",
                                           help="GGUF model file (required)."),
    threads: Optional[int] = typer.Option(None, "-t", "--threads", min=1,
                                          help="Worker threads (default: physical cores)."),
    prompt_tokens: int = typer.Option(128, "--prompt-tokens", "-p", min=1, help="Prompt length for prefill."),
    gen_tokens: int = typer.Option(64, "--gen-tokens", "-n", min=1, help="Tokens decoded one at a time."),
    repetitions: int = typer.Option(3, "--repetitions", "-r", min=1, help="Timed runs (after one warm-up)."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the random token ids."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
    mem_budget: Optional[str] = typer.Option(
        None, "--mem-budget", "-m", help="Hard memory cap, e.g. 1.5GB: layers that do not fit stream from the file."),
    plot: Optional[Path] = typer.Option(
        None, "--plot", help="Write a per-layer timeline of I/O and compute (PNG) for the last run's decode."),
    expert_cache: Optional[str] = _EXPERT_CACHE,
    expert_policy: str = _EXPERT_POLICY,
    expert_prefetch: str = _EXPERT_PREFETCH,
    expert_prediction_width: Optional[int] = _EXPERT_PREDICTION_WIDTH,
    expert_predictor: str = _EXPERT_PREDICTOR,
    npu: Optional[str] = _NPU,
    npu_model: Optional[Path] = _NPU_MODEL,
    npu_scheme: Optional[str] = _NPU_SCHEME,
    profile: str = PROFILE_OPTION,
) -> None:
    """Measure prefill and decode speed (tokens/s, median of the repetitions, min-max shown). With --npu the
    prefill runs on that backend and the model's context is the export's."""
    with _user_errors():
        from .benchmark import bench as run_bench

        _check_budget_option(mem_budget)
        if model is None:  # optional only so that `bench -m MODEL` gets the hint above first
            ctx.fail("Missing argument 'MODEL'.")
        result = run_bench(model, threads=threads, prompt_tokens=prompt_tokens, gen_tokens=gen_tokens,
                           repetitions=repetitions, seed=seed, mem_budget=mem_budget, plot=plot,
                           expert_cache=expert_cache, expert_policy=expert_policy, expert_prefetch=expert_prefetch,
                           expert_prediction_width=expert_prediction_width,
                           expert_predictor=_predictor_choice(expert_predictor), npu=npu, npu_model=npu_model,
                           npu_scheme=npu_scheme, profile=profile_choice(profile))
        if "telemetry" in result:
            _print_telemetry(result.pop("telemetry"))
        if "plots" in result:
            _err("timeline written to " + ", ".join(str(p) for p in result.pop("plots")))
        if as_json:
            typer.echo(json.dumps(result, indent=2))
            return
        typer.echo(f"model    {model} ({result['arch']}, {_fmt_count(int(result['n_params'] or 0))} params)")
        typer.echo(f"threads  {result['threads']}, isa {result['isa']}, {repetitions} runs after a warm-up")
        if "npu" in result:
            n = result["npu"]
            typer.echo(f"prefill  on {n['backend']} ({n['device']}), {n['chunks']} chunks of {n['chunk']}: "
                       f"{n['backend_ms_per_chunk']:.1f} ms/chunk backend + {n['host_ms_per_chunk']:.1f} ms/chunk host")
        typer.echo(_table(
            ["test", "tokens", "tok/s (median)", "min", "max"],
            [[name, n, f"{result[k]:.2f}", f"{result[k + '_min']:.2f}", f"{result[k + '_max']:.2f}"]
             for name, n, k in (("prefill", prompt_tokens, "prefill_tok_s"), ("decode", gen_tokens, "decode_tok_s"))],
            indent=""))
        cli_plan.echo_predicted(result.get("predicted"))


# ---- convert ---------------------------------------------------------------------------------------

@app.command(help=(
    "Rewrite a GGUF in another layout, e.g. for streaming from flash.\n\n"
    "--layout streaming: each layer's tensors in one contiguous 4096-aligned range, layers in order after the "
    "global tensors. The result is still a GGUF that llama.cpp loads, with identical weights and metadata. "
    "Progress and a summary line go to stderr."))
def convert(
    src: Path = typer.Argument(..., show_default=False, metavar="IN", help="GGUF model file to convert."),
    dst: Path = typer.Argument(..., show_default=False, metavar="OUT",
                               help="Output GGUF file (replaced atomically if it exists)."),
    layout: str = typer.Option("streaming", "--layout", help="Target layout; 'streaming' is the only one."),
) -> None:
    """Rewrite a GGUF in another layout (help text above: kept on short source lines)."""
    with _user_errors():
        from .convert import convert_gguf

        with contextlib.ExitStack() as stack:
            bar: List[Any] = []
            last = [0]

            def progress(done: int, total: int) -> None:
                if not bar:
                    bar.append(stack.enter_context(typer.progressbar(
                        length=max(total, 1), label="converting", file=sys.stderr,
                        show_pos=False, show_percent=True)))
                bar[0].update(done - last[0])
                last[0] = done

            r = convert_gguf(src, dst, layout=layout, progress=progress)
        pad_pct = 100.0 * r["padding_bytes"] / max(r["bytes_out"], 1)
        _err(f"converted {src} -> {dst} ({r['layout']} layout): {r['n_tensors']} tensors, "
             f"{r['n_layers']} layers, {_fmt_bytes(r['bytes_in'])} -> {_fmt_bytes(r['bytes_out'])}, "
             f"padding {_fmt_bytes(r['padding_bytes'])} ({pad_pct:.2f}%), {r['seconds']:.1f} s")


# ---- quantize / eval -------------------------------------------------------------------------------

class _StageBars:
    """One progress bar per pipeline stage on stderr (typer/click bars: no extra dependency)."""

    LABELS = {"check": "checking weights", "calibrate": "calibrating", "sensitivity": "sensitivity",
              "write": "writing", "eval": "evaluating", "trace": "tracing routing", "fit": "fitting"}

    def __init__(self, stack: contextlib.ExitStack) -> None:
        self._stack = stack
        self._stage: Optional[str] = None
        self._bar: Any = None
        self._last = 0

    def __call__(self, stage: str, done: int, total: int, detail: str = "") -> None:
        if stage != self._stage:
            if self._bar is not None:
                self._bar.render_finish()
            self._stage, self._last = stage, 0
            self._bar = self._stack.enter_context(typer.progressbar(
                length=max(total, 1), label=self.LABELS.get(stage, stage).ljust(17), file=sys.stderr,
                show_pos=True, show_percent=False))
        self._bar.update(done - self._last)
        self._last = done


def _parse_types(value: Optional[str]) -> Optional[List[str]]:
    if value is None:
        return None
    return [v.strip().upper() for v in value.split(",") if v.strip()]


@app.command(help=(
    "Quantize a model to GGUF: one type everywhere (--type, like llama-quantize) or a mixed-precision "
    "mix under a size budget (--target-bpw / --target-size) chosen by measured per-tensor sensitivity.\n\n"
    "IN is a GGUF master (F32/F16/BF16) or a Hugging Face directory (config.json + *.safetensors). "
    "The master is first run on calibration text (default: a built-in held-out code sample) to record "
    "per-column activation statistics, which weight the quantization error, and each matrix's input "
    "second moments, with which levels are chosen by GPTQ error feedback (--no-gptq: nearest level); they "
    "are saved next to OUT (OUT.calib.npz) for reuse with --load-calib. Mixed precision also writes OUT.recipe.json, "
    "OUT.tensor-types.txt (llama-quantize --tensor-type rules) and OUT.sensitivity.tsv. "
    "Progress and a summary go to stderr."))
def quantize(
    src: Path = typer.Argument(..., show_default=False, metavar="IN", help="GGUF master or Hugging Face directory."),
    dst: Path = typer.Argument(..., show_default=False, metavar="OUT", help="Output GGUF file."),
    qtype: Optional[str] = typer.Option(None, "--type", help=f"One type: {' '.join(TYPE_NAMES)}."),
    target_bpw: Optional[float] = typer.Option(None, "--target-bpw",
                                               help="Mixed precision: bits per weight of the whole model."),
    target_size: Optional[str] = typer.Option(None, "--target-size",
                                              help="Mixed precision: file size, e.g. 4.2MB or 3MiB."),
    calib: Optional[Path] = typer.Option(None, "--calib",
                                         help="Calibration text file (default: built-in held-out code)."),
    no_calib: bool = typer.Option(False, "--no-calib", help="Skip calibration (plain round-to-nearest)."),
    load_calib: Optional[Path] = typer.Option(None, "--load-calib",
                                              help="Reuse statistics saved by an earlier run (.npz)."),
    save_calib: Optional[Path] = typer.Option(None, "--save-calib",
                                              help="Where to save the statistics (default OUT.calib.npz)."),
    candidates: Optional[str] = typer.Option(None, "--candidates", help="Mixed precision: comma-separated candidate "
                                             f"types (default {','.join(QUANTIZED_TYPES)})."),
    method: str = typer.Option("calibrated", "--sensitivity", help="calibrated (one model run per tensor), fitted "
                               "(calibrated + per-type factors from 4 tensors measured at every type), measure (one "
                               "run per tensor and type: most accurate, types x the cost) or proxy (no model run)."),
    plot: Optional[Path] = typer.Option(None, "--plot",
                                        help="Mixed precision: Pareto plot PNG of predicted KL vs size."),
    threads: Optional[int] = typer.Option(None, "-t", "--threads", min=1, help="Worker threads for model runs."),
    gptq: bool = typer.Option(True, "--gptq/--no-gptq", help="With calibration: choose levels by GPTQ error feedback "
                              "on each matrix's input statistics (same scales and file format; lower output error)."),
) -> None:
    """Quantize a model to GGUF (help text above)."""
    with _user_errors():
        from .loading import parse_size
        from .quantize.pipeline import quantize_model
        from .quantize.sensitivity import DEFAULT_CANDIDATES

        target_bytes = parse_size(target_size, "[quantize] --target-size") if target_size is not None else None
        if plot is not None and qtype is not None:
            raise InvalidArgumentError("[quantize] --plot draws the mixed-precision search: use it with "
                                       "--target-bpw/--target-size")
        with contextlib.ExitStack() as stack:
            r = quantize_model(src, dst, qtype=qtype, target_bpw=target_bpw, target_bytes=target_bytes,
                               calib_text=calib, use_calib=not no_calib, load_calib=load_calib, save_calib=save_calib,
                               candidates=_parse_types(candidates) or DEFAULT_CANDIDATES, method=method, plot=plot,
                               threads=threads, gptq=gptq, progress=_StageBars(stack))
        for n in r.notes:
            _err(f"note: {n}")
        if r.calib:
            _err(f"calibration: {r.calib}")
        if r.rounding:
            _err(f"rounding: {r.rounding}")
        total = r.tensor_bytes or 1
        typer.echo(_table(["type", "tensors", "parameters", "bytes", "share"],
                    [[t, v["tensors"], f"{v['params']:,}", _fmt_bytes(v["bytes"]), f"{100.0 * v['bytes'] / total:.1f}%"]
                     for t, v in sorted(r.per_type.items(), key=lambda kv: -kv[1]["bytes"])]), err=True)
        extra = f", predicted KL {r.predicted_kl:.4f}" if r.predicted_kl is not None else ""
        _err(f"quantized {src} -> {dst}: {_fmt_bytes(r.file_size)} ({r.file_size:,} bytes), "
             f"{r.bpw:.2f} bits/weight over {_fmt_count(r.n_params)} parameters{extra}, {r.seconds:.1f} s "
             f"({r.seconds / max(r.n_params / 1e6, 1e-9):.2f} s per million parameters)")
        for k, p in r.outputs.items():
            _err(f"{k}: {p}")


@app.command(name="fit-predictor", help=(
    "Fit a next-layer expert predictor for a Mixture-of-Experts model and write it as a sidecar GGUF.\n\n"
    "Under a memory budget, next-layer prefetch names layer i's experts while layer i-1's FFN runs; by "
    "default with layer i's router, which lacks layer i-1's FFN output. The fitted predictor (per layer, a small "
    "MLP correction added to the router's logits, trained on the engine's own routing of calibration text; never "
    "worse than the router on the held-out tenth of that text) names them more often, so fewer "
    "experts are read on demand. The output is used automatically when it sits next to the model as "
    "MODEL.predictor.gguf (edge_rt.load(expert_predictor=...) / --expert-predictor pick another). "
    "Predictions change what is read when, never the output."))
def fit_predictor(
    model: Path = typer.Argument(..., show_default=False, help="MoE GGUF model (the file you will run)."),
    out: Optional[Path] = typer.Option(None, "-o", "--out", help="Output file (default MODEL.predictor.gguf)."),
    text: Optional[Path] = typer.Option(None, "--text",
                                        help="Calibration text file (default: built-in held-out code)."),
    tokens: int = typer.Option(16384, "--tokens", min=16, help="Tokens of text to trace (10% validate)."),
    hidden: int = typer.Option(64, "--hidden", min=1, max=65536, help="Hidden units of each layer's MLP."),
    epochs: int = typer.Option(300, "--epochs", min=1,
                               help="Training epochs per layer (the best validation checkpoint is kept)."),
    mem_budget: Optional[str] = typer.Option(None, "--mem-budget",
                                             help="Trace under this memory budget (models larger than RAM)."),
    threads: Optional[int] = typer.Option(None, "-t", "--threads", min=1, help="Worker threads."),
) -> None:
    """Fit a next-layer expert predictor (help text above)."""
    with _user_errors():
        from .loading import predictor_path_for
        from .quantize.calibrate import read_text
        from .quantize.expert_predictor import fit_expert_predictor

        dst = out if out is not None else predictor_path_for(model)
        with contextlib.ExitStack() as stack:
            r = fit_expert_predictor(model, read_text(text), dst, hidden=hidden, max_tokens=tokens, epochs=epochs,
                                     threads=threads, mem_budget=mem_budget, progress=_StageBars(stack))
        for n in r.notes:
            _err(f"note: {n}")
        typer.echo(_table(["layer", "router recall", "fitted recall", "best epoch"],
                          [[x.layer, f"{x.router_recall:.3f}", f"{x.fitted_recall:.3f}", x.best_epoch]
                           for x in r.layers]
                          + [["mean", f"{r.router_recall:.3f}", f"{r.fitted_recall:.3f}", ""]]), err=True)
        _err(f"fitted on {r.n_train} tokens, recall on {r.n_validation} validation tokens (which also picked the "
             f"checkpoint, so it leans optimistic); wrote {dst} "
             f"({_fmt_bytes(dst.stat().st_size)}) in {r.seconds:.1f} s")


@app.command(name="eval")
def eval_(
    model: Path = typer.Argument(..., show_default=False, help="GGUF model, or an `edge-rt export` folder."),
    reference: Optional[Path] = typer.Option(None, "--reference", "-r", help="Reference GGUF (e.g. the F16 master); "
                                             "for an export folder, default: the model it was exported from."),
    text: Path = typer.Option(..., "--text", help="Evaluation text file."),
    ctx: Optional[int] = typer.Option(None, "-c", "--ctx", min=2,
                                      help="Window length in tokens (default: training context, at most 2048)."),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens", min=2, help="Evaluate at most this many tokens."),
    threads: Optional[int] = typer.Option(None, "-t", "--threads", min=1, help="Worker threads."),
    backend: str = typer.Option("edge_rt", "--backend", help="edge_rt, or llama_cpp (llama-cpp-python) to get the "
                                "logits from llama.cpp; for an export folder ort_cpu (default), qdq_ref, htp or "
                                "int_ref (edge_rt's C++ integer kernels)."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """Perplexity, mean KL divergence against the reference's logits, and top-1 agreement."""
    with _user_errors():
        from .quantize.evaluate import evaluate

        try:
            body = text.read_bytes().decode("utf-8", errors="replace")
        except FileNotFoundError:
            raise InvalidArgumentError(f"[eval] text file not found: {text}") from None
        if (model / "manifest.json").is_file():
            return eval_export(model, reference, body, ctx, max_tokens, threads, backend, as_json)
        if reference is None:
            raise InvalidArgumentError("[eval] --reference is required for a GGUF model")
        with contextlib.ExitStack() as stack:
            bars = _StageBars(stack)
            r = evaluate(model, reference, body, n_ctx=ctx, max_tokens=max_tokens, threads=threads, backend=backend,
                         progress=lambda d, n: bars("eval", d, n))
        if as_json:
            typer.echo(json.dumps(r, indent=2))
            return
        typer.echo(f"model      {model}")
        typer.echo(f"reference  {reference}")
        typer.echo(f"tokens     {r['n_tokens']} predicted in {r['n_windows']} windows of {r['n_ctx']} ({r['backend']})")
        typer.echo(f"perplexity {r['ppl']:.4f} (reference {r['ref_ppl']:.4f})")
        typer.echo(f"KL div     mean {r['kl_mean']:.6f}, median {r['kl_median']:.6f}, p99 {r['kl_p99']:.6f}, "
                   f"max {r['kl_max']:.6f} nats")
        typer.echo(f"top-1      {100 * r['top1']:.2f}% agreement")


if __name__ == "__main__":
    # `python -m edge_rt.cli`: run the package's edge_rt.cli instead of this __main__ copy. The command
    # modules below import their helpers from edge_rt.cli; importing them from here would load a second
    # edge_rt.cli whose own registration imports would meet them half-initialized.
    from edge_rt.cli import main as _package_main

    _package_main()
    sys.exit(0)

from .cli_export import EXPORT_HELP, eval_export, export_command  # noqa: E402 (uses the helpers above)

app.command(name="export", help=EXPORT_HELP)(export_command)

from . import cli_chat, cli_plan  # noqa: E402  (their commands use this module's helpers)

cli_chat.register(app)
cli_plan.register(app)


def main(argv: Optional[List[str]] = None) -> None:
    """Entry point of the ``edge-rt`` script."""
    app(args=argv, prog_name="edge-rt")

