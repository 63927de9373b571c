"""``edge-rt profile`` and ``edge-rt plan`` (kept apart from cli.py, which registers them), and the predicted
speeds ``run --stats`` and ``bench`` print beside the measured ones."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, Dict, Optional

import typer

PROFILE_HELP = (
    "Measure this machine into a device profile for `edge-rt plan`: memory read bandwidth (one thread and all "
    "cores), flash read bandwidth as the engine streams (O_DIRECT, 4 MiB requests, 4 in flight), per-thread "
    "matmul throughput of every weight type on every ISA this CPU runs (the engine's own kernels, on a matrix "
    "that stays in cache), and the NPU backends present. About 10-20 seconds. Writes the profile to -o FILE, "
    "default the local profile the planner reads (~/.cache/edge_rt/device_profile.json, or under "
    "$EDGE_RT_CACHE). The schema: docs/device_profile.md.")

PLAN_HELP = (
    "Plan MODEL for a device without loading its weights (GGUF header only): per layer whether its weights are "
    "pinned in RAM or streamed from flash, the window, the expert cache (MoE), the memory per class, bytes read "
    "from flash per token, and predicted TTFT, prefill and decode tokens/s from the profile's measured rates "
    "(the cost model: docs/device_profile.md). --profile is a JSON file, a shipped profile ({shipped}) or "
    "'local' (default; made by `edge-rt profile`).")


PROFILE_OPTION = typer.Option(
    "local", "--profile", help="Device profile to print the planner's predicted speeds against (a JSON file or a "
    "shipped profile's name); 'local' (default): this machine's, when `edge-rt profile` has made one; 'none': no "
    "prediction.")


def profile_choice(value: str) -> Optional[str]:
    """``--profile`` of run and bench: None for 'none'."""
    return None if value.lower() == "none" else value


def echo_predicted(p: Optional[Dict[str, Any]]) -> None:
    """bench's table line for its ``predicted`` entry (nothing without one)."""
    if p:
        typer.echo(f"predicted (profile {p['profile']}): prefill {p['prefill_tok_s']:.2f}, "
                   f"decode {p['decode_tok_s']:.2f} tok/s")


def _shipped() -> str:
    from .devices.profile_schema import shipped_profiles

    return ", ".join(shipped_profiles()) or "none"


def _progress(stack: contextlib.ExitStack) -> Any:
    """One progress bar per measurement stage on stderr (cli._StageBars with this command's labels)."""
    from .cli import _StageBars

    class Progress(_StageBars):
        LABELS = {"memory": "memory bandwidth", "flash": "flash bandwidth", "kernels": "kernels",
                  "npu": "NPU backends"}

    return Progress(stack)


def _fmt_rate(bytes_per_s: float) -> str:
    return f"{bytes_per_s / 1e9:.2f} GB/s"


def profile_command(
    out: Optional[Path] = typer.Option(None, "-o", "--output", help="Where to write the profile (JSON)."),
    name: Optional[str] = typer.Option(None, "--name", help="Device name in the profile (default: host name)."),
    threads: Optional[int] = typer.Option(None, "-t", "--threads", min=1,
                                          help="Cores to measure with and plan for (default: physical cores)."),
    flash_dir: Optional[Path] = typer.Option(
        None, "--flash-dir", help="Folder on the storage to measure (default: the temp dir); a 1 GiB file is "
                                  "written there and deleted."),
    flash_file: Optional[Path] = typer.Option(
        None, "--flash-file", help="Measure by reading this existing file (e.g. a model) instead."),
    as_json: bool = typer.Option(False, "--json", help="Also print the profile on stdout."),
) -> None:
    from .cli import _user_errors

    with _user_errors():
        from .devices.profile_schema import default_profile_path
        from .devices.profiler import measure_profile

        if flash_file is not None and not flash_file.is_file():
            raise FileNotFoundError(2, "No such file", str(flash_file))
        with contextlib.ExitStack() as stack:
            prof = measure_profile(name=name, threads=threads, flash_file=flash_file, flash_dir=flash_dir,
                                   progress=_progress(stack))
        target = out or default_profile_path()
        target.parent.mkdir(parents=True, exist_ok=True)
        from .atomic_io import atomic_write

        with atomic_write(target) as tmp:
            tmp.write_text(json.dumps(prof, indent=2) + "\n", encoding="utf-8")
        from .cli import _err as err

        mem, flash = prof["memory"]["read_bandwidth"], prof["flash"]
        rates = prof["dot"][prof["cpu"]["isa"]]
        err(f"memory read {_fmt_rate(mem['single_thread'])} (1 thread), {_fmt_rate(mem['all_threads'])} "
            f"({prof['cpu']['cores']} threads); flash read {_fmt_rate(flash['read_bandwidth'])}")
        err(f"{prof['cpu']['isa']} decode kernels, G weights/s per thread: "
            + ", ".join(f"{t} {r['decode'] / 1e9:.1f}" for t, r in rates.items()))
        err(f"NPU backends: {', '.join(prof['npu']['backends']) or 'none'}")
        err(f"profile written to {target}")
        if as_json:
            typer.echo(json.dumps(prof, indent=2))


