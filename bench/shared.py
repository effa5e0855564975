"""What every benchmark under bench/ shares: processes, CPUs, memory, versions.

Each benchmark folder's scripts put bench/ on sys.path and import from here.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import resource
import selectors
import subprocess
import sys
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TextIO, TypeVar

T = TypeVar("T")


def pin_to_cpu(cpu: int) -> None:
    """Run this process on one CPU only, when the machine has it."""
    if cpu < 0:
        return
    if cpu in os.sched_getaffinity(0):
        os.sched_setaffinity(0, {cpu})
    else:
        print(f"warning: CPU {cpu} not available; not pinning", file=sys.stderr)


def raise_nofile(want: int = 65536) -> None:
    """Raise the soft open-file limit towards want (at most the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def run_on_loop(loop: str, main: Coroutine[Any, Any, T]) -> T:
    """Run main on a fresh event loop of the given kind ("asyncio" or "uvloop")."""
    if loop == "uvloop":
        import uvloop

        return uvloop.run(main)
    if loop == "asyncio":
        return asyncio.run(main)
    main.close()
    raise ValueError(f"unknown loop {loop!r}")


def settle_malloc() -> None:
    """Put glibc's malloc in the same state in every benchmark process.

    asyncio's selector transports read with ``sock.recv(256 KiB)``. glibc serves
    an allocation that large with mmap() until the process has freed a bigger
    mmap()ed block, which raises its threshold; until then every read costs an
    mmap, an mremap and a munmap. Whether a process is past that point depends on
    accidents (compiling modules without cached bytecode is enough), so each
    process allocates and frees one 1 MiB block before it starts.
    """
    block = bytearray(2**20)
    del block


def cpu_seconds(pid: int) -> float:
    """CPU time process pid has used so far, in seconds (user and system)."""
    try:
        with open(f"/proc/{pid}/schedstat") as schedstat:
            return int(schedstat.read().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def vm_rss_kib(pid: int | str = "self") -> int:
    """The resident set size of process pid, in KiB, from /proc/pid/status."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS in /proc/{pid}/status")


class Processes:
    """Every child process started, so that each is stopped by its PID at the end."""

    def __init__(self) -> None:
        self.live: dict[int, subprocess.Popen[str]] = {}

    def start(self, argv: list[str], stderr: TextIO) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=stderr, stdin=subprocess.DEVNULL, text=True
        )
        self.live[proc.pid] = proc
        return proc

    def stop(self, proc: subprocess.Popen[str], grace: float = 5.0) -> None:
        """Terminate proc (SIGTERM, then SIGKILL after grace seconds) and reap it."""
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        self.live.pop(proc.pid, None)

    def stop_all(self) -> None:
        for proc in list(self.live.values()):
            self.stop(proc, grace=2.0)


def read_port(proc: subprocess.Popen[str], timeout: float) -> int:
    """Wait for the server's ``PORT <n>`` line."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"server printed no port within {timeout:g} s")
            if not selector.select(left):
                continue
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError(f"server exited with {proc.wait()} before printing its port")
            if line.startswith("PORT "):
                return int(line.split()[1])


def tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


def tether_source() -> str:
    """The commit of the checkout that tether is imported from, "+dirty" if src/ has changes."""
    import tether

    src = Path(tether.__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(src), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(src), "status", "--porcelain", "--", "."],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (commit or "unknown") + ("+dirty" if dirty else "")


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"
