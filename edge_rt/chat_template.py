"""Chat templates: a model's ``tokenizer.chat_template`` (Jinja) rendered safely, or a built-in one.

A GGUF's chat template is code from the file. llama-cpp-python rendered it in a plain Jinja
environment, and a crafted GGUF ran shell commands (CVE-2024-34359). Here a template runs in Jinja2's
``ImmutableSandboxedEnvironment`` (no underscore attributes, no unsafe callables, no mutation of
lists and dicts) under three limits, each of which fails with :class:`~edge_rt.errors.ChatTemplateError`
naming the limit, never a hang:

* **template size** (``max_template_bytes``), checked before compiling;
* **output size** (``max_output_chars``): checked on the output stream and, before they are built,
  on the values that can grow a string in one step (``*``, ``+``, ``%``, ``~``, ``str.format``, every
  filter's integer arguments and result), so ``'x' * 10**10`` fails without allocating;
* **render time** (``timeout_s``): the render runs on a worker thread; past the deadline an exception
  is raised inside it at its next bytecode (compiled templates are Python code), which ends any loop.

The environment mirrors Hugging Face transformers' (``trim_blocks``, ``lstrip_blocks``, loop controls,
``raise_exception``, ``strftime_now``, a ``tojson`` that keeps non-ASCII text), so templates written for
it render the same here.
"""

from __future__ import annotations

import ctypes
import json
import re
import threading
import time
from dataclasses import dataclass
from functools import wraps
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from .errors import ChatTemplateError

__all__ = ["ChatTemplate", "TemplateLimits", "BUILTIN_TEMPLATES", "normalize_messages"]


@dataclass(frozen=True)
class TemplateLimits:
    """Limits of one template: source bytes, output characters (also the largest string any single
    operation may build) and seconds of render time."""

    max_template_bytes: int = 256 * 1024
    max_output_chars: int = 1 << 20
    timeout_s: float = 2.0


# Built-in templates for files without one, in Hugging Face's Jinja dialect. Each follows its model
# family's published format: ChatML (Qwen, SmolLM), Llama 3 header tokens, Gemma turns (a system
# message is folded into the first user turn: Gemma has no system role), Phi-3 tags.
BUILTIN_TEMPLATES: Dict[str, str] = {
    "chatml": (
        "{% for message in messages %}"
        "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"),
    "llama3": (
        "{{ bos_token }}"
        "{% for message in messages %}"
        "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim"
        " + '<|eot_id|>' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"),
    "gemma": (
        "{{ bos_token }}"
        "{% if messages[0]['role'] == 'system' %}"
        "{% set first_prefix = messages[0]['content'] + '\n\n' %}{% set loop_messages = messages[1:] %}"
        "{% else %}{% set first_prefix = '' %}{% set loop_messages = messages %}{% endif %}"
        "{% for message in loop_messages %}"
        "{% if message['role'] == 'system' %}{{ raise_exception('gemma: a system message must come first') }}"
        "{% endif %}"
        "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
        "{{ '<start_of_turn>' + role + '\n' + (first_prefix if loop.first else '') + message['content'] | trim"
        " + '<end_of_turn>\n' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"),
    "phi3": (
        "{% for message in messages %}"
        "{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"),
}

ROLES = ("system", "user", "assistant", "tool")


def normalize_messages(messages: Any, op: str = "chat") -> List[Dict[str, Any]]:
    """Checks OpenAI-style messages (a list of ``{"role", "content"}`` dicts; ``content`` a string or a
    list of ``{"type": "text", "text"}`` parts, joined) and returns plain dicts with string content.

    Raises:
        InvalidArgumentError: the message (by index) and field that are wrong.
    """
    from .errors import InvalidArgumentError

    if not isinstance(messages, (list, tuple)) or not messages:
        raise InvalidArgumentError(f"[{op}] messages must be a non-empty list of {{'role', 'content'}} dicts")
    out: List[Dict[str, Any]] = []
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping):
            raise InvalidArgumentError(f"[{op}] messages[{i}] must be a dict with 'role' and 'content', got {m!r:.60}")
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            raise InvalidArgumentError(f"[{op}] messages[{i}].role must be one of {', '.join(ROLES)}, got {role!r:.40}")
        if isinstance(content, list):
            parts = []
            for part in content:
                if not (isinstance(part, Mapping) and part.get("type") == "text" and isinstance(part.get("text"), str)):
                    raise InvalidArgumentError(f"[{op}] messages[{i}].content parts must be "
                                               "{'type': 'text', 'text': str} (only text is supported)")
                parts.append(part["text"])
            content = "".join(parts)
        if content is None and role == "assistant":
            content = ""
        if not isinstance(content, str):
            raise InvalidArgumentError(f"[{op}] messages[{i}].content must be a string, got {type(content).__name__}")
        out.append({**{k: v for k, v in m.items() if isinstance(k, str)}, "role": role, "content": content})
    return out


class _RenderTimeout(BaseException):
    """Raised inside the render thread at its deadline (BaseException: templates cannot catch it)."""


