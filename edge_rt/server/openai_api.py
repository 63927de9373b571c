"""OpenAI request checking and response shapes for ``/v1/completions`` and ``/v1/chat/completions``.

Requests are checked field by field; every problem raises :class:`RequestError` naming the field, which
the app turns into OpenAI's error body (``{"error": {"message", "type", "param", "code"}}``) with
status 400. Fields OpenAI defines that edge_rt does not implement are accepted at their neutral value
(``n`` 1, no ``logprobs``, penalties 0, no ``tools``) and refused otherwise, so a client never gets
silently different behaviour. Extensions shared with llama.cpp's server: ``top_k``, ``min_p``,
``repeat_penalty``.
"""

from __future__ import annotations

import math
import time
import uuid
from typing import Any, Dict, Optional

from ..chat_template import normalize_messages
from ..errors import InvalidArgumentError
from ..sampling import SamplingParams

__all__ = ["RequestError", "chat_params", "completion_params", "finish_reason", "completion_body", "chat_body",
           "chunk", "usage", "timings", "new_id", "models_body", "sse", "error_from"]


class RequestError(Exception):
    """A request the server refuses: HTTP ``status``, OpenAI ``type``, the offending ``param``."""

    def __init__(self, message: str, param: Optional[str] = None, status: int = 400,
                 kind: str = "invalid_request_error", code: Optional[str] = None) -> None:
        super().__init__(message)
        self.param, self.status, self.kind, self.code = param, status, kind, code

    def body(self) -> Dict[str, Any]:
        return {"error": {"message": str(self), "type": self.kind, "param": self.param, "code": self.code}}


def _number(body: Dict[str, Any], name: str, default: Optional[float]) -> Optional[float]:
    v = body.get(name, default)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise RequestError(f"'{name}' must be a number, got {v!r:.40}", name)
    return float(v)


def _integer(body: Dict[str, Any], name: str, default: Optional[int], minimum: int = 0) -> Optional[int]:
    v = body.get(name, default)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, int):
        raise RequestError(f"'{name}' must be an integer, got {v!r:.40}", name)
    if v < minimum:
        raise RequestError(f"'{name}' must be >= {minimum}, got {v}", name)
    return v


def _neutral(body: Dict[str, Any], name: str, neutral: Any, why: str) -> None:
    v = body.get(name)
    if v is not None and v != neutral:
        raise RequestError(f"'{name}' = {v!r:.40} is not supported: {why}", name)


def _common(body: Dict[str, Any], model_id: str, n_ctx: int, max_tokens_default: Optional[int]) -> Dict[str, Any]:
    """Sampling and stop fields shared by both endpoints -> Model.stream keyword arguments."""
    model = body.get("model")
    if model is not None and model != model_id:
        raise RequestError(f"the model {model!r:.80} does not exist: this server serves {model_id!r}", "model",
                           code="model_not_found")
    _neutral(body, "n", 1, "one choice per request")
    _neutral(body, "presence_penalty", 0, "use repeat_penalty")
    _neutral(body, "frequency_penalty", 0, "use repeat_penalty")
    _neutral(body, "logit_bias", {}, "not implemented")
    if body.get("stream") is not None and not isinstance(body["stream"], bool):
        raise RequestError("'stream' must be a boolean", "stream")
    max_tokens = _integer(body, "max_tokens", max_tokens_default)
    if "max_completion_tokens" in body:
        max_tokens = _integer(body, "max_completion_tokens", max_tokens)
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop is not None and (not isinstance(stop, list) or len(stop) > 16
                             or not all(isinstance(s, str) and s for s in stop)):
        raise RequestError("'stop' must be a non-empty string or a list of at most 16 of them", "stop")
    params = {
        "max_tokens": n_ctx if max_tokens is None else max_tokens,
        "temperature": _number(body, "temperature", 0.8),
        "top_p": _number(body, "top_p", 0.95),
        "top_k": _integer(body, "top_k", 40),
        "min_p": _number(body, "min_p", 0.0),
        "repeat_penalty": _number(body, "repeat_penalty", 1.0),
        "seed": _integer(body, "seed", None),
        "stop": stop or None,
    }
    try:
        SamplingParams(temperature=params["temperature"], top_k=params["top_k"], top_p=params["top_p"],
                       min_p=params["min_p"], repeat_penalty=params["repeat_penalty"])
    except InvalidArgumentError as e:
        field = str(e).split("] ", 1)[-1].split(" ", 1)[0]
        raise RequestError(str(e), field) from None
    return params


