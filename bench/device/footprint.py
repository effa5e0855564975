"""A tether device's footprint: RSS of `tether run` (HTTP and RPC on), time to the first answered RPC.

    python bench/device/footprint.py --runs 5

Each run creates the skeleton app (`tether init`), starts `tether run` on a free
loopback port, and polls ``POST /rpc`` with ``RPC.Ping`` every 2 ms until it
answers: the time from starting the command to that answer is "start -> first RPC".
One second later it reads VmRSS of the supervisor and of the device process, and
their PSS (shared pages such as the interpreter's counted once between them).
For scale, the same figures for a bare ``python3 -c`` asyncio HTTP listener
(the least any Python device could cost) are measured in the same run.

Prints medians with min-max over the runs; ``--json FILE`` writes the raw figures.
"""

from __future__ import annotations

import argparse
import http.client
import json
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from shared import cpu_model, tether_source, vm_rss_kib

TIMEOUT = 30.0

BARE = """
import asyncio, sys
async def main():
    async def answer(reader, writer):
        await reader.readuntil(b"\\r\\n\\r\\n")
        body = b'{"id":1,"result":{}}'
        writer.write(b"HTTP/1.1 200 OK\\r\\nContent-Length: %d\\r\\n\\r\\n" % len(body) + body)
        await writer.drain()
        writer.close()
    server = await asyncio.start_server(answer, "127.0.0.1", int(sys.argv[1]))
    await server.serve_forever()
asyncio.run(main())
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ping(port: int) -> bool:
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1.0)
        connection.request(
            "POST", "/rpc", b'{"id":1,"method":"RPC.Ping"}', {"Content-Type": "application/json"}
        )
        ok = connection.getresponse().status == 200
        connection.close()
        return ok
    except OSError:
        return False


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


def pss_kib(pid: int) -> int:
    """The proportional set size of pid (shared pages divided among their users), in KiB."""
    with open(f"/proc/{pid}/smaps_rollup") as rollup:
        for line in rollup:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    raise RuntimeError(f"no Pss in /proc/{pid}/smaps_rollup")


def measure(command: list[str], port: int) -> dict[str, float]:
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + TIMEOUT
        while not ping(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{command[:4]} did not answer")
            time.sleep(0.002)
        first = time.perf_counter() - started
        time.sleep(1.0)
        pids = [process.pid, *children(process.pid)]
        rss = [vm_rss_kib(pid) / 1024 for pid in pids]
        pss = [pss_kib(pid) / 1024 for pid in pids]
        return {
            "first_rpc_s": first,
            "rss_total_mib": sum(rss),
            "rss_device_mib": rss[-1],
            "pss_total_mib": sum(pss),
            "processes": len(pids),
        }
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def summary(values: list[float], scale: float = 1.0, digits: int = 1) -> str:
    med = statistics.median(values) * scale
    return f"{med:.{digits}f} ({min(values) * scale:.{digits}f}-{max(values) * scale:.{digits}f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()
    results: dict[str, list[dict[str, float]]] = {"tether run": [], "bare asyncio listener": []}
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "tether", "init", "app"], cwd=tmp, check=True, capture_output=True
        )
        for run in range(args.runs):
            port = free_port()
            state = Path(tmp) / f"state{run}"
            command = [
                sys.executable,
                "-m",
                "tether",
                "run",
                str(Path(tmp) / "app"),
                "--state-dir",
                str(state),
                "--set",
                f"http.listen_addr=127.0.0.1:{port}",
            ]
            results["tether run"].append(measure(command, port))
            port = free_port()
            results["bare asyncio listener"].append(measure([sys.executable, "-c", BARE, str(port)], port))
    python = sys.version.split()[0]
    print(f"# device footprint, {args.runs} runs, {cpu_model()}, tether {tether_source()}, Python {python}")
    print(
        f"{'':24} {'start -> first RPC ms':>24} {'RSS total MiB':>18} {'RSS device MiB':>18} "
        f"{'PSS total MiB':>18} processes"
    )
    for name, runs in results.items():
        print(
            f"{name:24} {summary([r['first_rpc_s'] for r in runs], 1000, 0):>24} "
            f"{summary([r['rss_total_mib'] for r in runs]):>18} "
            f"{summary([r['rss_device_mib'] for r in runs]):>18} "
            f"{summary([r['pss_total_mib'] for r in runs]):>18} "
            f"{int(runs[0]['processes']):>9}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
