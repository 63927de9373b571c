"""Chat templates (edge_rt/chat_template.py): real templates render as llama-cpp-python renders them,
built-in templates match their families' real ones, and hostile templates fail with ChatTemplateError
within their limits (never a hang, an escape or a gigabyte string). Model.chat on SmolLM2 (its own
template from the GGUF) is greedy-identical to llama-cpp-python's chat completion."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import edge_rt
from edge_rt.chat_template import BUILTIN_TEMPLATES, ChatTemplate, TemplateLimits
from edge_rt.errors import ChatTemplateError, InvalidArgumentError

from helpers import requires_llama_cpp

DATA = Path(__file__).parent / "data" / "chat_templates"
# llama.cpp's get_chat_template.py prints most templates with one newline the model's template lacks.
REAL = {p.stem: p.read_text(encoding="utf-8").removesuffix("\n") for p in sorted(DATA.glob("*.jinja"))}

CONVERSATION = [
    {"role": "user", "content": "Hello, who are you?"},
    {"role": "assistant", "content": "  I am a helpful assistant.  "},
    {"role": "user", "content": "Name a prime number: ünïcode 日本"},
]
WITH_SYSTEM = [{"role": "system", "content": "Be brief."}] + CONVERSATION


def _reference_render(source: str, messages, bos: str = "<s>", eos: str = "</s>", add_generation_prompt=True) -> str:
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    return Jinja2ChatFormatter(source, eos_token=eos, bos_token=bos,
                               add_generation_prompt=add_generation_prompt)(messages=messages).prompt


@requires_llama_cpp
@pytest.mark.parametrize("name", sorted(REAL))
def test_real_templates_render_as_llama_cpp_python(name):
    source = REAL[name]
    messages = CONVERSATION if "gemma-2" in name else WITH_SYSTEM  # Gemma 2 refuses a system role
    ours = ChatTemplate(source, bos_token="<s>", eos_token="</s>").render(messages)
    assert ours == _reference_render(source, messages)
    assert "Name a prime number: ünïcode 日本" in ours


@requires_llama_cpp
@pytest.mark.parametrize("name", sorted(REAL))
def test_real_templates_without_the_generation_prompt(name):
    """add_generation_prompt=False (a conversation rendered for its own sake, e.g. to count its tokens):
    the same text as llama-cpp-python's renderer with that flag (what a template does without it is its
    own: Phi-3.5 closes with the EOS instead, Mistral Nemo's ignores the flag)."""
    source = REAL[name]
    messages = CONVERSATION if "gemma-2" in name else WITH_SYSTEM
    template = ChatTemplate(source, bos_token="<s>", eos_token="</s>")
    without = template.render(messages, add_generation_prompt=False)
    assert without == _reference_render(source, messages, add_generation_prompt=False)
    assert (without != template.render(messages)) == ("add_generation_prompt" in source)


def test_template_raise_exception_is_a_chat_template_error():
    gemma = ChatTemplate(REAL["google-gemma-2-2b-it"], bos_token="<bos>")
    with pytest.raises(ChatTemplateError, match="System role not supported"):
        gemma.render(WITH_SYSTEM)


def test_llama3_template_calls_strftime_now():
    out = ChatTemplate(REAL["meta-llama-Llama-3.2-3B-Instruct"], bos_token="<|begin_of_text|>").render(CONVERSATION)
    assert f"Today Date: {time.strftime('%d %b %Y')}" in out


@pytest.mark.parametrize("builtin, real, messages", [
    ("chatml", "Qwen-Qwen2.5-7B-Instruct", WITH_SYSTEM),
    ("gemma", "google-gemma-2-2b-it", CONVERSATION),
    ("gemma", "google-gemma-3-270m-it", WITH_SYSTEM),
    ("phi3", "microsoft-Phi-3.5-mini-instruct", WITH_SYSTEM),
])
def test_builtin_templates_match_their_families(builtin, real, messages):
    ours = ChatTemplate(builtin, bos_token="<bos>", eos_token="<eos>").render(messages)
    assert ours == ChatTemplate(REAL[real], bos_token="<bos>", eos_token="<eos>").render(messages)


