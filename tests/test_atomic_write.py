"""Outputs are never half-written (issue 21): every file the tools write goes through
edge_rt.atomic_io.atomic_write. A write that fails (ENOSPC at fsync, a write refused midway by
RLIMIT_FSIZE, a full tmpfs) or a process killed with SIGKILL mid-write leaves either no output or a
complete, loadable one, and the input untouched; the temporary name is unpredictable and a temporary
file swapped for a symlink is never renamed into place."""

from __future__ import annotations

import errno
import hashlib
import os
import resource
import signal
import subprocess
import time
from pathlib import Path

import pytest

import edge_rt
from edge_rt import atomic_io
from edge_rt.atomic_io import atomic_write, write_text_atomic
from edge_rt.convert import convert_gguf

from helpers import python_child


def digest(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def leftovers(folder: Path) -> list:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


@pytest.fixture(scope="module")
def f16_master(tmp_path_factory) -> Path:
    from edge_rt.synthetic import write_synthetic_gguf

    return write_synthetic_gguf(tmp_path_factory.mktemp("master") / "m.gguf", n_vocab=512, n_embd=256, n_ff=512,
                                n_layer=2, n_head=4, weight_type="F16")


def test_temp_names_are_unpredictable_and_private(tmp_path: Path) -> None:
    names = []
    for _ in range(2):
        with atomic_write(tmp_path / "out.bin") as tmp:
            names.append(tmp.name)
            assert tmp.parent == tmp_path and tmp.name.startswith(".out.bin.") and tmp.name.endswith(".tmp")
            assert (tmp.stat().st_mode & 0o777) == 0o600  # nobody reads it half-written
            tmp.write_bytes(b"x")
    assert names[0] != names[1]
    assert (tmp_path / "out.bin").read_bytes() == b"x" and leftovers(tmp_path) == []


def test_swapped_temp_file_is_not_renamed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep")
    with pytest.raises(OSError, match="replaced"):
        with atomic_write(tmp_path / "out.bin") as tmp:
            tmp.unlink()
            tmp.symlink_to(victim)  # an attacker's symlink in a shared folder
    assert not (tmp_path / "out.bin").exists() and victim.read_text() == "keep"


def test_enospc_at_fsync_leaves_nothing(tmp_path: Path, f16_master: Path, monkeypatch) -> None:
    before = digest(f16_master)
    (tmp_path / "old.gguf").write_bytes(b"previous output")

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(atomic_io.os, "fsync", full)
    with pytest.raises(OSError) as e:
        convert_gguf(f16_master, tmp_path / "new.gguf")
    assert e.value.errno == errno.ENOSPC
    with pytest.raises(OSError):
        write_text_atomic(tmp_path / "old.gguf", "replacement")
    assert not (tmp_path / "new.gguf").exists()
    assert (tmp_path / "old.gguf").read_bytes() == b"previous output"  # an existing output is kept
    assert leftovers(tmp_path) == [] and digest(f16_master) == before


def _limit_file_size() -> None:  # in the child: writes past 64 KiB fail with EFBIG (not a signal)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 10, 64 << 10))


@pytest.mark.parametrize("tool", ["convert", "quantize"])
def test_write_failing_midway_leaves_nothing(tmp_path: Path, f16_master: Path, tool: str) -> None:
    before = digest(f16_master)
    out = tmp_path / "out.gguf"
    args = ["--layout", "streaming"] if tool == "convert" else ["--type", "Q8_0"]
    r = python_child(["-m", "edge_rt.cli", tool, str(f16_master), str(out), *args], capture_output=True, text=True,
                     preexec_fn=_limit_file_size, timeout=300)
    assert r.returncode != 0, r.stdout + r.stderr
    assert not out.exists() and leftovers(tmp_path) == [] and digest(f16_master) == before


def test_full_tmpfs_leaves_nothing(tmp_path: Path, f16_master: Path) -> None:
    """A real ENOSPC: a 256 KiB tmpfs (needs root and a kernel that allows the mount, else skipped)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (not root, or not permitted)")
    try:
        before = digest(f16_master)
        with pytest.raises(OSError) as e:
            convert_gguf(f16_master, mnt / "out.gguf")
        assert e.value.errno == errno.ENOSPC
        assert list(mnt.iterdir()) == [] and digest(f16_master) == before
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_kill_9_mid_write_then_rerun(tmp_path: Path, f16_master: Path) -> None:
    before = digest(f16_master)
    out = tmp_path / "out.gguf"
    child = python_child(["-m", "edge_rt.cli", "quantize", str(f16_master), str(out), "--type", "Q4_K"], popen=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and child.poll() is None:
            tmps = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
            if tmps and tmps[0].stat().st_size > 0:  # the writer is inside the file
                break
            time.sleep(0.005)
        assert child.poll() is None, "quantize finished before it could be killed mid-write"
        child.send_signal(signal.SIGKILL)
        child.wait()
    finally:
        if child.poll() is None:
            child.kill()
    assert not out.exists() and digest(f16_master) == before  # only the hidden temporary file may remain
    r = python_child(["-m", "edge_rt.cli", "quantize", str(f16_master), str(out), "--type", "Q4_K"],
                     capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    with edge_rt.load(out) as m:  # the rerun's output is complete
        assert len(m.generate("Hello", max_tokens=2)) > 0

