"""Shared by the benchmark's server, client and orchestrator processes."""

from __future__ import annotations

import asyncio
import os
import resource
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

#: Libraries in the order the tables list them; "raw" is a plain asyncio TCP echo.
LIBS = ("tether", "websockets", "aiohttp", "picows", "wsproto", "raw")
LOOPS = ("asyncio", "uvloop")
HOST = "127.0.0.1"
#: The largest message every library is told to accept (the 1 MiB echo needs more than defaults).
MAX_SIZE = 2**24


def pin_to_cpu(cpu: int) -> None:
    """Run this process on one CPU only, when the machine has it."""
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


def vm_rss_kib(pid: int) -> int:
    """The resident set size of process pid, in KiB, from /proc/pid/status."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS in /proc/{pid}/status")