def _raise_in_thread(thread: threading.Thread, exc: type) -> None:
    """Raise ``exc`` in ``thread`` at its next Python bytecode (CPython's PyThreadState_SetAsyncExc)."""
    if thread.ident is not None:
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), ctypes.py_object(exc))


_BIG_NUMBER = re.compile(r"\d{7,}")  # format field widths worth checking against the output limit


def _growth(name: str, value: Any, args: Sequence[Any], kwargs: Mapping[str, Any]) -> int:
    """An upper bound of the characters that string method or filter ``name`` builds from ``value``
    with these arguments, computed without building it (0 when ``name`` is not one that can grow a
    string past its inputs): what the output limit is checked against before the call."""
    if not isinstance(value, str):
        return 0
    params = list(args) + list(kwargs.values())
    if name in ("format", "format_map"):
        return max([int(n) for n in _BIG_NUMBER.findall(value)] + [0])  # the widest field width
    if name in ("center", "ljust", "rjust", "zfill"):
        return max([a for a in params if isinstance(a, int)] + [0])
    if name == "expandtabs":
        tab = next((a for a in params if isinstance(a, int)), 8)
        return len(value) + value.count("\t") * max(tab, 0)
    if name == "indent":
        width = kwargs.get("width", args[0] if args else 4)
        per_line = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
        return len(value) + (value.count("\n") + 1) * max(per_line, 0)
    if name == "replace" and len(params) >= 2 and isinstance(params[0], str) and isinstance(params[1], str):
        old, new = params[0], params[1]
        hits = len(value) + 1 if not old else value.count(old)
        return len(value) + hits * max(len(new) - len(old), 0)
    return 0


