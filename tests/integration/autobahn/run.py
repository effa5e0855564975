#!/usr/bin/env python3
"""Run the Autobahn|Testsuite against tether's WebSocket server and client.

    python tests/integration/autobahn/run.py                 # quick subset, both sides
    python tests/integration/autobahn/run.py --cases full    # all 517 cases (~30 min)
    python tests/integration/autobahn/run.py --side server   # only `tether ws echo`

The suite needs Python 2.7. The first run builds a Python 2.7 virtualenv with
wstest under .cache/autobahn-py27 (set AUTOBAHN_PYTHON27 to the interpreter, or
have pyenv's 2.7 or python2.7 on PATH). Exit status: 0 when every selected case
ran and none is FAILED or NON-STRICT; 1 otherwise; 77 when no Python 2.7 exists.
Reports go to .cache/autobahn-reports/{server,client}/ (index.json, index.html).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
CACHE = Path(os.environ.get("TETHER_CACHE", ROOT / ".cache"))
VENV = CACHE / "autobahn-py27"
WSTEST = VENV / "bin" / "wstest"
NO_PYTHON27 = 77
MAX_SIZE = 2**25  # 9.1.6 and 9.2.6 send 16 MiB messages

# Every case group, quickly: all of 1.*-7.* and 10.*, the first case of each 9.x
# group (the big ones take minutes), the first four of each 12.x and 13.x group.
QUICK = [f"{g}.*" for g in range(1, 8)] + ["10.*"]
QUICK += [f"9.{g}.1" for g in range(1, 9)]
QUICK += [f"12.{g}.{n}" for g in range(1, 6) for n in range(1, 5)]
QUICK += [f"13.{g}.{n}" for g in range(1, 8) for n in range(1, 5)]
FULL = ["*"]
ALLOWED = {"OK", "INFORMATIONAL"}


def find_python27() -> str | None:
    """Return a Python 2.7 interpreter, or None."""
    candidates = [os.environ.get("AUTOBAHN_PYTHON27", "")]
    pyenv_root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    candidates += sorted(glob.glob(os.path.join(pyenv_root, "versions", "2.7*", "bin", "python2.7")))
    candidates.append(shutil.which("python2.7") or "")
    for path in candidates:
        if path and os.access(path, os.X_OK):
            return path
    return None


def ensure_wstest() -> Path:
    """Build the Python 2.7 virtualenv with wstest if it is not there yet."""
    if WSTEST.exists():
        return WSTEST
    python27 = find_python27()
    if python27 is None:
        print(
            "autobahn: no Python 2.7 interpreter (set AUTOBAHN_PYTHON27); conformance not run",
            file=sys.stderr,
        )
        sys.exit(NO_PYTHON27)
    CACHE.mkdir(parents=True, exist_ok=True)
    tool = CACHE / "virtualenv-tool"
    if not (tool / "bin" / "virtualenv").exists():
        subprocess.run([sys.executable, "-m", "venv", str(tool)], check=True)
        # virtualenv 20.22 dropped support for creating Python 2 environments.
        subprocess.run([str(tool / "bin" / "pip"), "install", "-q", "virtualenv<20.22"], check=True)
    shutil.rmtree(VENV, ignore_errors=True)
    subprocess.run([str(tool / "bin" / "virtualenv"), "-q", "-p", python27, str(VENV)], check=True)
    subprocess.run(
        [str(VENV / "bin" / "pip"), "install", "-q", "-r", str(HERE / "requirements-py27.txt")], check=True
    )
    return WSTEST


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process {proc.pid} exited with {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {timeout} s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop a process by its PID: SIGTERM, then SIGKILL."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


def wstest(mode: str, spec: dict[str, object], workdir: Path, *extra: str) -> subprocess.Popen[bytes]:
    spec_path = workdir / f"spec-{mode}.json"
    spec_path.write_text(json.dumps(spec, indent=2))
    return subprocess.Popen(
        [
            str(VENV / "bin" / "python"),
            str(HERE / "launch_wstest.py"),
            "-m",
            mode,
            "-s",
            str(spec_path),
            *extra,
        ],
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def summarize(index: Path, agent: str, expected: int) -> tuple[bool, str]:
    """Count the behaviours in a report; return (passed, text)."""
    if not index.exists():
        return False, f"no report at {index}"
    results = json.loads(index.read_text()).get(agent, {})
    counts = Counter(r["behavior"] for r in results.values())
    bad = sorted(
        (case for case, r in results.items() if r["behavior"] not in ALLOWED),
        key=lambda c: [int(x) for x in c.split(".")],
    )
    missing = expected - len(results)
    text = f"{len(results)} cases: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    if missing:
        text += f"; {missing} cases did not run"
    if bad:
        text += "; not OK: " + ", ".join(f"{c} ({results[c]['behavior']})" for c in bad[:40])
    return not bad and not missing, text


def count_cases(patterns: list[str]) -> int:
    """How many case ids the patterns select, as wstest resolves them."""
    code = (
        "import json,sys\n"
        "from autobahntestsuite.caseset import CaseSet\n"
        "from autobahntestsuite.case import Cases, CaseCategories, CaseSubCategories, CaseBasename\n"
        "from autobahntestsuite.case import CaseSetname\n"
        "cs = CaseSet(CaseSetname, CaseBasename, Cases, CaseCategories, CaseSubCategories)\n"
        "print(len(cs.parseSpecCases({'cases': json.loads(sys.argv[1])})))\n"
    )
    out = subprocess.run(
        [str(VENV / "bin" / "python"), "-c", code, json.dumps(patterns)],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(out.stdout.strip())


def run_server_side(cases: list[str], expected: int, timeout: float) -> tuple[bool, str]:
    """wstest's fuzzing client against `tether ws echo`."""
    outdir = CACHE / "autobahn-reports" / "server"
    shutil.rmtree(outdir, ignore_errors=True)
    outdir.mkdir(parents=True)
    port = free_port()
    testee = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tether",
            "ws",
            "echo",
            "--port",
            str(port),
            "--compression",
            "--max-size",
            str(MAX_SIZE),
            "--ping-interval",
            "0",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    fuzzer = None
    try:
        wait_listening(port, testee)
        spec = {
            "outdir": str(outdir),
            "servers": [{"agent": "tether", "url": f"ws://127.0.0.1:{port}"}],
            "cases": cases,
            "exclude-cases": [],
            "exclude-agent-cases": {},
        }
        fuzzer = wstest("fuzzingclient", spec, outdir)
        try:
            fuzzer.wait(timeout)
        except subprocess.TimeoutExpired:
            return False, f"timed out after {timeout} s"
    finally:
        if fuzzer is not None:
            stop(fuzzer)
        stop(testee)
    return summarize(outdir / "index.json", "tether", expected)


