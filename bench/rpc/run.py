"""RPC calls per second over WebSocket and HTTP, as a ratio to tether's own WebSocket echo.

``python bench/rpc/run.py [--runs 3] [--quick] [--json FILE]`` runs each scenario in
a fresh server process pinned to ``--server-cpu`` and a client process pinned to
``--client-cpu``, interleaved run by run, and prints medians:

=========  ===================================================================
ws-1       1 connection, sequential ``RPC.Ping`` calls with `tether.rpc.connect`
ws-50      50 connections at once, each making sequential calls
http-1     1 keep-alive connection, sequential calls (HTTP frame mode, POST /rpc)
http-50    50 keep-alive connections at once, each making sequential calls
=========  ===================================================================

Each is compared with the same shape of traffic on tether's WebSocket echo
(`tether.ws.serve` echoing, `tether.ws.connect` sending the same request frame
text), so the ratio is what RPC costs on top of the WebSocket it rides on.
The same script is the server (``server echo|rpc``) and the client (``client``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shared import (
    Processes,
    cpu_model,
    cpu_seconds,
    pin_to_cpu,
    raise_nofile,
    read_port,
    settle_malloc,
    tail,
    tether_source,
)

HOST = "127.0.0.1"
SCENARIOS = ("ws-1", "ws-50", "http-1", "http-50")
#: The frame the echo baseline sends: what tether.rpc.connect sends for RPC.Ping.
FRAME = '{"id":1099511627776,"src":"tether","method":"RPC.Ping"}'


# Servers.


async def serve(kind: str) -> None:
    import tether.http
    import tether.rpc
    import tether.ws

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if kind == "echo":

        async def echo(ws: tether.ws.ServerWebSocket) -> None:
            async for message in ws:
                await ws.send(message)

        server: Any = await tether.ws.serve(echo, HOST, 0, compression=None, ping_interval=None)
    else:
        app = tether.http.App()
        tether.rpc.mount_rpc(app, tether.rpc.Dispatcher("bench"), ping_interval=None)
        server = await tether.http.serve(app, HOST, 0)
    print(f"PORT {server.port}", flush=True)
    await stop.wait()
    server.close()
    await server.wait_closed()


# Clients.


async def rpc_worker(url: str, calls: int, warmup: int, ready: asyncio.Event, go: asyncio.Event) -> None:
    import tether.rpc

    async with tether.rpc.connect(url) as client:
        for _ in range(warmup):
            await client.call("RPC.Ping")
        ready.set()
        await go.wait()
        for _ in range(calls):
            await client.call("RPC.Ping")


async def echo_worker(url: str, calls: int, warmup: int, ready: asyncio.Event, go: asyncio.Event) -> None:
    import tether.ws

    async with tether.ws.connect(url, compression=None, ping_interval=None) as ws:
        for _ in range(warmup):
            await ws.send(FRAME)
            await ws.recv()
        ready.set()
        await go.wait()
        for _ in range(calls):
            await ws.send(FRAME)
            await ws.recv()


async def client(target: str, port: int, scenario: str, calls: int, server_pid: int) -> dict[str, float]:
    kind, _, width = scenario.partition("-")
    connections = int(width)
    per_connection = max(1, calls // connections)
    warmup = max(2, per_connection // 20)
    scheme = "ws" if kind == "ws" or target == "echo" else "http"
    url = f"{scheme}://{HOST}:{port}/rpc" if target == "rpc" else f"ws://{HOST}:{port}/"
    worker = rpc_worker if target == "rpc" else echo_worker
    readies = [asyncio.Event() for _ in range(connections)]
    go = asyncio.Event()
    tasks = [asyncio.ensure_future(worker(url, per_connection, warmup, ready, go)) for ready in readies]
    for ready in readies:
        await ready.wait()
    server_cpu = cpu_seconds(server_pid)
    client_cpu = time.process_time()  # this process's CPU: the client's, steadier than calls/s
    start = time.perf_counter()
    go.set()
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    client_cpu = time.process_time() - client_cpu
    total = per_connection * connections
    return {
        "calls_per_s": total / elapsed,
        "server_cpu_us": (cpu_seconds(server_pid) - server_cpu) / total * 1e6,
        "client_cpu_us": client_cpu / total * 1e6,
    }


# Orchestrator.


def measure(
    procs: Processes, args: argparse.Namespace, target: str, scenario: str, logs: Path
) -> dict[str, float]:
    me = str(Path(__file__).resolve())
    log = open(logs / f"{target}-{scenario}.log", "a")  # noqa: SIM115 - closed below
    try:
        server = procs.start([sys.executable, me, "server", target, "--cpu", str(args.server_cpu)], log)
        try:
            port = read_port(server, 30)
            client_proc = procs.start(
                [
                    sys.executable,
                    me,
                    "client",
                    target,
                    scenario,
                    "--port",
                    str(port),
                    "--calls",
                    str(args.calls),
                    "--server-pid",
                    str(server.pid),
                    "--cpu",
                    str(args.client_cpu),
                ],
                log,
            )
            try:
                out, _ = client_proc.communicate(timeout=args.timeout)
            finally:
                procs.stop(client_proc)
            if client_proc.returncode != 0:
                raise RuntimeError(f"client failed: {tail(logs / f'{target}-{scenario}.log')}")
            result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
            return result
        finally:
            procs.stop(server)
    finally:
        log.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts and 1 run, for smoke tests")
    parser.add_argument("--runs", type=int, default=3, help="measurements per figure; medians are printed")
    parser.add_argument("--calls", type=int, default=None, help="calls per measurement (20,000; quick 2,000)")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--json", metavar="FILE", help="write every measurement and the medians here")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per measurement")
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--client-cpu", type=int, default=1)
    args = parser.parse_args(argv)
    if args.quick:
        args.runs = 1
    if args.calls is None:
        args.calls = 2000 if args.quick else 20000
    scenarios = [s for s in args.scenarios.split(",") if s]
    for s in scenarios:
        if s not in SCENARIOS:
            parser.error(f"unknown scenario {s!r}")
    procs = Processes()
    samples: dict[str, dict[str, list[dict[str, float]]]] = {"rpc": {}, "echo": {}}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for run in range(args.runs):
                for scenario in scenarios:
                    for target in ("echo", "rpc"):
                        if (
                            target == "echo"
                            and scenario.startswith("http")
                            and scenario.replace("http", "ws") in scenarios
                        ):
                            continue  # the same echo baseline as the ws scenario of that width
                        result = measure(procs, args, target, scenario, Path(tmp))
                        samples[target].setdefault(scenario, []).append(result)
                        print(
                            f"run {run + 1}/{args.runs} {target:4} {scenario:8} "
                            f"{result['calls_per_s']:10,.0f} calls/s "
                            f"{result['server_cpu_us']:7.1f} µs server, "
                            f"{result['client_cpu_us']:7.1f} µs client CPU/call",
                            file=sys.stderr,
                        )
    finally:
        procs.stop_all()

    def median(target: str, scenario: str, key: str) -> float:
        if scenario not in samples[target]:
            scenario = scenario.replace("http", "ws")
        return statistics.median(r[key] for r in samples[target][scenario])

    rows = []
    for scenario in scenarios:
        rpc_rate = median("rpc", scenario, "calls_per_s")
        echo_rate = median("echo", scenario, "calls_per_s")
        rows.append(
            {
                "scenario": scenario,
                "rpc_calls_per_s": rpc_rate,
                "echo_round_trips_per_s": echo_rate,
                "ratio": rpc_rate / echo_rate,
                "rpc_server_cpu_us": median("rpc", scenario, "server_cpu_us"),
                "echo_server_cpu_us": median("echo", scenario, "server_cpu_us"),
                "rpc_client_cpu_us": median("rpc", scenario, "client_cpu_us"),
                "echo_client_cpu_us": median("echo", scenario, "client_cpu_us"),
            }
        )
    print(
        f"\ntether {tether_source()}, Python {sys.version.split()[0]}, {cpu_model()}, "
        f"medians of {args.runs}, {args.calls:,} calls per measurement\n"
    )
    print(
        "| scenario | RPC calls/s | WS echo round trips/s | RPC ÷ echo "
        "| server CPU µs/call, RPC | echo | client CPU µs/call, RPC | echo |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        print(
            f"| {row['scenario']} | {row['rpc_calls_per_s']:,.0f} | {row['echo_round_trips_per_s']:,.0f} | "
            f"{row['ratio']:.2f} | {row['rpc_server_cpu_us']:.1f} | {row['echo_server_cpu_us']:.1f} | "
            f"{row['rpc_client_cpu_us']:.1f} | {row['echo_client_cpu_us']:.1f} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"samples": samples, "medians": rows}, indent=2))
    return 0


def child(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["server", "client"])
    parser.add_argument("target", choices=["echo", "rpc"])
    parser.add_argument("scenario", nargs="?")
    parser.add_argument("--cpu", type=int, default=-1)
    parser.add_argument("--port", type=int)
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--server-pid", type=int)
    args = parser.parse_args(argv)
    pin_to_cpu(args.cpu)
    raise_nofile()
    settle_malloc()
    if args.role == "server":
        asyncio.run(serve(args.target))
        return 0
    result = asyncio.run(client(args.target, args.port, args.scenario, args.calls, args.server_pid))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("server", "client"):
        sys.exit(child(sys.argv[1:]))
    sys.exit(main())