def _make_environment(limits: TemplateLimits) -> Any:
    """An ImmutableSandboxedEnvironment whose growth operations check ``limits.max_output_chars``."""
    from jinja2.compiler import CodeGenerator
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    cap = limits.max_output_chars

    def too_big(what: str, n: int) -> ChatTemplateError:
        return ChatTemplateError(f"[chat template] {what} would build {n:,} characters, over the output limit "
                                 f"of {cap:,}")

    def size(x: Any) -> int:
        return len(x) if isinstance(x, (str, bytes, list, tuple, dict)) else 0

    def check_result(what: str, value: Any) -> Any:
        if size(value) > cap:
            raise too_big(what, size(value))
        return value

    class GuardedCodeGenerator(CodeGenerator):
        # `~` concatenation compiles to a join the sandbox never sees: route its result through a check.
        def visit_Concat(self, node: Any, frame: Any) -> None:
            self.write("environment.check_concat(")
            super().visit_Concat(node, frame)
            self.write(")")

    class Env(ImmutableSandboxedEnvironment):
        code_generator_class = GuardedCodeGenerator
        intercepted_binops = frozenset(["*", "**", "+", "%"])

        def check_concat(self, value: Any) -> Any:
            return check_result("'~'", value)

        def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
            if operator == "*":
                for seq, n in ((left, right), (right, left)):
                    if size(seq) and isinstance(n, int) and size(seq) * n > cap:
                        raise too_big("'*'", size(seq) * n)
            elif operator == "+" and size(left) + size(right) > cap:
                raise too_big("'+'", size(left) + size(right))
            elif operator == "%" and _growth("format", left, (), {}) > cap:
                raise too_big("'%'", _growth("format", left, (), {}))
            elif operator == "**" and isinstance(right, int) and abs(right) > 4096:
                raise ChatTemplateError(f"[chat template] '**' with exponent {right} (at most 4096)")
            return check_result(f"'{operator}'", super().call_binop(context, operator, left, right))

        def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
            name = getattr(__obj, "__name__", "")
            # the sandbox hands str.format out wrapped (functools.update_wrapper keeps __wrapped__)
            owner = getattr(getattr(__obj, "__wrapped__", __obj), "__self__", None)
            if isinstance(owner, str):
                if _growth(name, owner, args, kwargs) > cap:
                    raise too_big(f"{name}()", _growth(name, owner, args, kwargs))
                if name == "join" and args and isinstance(args[0], (list, tuple)):
                    total = sum(size(x) for x in args[0]) + len(owner) * len(args[0])
                    if total > cap:
                        raise too_big("join()", total)
            return check_result("a call", super().call(__context, __obj, *args, **kwargs))

    env = Env(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])

    def guard_filter(name: str, f: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(f)  # keeps jinja's pass_context / pass_environment marks
        def guarded(*args: Any, **kwargs: Any) -> Any:
            for a in (*args, *kwargs.values()):
                if isinstance(a, int) and not isinstance(a, bool) and a > cap:
                    raise too_big(f"filter '{name}'", a)
            values = [i for i, a in enumerate(args) if isinstance(a, str)]  # the filtered value (after context)
            if values and _growth(name, args[values[0]], args[values[0] + 1:], kwargs) > cap:
                raise too_big(f"filter '{name}'", _growth(name, args[values[0]], args[values[0] + 1:], kwargs))
            if name == "join" and args:
                items = next((a for a in args if isinstance(a, (list, tuple))), None)
                if items is not None and sum(size(x) for x in items) > cap:
                    raise too_big("filter 'join'", sum(size(x) for x in items))
            return check_result(f"filter '{name}'", f(*args, **kwargs))

        return guarded

    def raise_exception(message: str = "") -> None:
        raise ChatTemplateError(f"[chat template] the template raised: {message}")

    def strftime_now(fmt: str) -> str:
        return time.strftime(str(fmt))

    def tojson(value: Any, indent: Optional[int] = None, separators: Any = None, sort_keys: bool = False,
               ensure_ascii: bool = False) -> str:
        return json.dumps(value, indent=indent, separators=separators, sort_keys=sort_keys, ensure_ascii=ensure_ascii)

    env.filters["tojson"] = tojson
    env.filters.pop("lipsum", None)
    env.globals.pop("lipsum", None)
    env.filters = {name: guard_filter(name, f) for name, f in env.filters.items()}
    env.globals.update(raise_exception=raise_exception, strftime_now=strftime_now)
    return env


class ChatTemplate:
    """A compiled chat template: ``render(messages, add_generation_prompt=True, **context)`` -> prompt text.

    Args:
        source: Jinja template text, or the name of a built-in template (:data:`BUILTIN_TEMPLATES`).
        bos_token, eos_token: The model's BOS/EOS token text, visible to the template as ``bos_token``
            and ``eos_token``.
        limits: Size and time limits (:class:`TemplateLimits`).

    Raises:
        ChatTemplateError: the template is over the size limit or does not compile (with the line).
    """

    def __init__(self, source: str, *, bos_token: str = "", eos_token: str = "",
                 limits: TemplateLimits = TemplateLimits(), name: Optional[str] = None) -> None:
        import jinja2

        if not isinstance(source, str):
            raise ChatTemplateError(f"[chat template] expected template text or a built-in name, got {source!r:.60}")
        self.name = name or (source if source in BUILTIN_TEMPLATES else "custom")
        self.source = BUILTIN_TEMPLATES.get(source, source)
        self.limits = limits
        self.bos_token, self.eos_token = bos_token, eos_token
        n = len(self.source.encode("utf-8", errors="replace"))
        if n > limits.max_template_bytes:
            raise ChatTemplateError(f"[chat template] the template is {n:,} bytes, over the limit of "
                                    f"{limits.max_template_bytes:,}")
        self._env = _make_environment(limits)
        try:
            self._template = self._env.from_string(self.source)
        except jinja2.TemplateSyntaxError as e:
            raise ChatTemplateError(f"[chat template] syntax error on line {e.lineno}: {e.message}") from None
        except RecursionError:
            raise ChatTemplateError("[chat template] the template nests too deeply to compile") from None

    def __repr__(self) -> str:
        return f"<ChatTemplate {self.name}>"

    def render(self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True,
               **context: Any) -> str:
        """The prompt text for ``messages`` (see :func:`normalize_messages`); ``context`` adds template
        variables (e.g. ``tools``). Runs on a worker thread under the time limit.

        Raises:
            InvalidArgumentError: malformed messages.
            ChatTemplateError: the template raised, broke a sandbox rule or went over a limit.
        """
        variables = dict(context, messages=normalize_messages(messages), add_generation_prompt=add_generation_prompt,
                         bos_token=self.bos_token, eos_token=self.eos_token)
        result: Dict[str, Any] = {}
        worker = threading.Thread(target=self._render_into, args=(variables, result), name="chat-template",
                                  daemon=True)
        worker.start()
        worker.join(self.limits.timeout_s)
        if worker.is_alive():
            _raise_in_thread(worker, _RenderTimeout)
            worker.join(1.0)  # a thread stuck inside one C call cannot be stopped: it is abandoned (daemon)
            raise ChatTemplateError(f"[chat template] rendering took longer than the limit of "
                                    f"{self.limits.timeout_s:g} s (an endless or huge loop?)")
        if "error" in result:
            raise result["error"]
        return result["text"]

    def _render_into(self, variables: Dict[str, Any], result: Dict[str, Any]) -> None:
        import jinja2

        cap = self.limits.max_output_chars
        try:
            parts: List[str] = []
            n = 0
            for chunk in self._template.generate(**variables):
                n += len(chunk)
                if n > cap:
                    raise ChatTemplateError(f"[chat template] the output exceeds the limit of {cap:,} characters")
                parts.append(chunk)
            result["text"] = "".join(parts)
        except ChatTemplateError as e:
            result["error"] = e
        except jinja2.exceptions.SecurityError as e:
            result["error"] = ChatTemplateError(f"[chat template] blocked by the sandbox: {e}")
        except RecursionError:
            result["error"] = ChatTemplateError("[chat template] recursion too deep (a macro calling itself?)")
        except MemoryError:
            result["error"] = ChatTemplateError("[chat template] out of memory while rendering")
        except _RenderTimeout:
            pass  # the caller has already reported the time limit
        except Exception as e:  # any other failure of template code (TypeError, UndefinedError, ...)
            result["error"] = ChatTemplateError(f"[chat template] {type(e).__name__}: {e}")