async def _client_testee(base: str, agent: str, case_timeout: float, deadline: float) -> int:
    from tether.errors import ConnectionClosed, HandshakeError, Timeout
    from tether.ws import connect

    async with connect(f"{base}/getCaseCount", ping_interval=None) as ws:
        count = int(await ws.recv())
    for n in range(1, count + 1):
        if time.monotonic() > deadline:
            break

        async def one(n: int = n) -> None:
            ws = await connect(
                f"{base}/runCase?case={n}&agent={agent}",
                compression="deflate",
                max_size=MAX_SIZE,
                ping_interval=None,
                close_timeout=5,
            )
            with contextlib.suppress(ConnectionClosed):
                async for message in ws:
                    await ws.send(message)

        with contextlib.suppress(ConnectionClosed, HandshakeError, Timeout, OSError, asyncio.TimeoutError):
            await asyncio.wait_for(one(), case_timeout)
    # Writes the reports; the server closes this connection when done.
    ws = await connect(f"{base}/updateReports?agent={agent}", ping_interval=None)
    await asyncio.wait_for(ws.wait_closed(), 120)
    return count


def run_client_side(cases: list[str], expected: int, timeout: float) -> tuple[bool, str]:
    """tether's client against wstest's fuzzing server."""
    outdir = CACHE / "autobahn-reports" / "client"
    shutil.rmtree(outdir, ignore_errors=True)
    outdir.mkdir(parents=True)
    port = free_port()
    spec = {
        "url": f"ws://127.0.0.1:{port}",
        "outdir": str(outdir),
        "cases": cases,
        "exclude-cases": [],
        "exclude-agent-cases": {},
    }
    fuzzer = wstest("fuzzingserver", spec, outdir, "-u", "0")
    try:
        wait_listening(port, fuzzer)
        deadline = time.monotonic() + timeout
        asyncio.run(_client_testee(f"ws://127.0.0.1:{port}", "tether", 60.0, deadline))
        if time.monotonic() > deadline:
            return False, f"timed out after {timeout} s"
    finally:
        stop(fuzzer)
    return summarize(outdir / "index.json", "tether", expected)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--side", choices=["server", "client", "both"], default="both")
    parser.add_argument(
        "--cases", default="quick", help="quick (default), full, or comma-separated case ids/patterns"
    )
    parser.add_argument("--timeout", type=float, default=None, help="seconds per side")
    args = parser.parse_args()
    ensure_wstest()
    if args.cases == "quick":
        cases = QUICK
    elif args.cases == "full":
        cases = FULL
    else:
        cases = args.cases.split(",")
    timeout = args.timeout or (600.0 if args.cases == "quick" else 3600.0)
    expected = count_cases(cases)
    ok = True
    for side in ("server", "client"):
        if args.side not in (side, "both"):
            continue
        started = time.monotonic()
        run = run_server_side if side == "server" else run_client_side
        passed, text = run(cases, expected, timeout)
        ok = ok and passed
        verdict = "PASS" if passed else "FAIL"
        print(
            f"autobahn {side} ({args.cases}, {time.monotonic() - started:.0f} s): {verdict}: {text}",
            flush=True,
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