def _print_plan(r: Dict[str, Any]) -> None:
    from .cli import _fmt_bytes, _table

    pl, pr = r["placement"], r["predicted"]
    budget = _fmt_bytes(r["mem_budget"]) if r["mem_budget"] else "none (resident)"
    typer.echo(f"model    {r['model']}")
    typer.echo(f"profile  {r['profile']}, {r['threads']} threads, n_ctx {r['n_ctx']}, budget {budget}")
    if pl["mode"] == "streaming" and not pl["streamed_bytes"]:
        typer.echo(f"layers   all {len(pl['units'])} pinned ({_fmt_bytes(pl['pinned_bytes'])}); nothing streams")
    elif pl["mode"] == "streaming":
        n_streamed = sum(u["place"] == "streamed" for u in pl["units"])
        typer.echo(f"layers   {len(pl['units']) - n_streamed} pinned ({_fmt_bytes(pl['pinned_bytes'])}), "
                   f"{n_streamed} streamed ({_fmt_bytes(pl['streamed_bytes'])}) through a window of {pl['window']} "
                   f"slots of {_fmt_bytes(pl['slot_bytes'])}")
    else:
        typer.echo(f"layers   all {len(pl['units'])} resident ({_fmt_bytes(pl['pinned_bytes'])})")
    if pl["expert_cache"]:
        ec = pl["expert_cache"]
        typer.echo(f"experts  cache of {ec['slots']} of {ec['total']} experts ({_fmt_bytes(ec['bytes'])}); "
                   f"predicted miss rate {pr['expert_miss_rate']:.2f} (uniform routing)")
    typer.echo("memory   " + ", ".join(f"{k} {_fmt_bytes(v)}" for k, v in pl["memory"].items() if v and k != "total")
               + f"; total {_fmt_bytes(pl['memory']['total'])}")
    typer.echo(f"flash    {_fmt_bytes(r['flash_bytes_per_token'])} read per decoded token")
    typer.echo(_table(["unit", "bytes", "place"], [[u["name"], _fmt_bytes(u["bytes"]), u["place"]]
                                                   for u in pl["units"]], indent="  "))
    d, p = pr["decode"], pr["prefill"]
    typer.echo("predicted")
    typer.echo(f"  decode   {pr['decode_tok_s']:.2f} tok/s ({d['bound']} bound: kernels {d['kernels_s'] * 1e3:.1f} ms, "
               f"memory {d['memory_s'] * 1e3:.1f} ms, flash {d['flash_s'] * 1e3:.1f} ms per token)")
    typer.echo(f"  prefill  {pr['prefill_tok_s']:.1f} tok/s over {pr['n_prompt']} tokens ({p['bound']} bound)")
    typer.echo(f"  TTFT     {pr['ttft_s']:.2f} s warm, {pr['ttft_cold_s']:.2f} s cold "
               f"(reading {pr['load_s']:.2f} s of pinned weights first)")


def plan_command(
    model: Path = typer.Argument(..., show_default=False, help="GGUF model file."),
    profile: str = typer.Option("local", "--profile", "-P", help="Device profile: a JSON file, a shipped "
                                "profile's name, or 'local' (this machine's, from `edge-rt profile`)."),
    mem_budget: Optional[str] = typer.Option(
        None, "--mem-budget", "-m", help="Memory cap, e.g. 1.5GB (default: none, every weight resident)."),
    threads: Optional[int] = typer.Option(None, "-t", "--threads", min=1, help="Threads (default: the profile's)."),
    ctx: Optional[int] = typer.Option(None, "-c", "--ctx", min=1,
                                      help="Context size in tokens (default: min(2048, training context))."),
    window: Optional[int] = typer.Option(None, "--window", min=1, help="Streaming window slots (with a budget)."),
    expert_cache: Optional[str] = typer.Option(None, "--expert-cache", help="MoE expert cache bytes, e.g. 600MB."),
    prompt_tokens: int = typer.Option(128, "--prompt-tokens", "-p", min=1, help="Prompt length for TTFT/prefill."),
    auto: bool = typer.Option(False, "--auto", help="Choose the budget (if not given) and window as "
                                                    "load(plan='auto') does."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    from .cli import _check_budget_option, _user_errors

    with _user_errors():
        from .planner import choose, plan

        _check_budget_option(mem_budget)
        kw = dict(mem_budget=mem_budget, threads=threads, n_ctx=ctx, window=window, expert_cache=expert_cache,
                  n_prompt=prompt_tokens)
        r = choose(model, profile, **kw) if auto else plan(model, profile, **kw)
        if as_json:
            typer.echo(json.dumps(r, indent=2))
        else:
            _print_plan(r)


def predicted_beside_measured(m: Any, profile: Optional[str], n_prompt: int, measured: Dict[str, float]) -> Any:
    """The plan of the loaded model ``m`` for ``profile`` ('local': only when this machine has a profile; None:
    none), printed on stderr beside the ``measured`` decode/prefill tok/s; returns the prediction or None."""
    from .devices.profile_schema import default_profile_path
    from .planner import predict_for_model

    if profile is None or (profile == "local" and not default_profile_path().is_file()):
        return None
    from .cli import _err as err
    from .errors import EdgeRTError

    try:
        pr = predict_for_model(m, profile, n_prompt)["predicted"]
    except EdgeRTError as e:  # the run itself succeeded: say why there is no prediction, do not fail it
        err(f"no prediction: {e}")
        return None
    for k in ("decode", "prefill"):
        got, want = measured.get(f"{k}_tok_s"), pr[f"{k}_tok_s"]
        if got:
            err(f"predicted {k} {want:.2f} tok/s, measured {got:.2f} ({got / want:.2f}x)")
    return pr


def register(app: typer.Typer) -> None:
    """Add ``profile`` and ``plan`` to the CLI."""
    app.command(name="profile", help=PROFILE_HELP)(profile_command)
    app.command(name="plan", help=PLAN_HELP.format(shipped=_shipped()))(plan_command)
