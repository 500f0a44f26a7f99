"""Service processes on loopback: free ports, health polling, detached start, clean stop."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def healthy(url: str, timeout: float = 2.0) -> bool:
    """True when ``url`` answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


def start(
    cmd: Sequence[str], log: Path, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in a session of its own (it outlives its parent) logging to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.Popen(
            list(cmd),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )


def wait_healthy(
    proc: subprocess.Popen[bytes], url: str, log: Path, *, name: str, timeout: float = 120.0
) -> None:
    """Poll ``url`` until it answers; raise with the log's tail if the process dies or stalls."""
    deadline = time.monotonic() + timeout
    while not healthy(url):
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}; log {log}:\n{_tail(log)}")
        if time.monotonic() > deadline:
            stop(proc.pid)
            raise TimeoutError(
                f"{name}: {url} not healthy in {timeout:.0f} s; log {log}:\n{_tail(log)}"
            )
        time.sleep(0.5)


def _tail(log: Path, lines: int = 30) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    return "(no log)"


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped, does not count)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError, IndexError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    return True


def identity(pid: int) -> dict[str, str] | None:
    """What tells the process ``pid`` from a later one given the same number: the boot it runs
    in, its start time (clock ticks since boot) and its command line; None when it is gone."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    start = stat.rsplit(")", 1)[1].split()[19]  # field 22, starttime
    return {"boot": boot, "start": start, "cmdline": cmdline.decode(errors="replace")}


def differences(pid: int, recorded: Mapping[str, str] | None) -> list[str]:
    """The fields of ``recorded`` (an :func:`identity`) that ``pid`` no longer matches; empty
    when ``pid`` is still that process."""
    now = identity(pid)
    if not recorded or now is None:
        return ["identity"]
    return [key for key in sorted({*now, *recorded}) if now.get(key) != recorded.get(key)]


def is_ours(pid: int, recorded: Mapping[str, str] | None) -> bool:
    """Whether ``pid`` is still the process recorded as ``recorded`` (its :func:`identity`)."""
    return not differences(pid, recorded)


def stop(pid: int, grace: float = 20.0) -> None:
    """SIGTERM the process group of ``pid``, SIGKILL it after ``grace`` seconds."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reap it if it is our child
        if not alive(pid):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


@contextlib.contextmanager
def running_server(
    cmd: Sequence[str],
    health_url: str,
    log: Path,
    *,
    timeout: float = 120.0,
    env: Mapping[str, str] | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``cmd`` (with ``env`` added); yield once ``health_url`` answers 200; always stop it."""
    proc = start(cmd, log, env)
    try:
        wait_healthy(proc, health_url, log, name=Path(cmd[0]).name, timeout=timeout)
        yield proc
    finally:
        stop(proc.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