def completion_params(body: Dict[str, Any], model_id: str, n_ctx: int) -> tuple:
    """(prompt text, Model.stream kwargs) of a /v1/completions request (OpenAI's max_tokens default 16)."""
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str) or not prompt:
        raise RequestError("'prompt' must be a non-empty string (or a list of exactly one)", "prompt")
    _neutral(body, "echo", False, "the prompt is not echoed")
    _neutral(body, "logprobs", None, "not implemented")
    _neutral(body, "best_of", 1, "one choice per request")
    _neutral(body, "suffix", None, "not implemented")
    return prompt, _common(body, model_id, n_ctx, 16)


def chat_params(body: Dict[str, Any], model_id: str, n_ctx: int) -> tuple:
    """(messages, Model.chat_stream kwargs) of a /v1/chat/completions request."""
    try:
        messages = normalize_messages(body.get("messages"), "chat")
    except InvalidArgumentError as e:
        raise RequestError(str(e), "messages") from None
    _neutral(body, "tools", None, "tool calls are not implemented")
    _neutral(body, "logprobs", False, "not implemented")
    fmt = body.get("response_format")
    if fmt is not None and fmt != {"type": "text"}:
        raise RequestError("'response_format' other than text is not supported", "response_format")
    opts = body.get("stream_options")
    if opts is not None and not isinstance(opts, dict):
        raise RequestError("'stream_options' must be an object", "stream_options")
    return messages, _common(body, model_id, n_ctx, None)


def finish_reason(result: Any) -> Optional[str]:
    """OpenAI's finish_reason for a GenerationResult: stop (end of turn, stop string) or length."""
    return {"eog": "stop", "stop": "stop", "length": "length", "context": "length"}.get(result.finish_reason)


def usage(result: Any) -> Dict[str, int]:
    return {"prompt_tokens": result.n_prompt, "completion_tokens": result.n_generated,
            "total_tokens": result.n_prompt + result.n_generated}


def timings(result: Any, ttft_s: Optional[float]) -> Dict[str, Any]:
    """llama.cpp server's ``timings`` (milliseconds), plus the time to first token."""
    return {"prompt_n": result.n_prompt - result.n_cached, "prompt_ms": result.prefill_s * 1e3,
            "cache_n": result.n_cached, "predicted_n": result.n_generated, "predicted_ms": result.decode_s * 1e3,
            "predicted_per_second": result.decode_tok_s,
            "ttft_ms": None if ttft_s is None else ttft_s * 1e3}


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def completion_body(rid: str, model_id: str, text: str, result: Any, ttft_s: Optional[float]) -> Dict[str, Any]:
    return {"id": rid, "object": "text_completion", "created": int(time.time()), "model": model_id,
            "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason(result)}],
            "usage": usage(result), "timings": timings(result, ttft_s)}


def chat_body(rid: str, model_id: str, text: str, result: Any, ttft_s: Optional[float]) -> Dict[str, Any]:
    return {"id": rid, "object": "chat.completion", "created": int(time.time()), "model": model_id,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                         "finish_reason": finish_reason(result)}],
            "usage": usage(result), "timings": timings(result, ttft_s)}


def chunk(rid: str, model_id: str, chat: bool, text: Optional[str], reason: Optional[str] = None,
          first: bool = False) -> Dict[str, Any]:
    """One streamed event's body: a text delta, or (``text`` None) the closing one with ``reason``."""
    if chat:
        delta: Dict[str, Any] = {"role": "assistant", "content": text or ""} if first else (
            {"content": text} if text is not None else {})
        choice: Dict[str, Any] = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}
        obj = "chat.completion.chunk"
    else:
        choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": reason}
        obj = "text_completion"
    return {"id": rid, "object": obj, "created": int(time.time()), "model": model_id, "choices": [choice]}


def models_body(model_id: str, created: int) -> Dict[str, Any]:
    return {"object": "list", "data": [{"id": model_id, "object": "model", "created": created, "owned_by": "edge_rt"}]}


def sse(data: Any) -> bytes:
    import json

    return f"data: {data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)}\n\n".encode()


def error_from(e: BaseException, input_field: str) -> RequestError:
    """The RequestError for an exception raised while generating: the caller's fault (a prompt over
    the context, the template's own raise_exception) is a 400, the server's (I/O, a broken or hostile
    template, memory) a 500; the type names the edge_rt error class."""
    from ..errors import ChatTemplateError

    msg = " ".join(str(e).split()) or type(e).__name__
    if isinstance(e, InvalidArgumentError):
        return RequestError(msg, input_field)
    if isinstance(e, ChatTemplateError) and "the template raised" in msg:
        return RequestError(msg, "messages", kind="chat_template_error")
    return RequestError(msg, None, status=500, kind=type(e).__name__)

