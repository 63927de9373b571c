"""``edge-rt export`` and ``edge-rt eval`` on an export folder (kept apart from cli.py, which registers them)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, Dict, Optional

import typer

from .cli import _err, _fmt_bytes, _StageBars, _user_errors

EXPORT_HELP = (
    "Export a dense llama/qwen2/qwen3 model to integer-only ONNX (opset 21, QDQ) for NPUs: a prefill graph "
    "for --chunk tokens and a decode graph for 1 token, the KV cache (--ctx slots) as static-shape inputs "
    "and outputs, embeddings.npy (the embedding gather runs on the host CPU) and manifest.json (every "
    "tensor's encoding). Schemes: w8a8, w4a8, w8a16, w4a16 (weights int8 per output channel, int4 in "
    "blocks of --w4-block input columns under a per-channel scale (QNN's LPBQ); "
    "activations 8/16-bit static per tensor, with MobileQuant's 16-bit islands: residual stream, norms, "
    "QK^T, softmax, lm_head; more where the error on calibration text says so, --islands). The residual "
    "stream is rotated by an orthogonal matrix folded into the weights (--no-rotate). Ranges: min/max over "
    "calibration text run through the float graph, after a "
    "SmoothQuant migration searched per norm; weights clipped per row and rounded by GPTQ (--ranges).\n\n"
    "MODEL is a GGUF master (F32/F16/BF16), a quantized GGUF (dequantized first; the manifest says so) or a "
    "Hugging Face directory. --check htp loads and runs every graph on the Qualcomm HTP emulator "
    "(onnxruntime-qnn, CPU fallback disabled) and fails naming any node the NPU does not take; "
    "--target htp also writes HTP context binaries for --soc. Both need: pip install 'edge-rt\\[qnn]'.")


def export_command(
    model: Path = typer.Argument(..., show_default=False, help="GGUF file or Hugging Face directory."),
    out_dir: Path = typer.Argument(..., show_default=False, help="Export folder to create."),
    scheme: str = typer.Option("w8a8", "--scheme", help="w8a8, w4a8, w8a16 or w4a16."),
    calib: Optional[Path] = typer.Option(None, "--calib", help="Calibration text (default: built-in held-out code)."),
    chunk: int = typer.Option(64, "--chunk", min=1, help="Prefill graph chunk, in tokens."),
    ctx: int = typer.Option(512, "--ctx", min=1, help="KV cache slots of both graphs."),
    calib_tokens: int = typer.Option(4096, "--calib-tokens", min=1, help="Calibration tokens used at most."),
    target: Optional[str] = typer.Option(None, "--target", help="htp: also write HTP context binaries."),
    soc: str = typer.Option("sm8650", "--soc", help="SoC of --target/--check (sm8650: Snapdragon 8 Gen 3)."),
    check: Optional[str] = typer.Option(None, "--check", help="htp: run every graph on the HTP emulator."),
    ranges: str = typer.Option("search", "--ranges", help="search: SmoothQuant alpha per norm (8-bit schemes), "
                               "weight clip per row and GPTQ rounding, from calibration statistics; minmax: "
                               "min/max ranges and round-to-nearest only (faster)."),
    islands: str = typer.Option("auto", "--islands", help="Extra 16-bit activations of 8-bit schemes. auto: "
                                "promote the groups whose 8-bit error on the calibration text is largest, until "
                                "the KL against the float graph is <= 0.01 or no group removes 10% of it or 0.005; "
                                "none; or a comma list of attn_in, rope, ffn_in, ffn_act, kv (every layer) or "
                                "l<i>.<group>."),
    target_size: Optional[str] = typer.Option(None, "--target-size", help="Size of each graph (e.g. 60MB): every "
                                              "layer's weights int4 or int8, chosen by measured sensitivity "
                                              "(needs --ranges search). Default: the scheme's width everywhere."),
    w4_block: int = typer.Option(16, "--w4-block", help="int4 weights: a 4-bit integer scale per block of this "
                                 "many input columns under a float scale per output channel (QNN's LPBQ; 16, 32 "
                                 "or 64), where it divides K; 0: one scale per output channel."),
    rotate: bool = typer.Option(True, "--rotate/--no-rotate", help="Rotate the residual stream by an orthogonal "
                                "matrix folded into the weights (spreads massive activations; same function)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing OUT_DIR."),
    threads: Optional[int] = typer.Option(None, "-t", "--threads", min=1, help="Threads for calibration runs."),
) -> None:
    with _user_errors():
        from .loading import parse_size
        from .quantize.onnx_export import export_onnx

        target_bytes = parse_size(target_size, "[export] --target-size") if target_size is not None else None

        with contextlib.ExitStack() as stack:
            r = export_onnx(model, out_dir, scheme=scheme, calib=calib, chunk=chunk, ctx=ctx, force=force,
                            target=target, soc=soc, check=check, max_calib_tokens=calib_tokens, threads=threads,
                            progress=_StageBars(stack), range_method=ranges, rotate=rotate, islands=islands,
                            target_size=target_bytes, w4_block=w4_block)
        for n in r.notes:
            _err(f"note: {n}")
        _err(f"exported {model} -> {out_dir} ({r.scheme}): {', '.join(p.name for p in r.graphs.values())}, "
             f"{_fmt_bytes(r.bytes)} in all, calibrated on {r.n_calib_tokens} tokens, {r.seconds:.1f} s")
        if r.check:
            for g, c in r.check["graphs"].items():
                lg = c["logits_vs_cpu_ep"]
                _err(f"check htp: {g}: all nodes on the emulated HTP ({r.check['soc']}); vs ORT's QDQ reference: "
                     f"top-1 {100 * c['top1_vs_cpu_ep']:.1f}%, logits within 3 LSB {100 * lg['within_3_lsb']:.1f}% "
                     f"(max {lg['max_lsb']:.0f}), cache codes within 3 LSB "
                     f"{100 * c['cache_codes_vs_cpu_ep']['within_3_lsb']:.2f}%")


def eval_export(model: Path, reference: Optional[Path], body: str, ctx: Optional[int], max_tokens: Optional[int],
                threads: Optional[int], backend: str, as_json: bool) -> None:
    """``edge-rt eval`` when MODEL is an export folder (called by cli.eval_ inside its error handling)."""
    from .quantize.onnx_eval import evaluate_export

    with contextlib.ExitStack() as stack:
        bars = _StageBars(stack)
        r: Dict[str, Any] = evaluate_export(model, body, backend="ort_cpu" if backend == "edge_rt" else backend,
                                            reference=reference, window=ctx, max_tokens=max_tokens, threads=threads,
                                            progress=lambda d, n: bars("eval", d, n))
    if as_json:
        typer.echo(json.dumps(r, indent=2))
        return
    typer.echo(f"model      {model} ({r['scheme']}, {r['backend']})")
    typer.echo(f"reference  {r['reference']} (float32 NumPy forward)")
    typer.echo(f"tokens     {r['n_tokens']} predicted in {r['n_windows']} windows of {r['n_ctx']}")
    typer.echo(f"perplexity {r['ppl']:.4f} (reference {r['ref_ppl']:.4f})")
    typer.echo(f"KL div     mean {r['kl_mean']:.6f}, median {r['kl_median']:.6f}, p99 {r['kl_p99']:.6f}, "
               f"max {r['kl_max']:.6f} nats")
    typer.echo(f"top-1      {100 * r['top1']:.2f}% agreement")