def test_builtin_llama3_matches_llama3_without_the_date_header():
    out = ChatTemplate("llama3", bos_token="<|begin_of_text|>").render(WITH_SYSTEM)
    assert out == ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
                   "<|start_header_id|>user<|end_header_id|>\n\nHello, who are you?<|eot_id|>"
                   "<|start_header_id|>assistant<|end_header_id|>\n\nI am a helpful assistant.<|eot_id|>"
                   "<|start_header_id|>user<|end_header_id|>\n\nName a prime number: ünïcode 日本<|eot_id|>"
                   "<|start_header_id|>assistant<|end_header_id|>\n\n")


def test_builtin_gemma_folds_the_system_message_into_the_first_turn():
    out = ChatTemplate("gemma", bos_token="<bos>").render(WITH_SYSTEM)
    assert out.startswith("<bos><start_of_turn>user\nBe brief.\n\nHello, who are you?<end_of_turn>\n")


def test_tojson_keeps_non_ascii_and_loop_controls_work():
    t = ChatTemplate("{% for m in messages %}{% if loop.index > 1 %}{% break %}{% endif %}{{ m | tojson }}"
                     "{% endfor %}")
    assert t.render(CONVERSATION) == '{"role": "user", "content": "Hello, who are you?"}'


@pytest.mark.parametrize("messages, field", [
    ([], "messages"),
    ([{"role": "wizard", "content": "x"}], r"messages\[0\].role"),
    ([{"role": "user", "content": 3}], r"messages\[0\].content"),
    ([{"role": "user"}, "x"], r"messages\[0\].content"),
])
def test_malformed_messages_name_the_field(messages, field):
    with pytest.raises(InvalidArgumentError, match=field):
        ChatTemplate("chatml").render(messages)


def test_content_parts_are_joined():
    msg = [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]
    assert "user\nab<|im_end|>" in ChatTemplate("chatml").render(msg)


# ---- hostile templates -------------------------------------------------------------------------

LIMITS = TemplateLimits(max_template_bytes=64 * 1024, max_output_chars=1 << 20, timeout_s=0.5)

HOSTILE = {
    "nested range loops": ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
                           "longer than the limit"),
    "nested loops over a list": ("{% set l = [0] * 100000 %}{% for a in l %}{% for b in l %}{% endfor %}"
                                 "{% endfor %}", "longer than the limit"),
    "recursive macro": ("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", "recursion"),
    "__class__ escape": ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "sandbox"),
    "__globals__ escape": ("{{ cycler.__init__.__globals__.os.system('touch /tmp/pwned') }}", "sandbox"),
    "__builtins__ via self": ("{{ self.__init__.__globals__.__builtins__ }}", "sandbox"),
    "mutating a list": ("{{ messages.append({'role': 'user', 'content': 'x'}) }}", "sandbox"),
    "string times a huge number": ("{{ 'x' * 10000000000 }}", "over the output limit"),
    "list times a huge number": ("{{ ['x'] * 10000000000 }}", "over the output limit"),
    "doubling with ~": ("{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}"
                        "{% endfor %}{{ ns.s }}", "over the output limit"),
    "doubling with +": ("{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}"
                        "{% endfor %}", "over the output limit"),
    "output stream": ("{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}", "exceeds the limit"),
    "% width": ("{{ '%0999999999d' % 1 }}", "over the output limit"),
    "format width": ("{{ '{:>999999999}'.format('a') }}", "over the output limit"),
    "center filter": ("{{ 'a' | center(999999999) }}", "over the output limit"),
    "join of a big list": ("{{ (['x' * 1000] * 5000) | join }}", "over the output limit"),
    "power": ("{{ 10 ** 10000000 }}", "exponent"),
    "format filter width": ("{{ '%0999999999d' | format(1) }}", "over the output limit"),
    "replace filter": ("{{ ('a' * 1000000) | replace('a', 'b' * 1000) }}", "over the output limit"),
    "replace method": ("{{ ('a' * 1000000).replace('a', 'b' * 1000) }}", "over the output limit"),
    "indent by a string": ("{{ ('x\\n' * 500000) | indent('y' * 1000) }}", "over the output limit"),
    "expandtabs": ("{{ ('\\t' * 1000000).expandtabs(1000) }}", "over the output limit"),
    "raise_exception": ("{{ raise_exception('nope') }}", "the template raised: nope"),
    "syntax error": ("{% for %}", "syntax error on line 1"),
    "undefined call": ("{{ no_such_function() }}", "UndefinedError"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_template_fails_with_a_named_error_in_time(name, tmp_path):
    source, message = HOSTILE[name]
    t0 = time.monotonic()
    with pytest.raises(ChatTemplateError, match=message):
        ChatTemplate(source, limits=LIMITS).render(CONVERSATION)
    assert time.monotonic() - t0 < LIMITS.timeout_s + 1.5
    assert not Path("/tmp/pwned").exists()


def test_a_field_width_under_the_limit_is_allowed():
    assert ChatTemplate("{{ '%05d' % 42 }}{{ '{:>8}'.format('x') }}{{ 'ab' | center(6) }}").render(CONVERSATION) == (
        "00042       x  ab  ")


def test_oversized_template_is_refused_before_compiling():
    with pytest.raises(ChatTemplateError, match="over the limit of 65,536"):
        ChatTemplate("x" * (64 * 1024 + 1), limits=LIMITS)


def test_a_timed_out_render_leaves_the_next_one_working():
    slow = ChatTemplate(HOSTILE["nested range loops"][0], limits=LIMITS)
    with pytest.raises(ChatTemplateError):
        slow.render(CONVERSATION)
    assert ChatTemplate("chatml", limits=LIMITS).render(CONVERSATION).endswith("<|im_start|>assistant\n")


# ---- Model.chat ----------------------------------------------------------------------------------

def test_model_chat_uses_the_gguf_template_and_fails_named_on_a_hostile_one(synthetic_model):
    good = synthetic_model(chat_template="{% for m in messages %}[{{ m['role'] }}]{{ m['content'] }}{% endfor %}")
    with edge_rt.load(good, threads=1) as m:
        assert m.chat_template().name == "tokenizer.chat_template"
        assert m.chat_template().render([{"role": "user", "content": "hi"}]) == "[user]hi"
        reply = m.chat([{"role": "user", "content": "hi"}], max_tokens=4, seed=0)
        assert m.last_result.n_prompt == len(m.tokenize("[user]hi"))
        assert reply == "".join(m.chat_stream([{"role": "user", "content": "hi"}], max_tokens=4, seed=0))
        assert m.chat_template("chatml").name == "chatml"
    hostile = synthetic_model(chat_template="{{ ''.__class__.__mro__[1].__subclasses__() }}")
    with edge_rt.load(hostile, threads=1) as m:
        with pytest.raises(ChatTemplateError, match="sandbox"):
            m.chat([{"role": "user", "content": "hi"}], max_tokens=4)
        assert m.generate("abc", max_tokens=2, seed=0) is not None  # the model itself is unharmed


def test_model_without_a_template_uses_chatml(tiny_model):
    with edge_rt.load(tiny_model, threads=1) as m:
        assert m.chat_template().name == "chatml"
        assert set(BUILTIN_TEMPLATES) == {"chatml", "llama3", "gemma", "phi3"}


@requires_llama_cpp
def test_smollm2_chat_is_greedy_identical_to_llama_cpp_python(request):
    import real_models
    from test_real_models import _mirrors

    if not _mirrors():
        # As in tests/test_real_models.py: token for token where edge_rt's ISA mirrors the llama.cpp build
        # installed; against another (e.g. EDGE_RT_ISA=avx2 and an AVX-512 build) the greedy reply can turn
        # at a near tie (seen: the 5th token).
        request.applymarker(pytest.mark.xfail(strict=False, reason="edge_rt's ISA does not mirror this "
                                              "llama.cpp build"))

    path = real_models.model_path("smollm2-135m-instruct-q4_1")
    if path is None:
        pytest.skip(real_models.unavailable_reason("smollm2-135m-instruct-q4_1"))
    from helpers import open_llama_cpp

    msgs = [{"role": "user", "content": "What is the capital of France?"}]
    with edge_rt.load(path, threads=1, n_ctx=256) as m:
        assert m.chat_template().render(msgs).startswith("<|im_start|>system\nYou are a helpful AI assistant named "
                                                          "SmolLM")
        ours = m.chat(msgs, max_tokens=16, temperature=0)
        assert m.last_result.finish_reason == "length"
    peer = open_llama_cpp(path, n_ctx=256)  # one thread: ggml's spinning barrier crawls on a busy machine
    try:
        theirs = peer.create_chat_completion(messages=msgs, temperature=0, max_tokens=16)
    finally:
        peer.close()
    assert ours == theirs["choices"][0]["message"]["content"]

