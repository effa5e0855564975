"""Compare tether's HTTP server with aiohttp and uvicorn+starlette: one run, medians and ratios.

``python bench/http/run.py [--quick] [--runs 3] [--duration 10] [--json out.json]``

For every measurement a fresh server (servers.py, uvloop, pinned to one CPU)
answers ``wrk -t1 -c50 --latency`` (pinned to the other CPU) on loopback, after
a short warm-up. Two scenarios: a 1 KiB static file and a small JSON endpoint.
Runs are interleaved (run, scenario, library) and the order of the libraries
rotates from run to run, so drift of the machine spreads over every library.
Prints Markdown tables on stdout, progress on stderr. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from servers import HOST, LIBS, STATIC_NAME, write_static

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from shared import Processes, cpu_model, cpu_seconds, read_port, tail, tether_source
from wrk import run_wrk

HERE = Path(__file__).resolve().parent
#: Scenario name to (title, path).
SCENARIOS = {
    "static": ("1 KiB static file", f"/static/{STATIC_NAME}"),
    "json": ("small JSON endpoint (async handler)", "/json"),
}
PEERS = ("aiohttp", "uvicorn")  # the Python peers the target is measured against
DASH = "\N{EN DASH}"
DISTRIBUTIONS = ("tether", "aiohttp", "uvicorn", "starlette", "httptools", "uvloop")
LABELS = {"tether": "tether", "aiohttp": "aiohttp", "uvicorn": "uvicorn+starlette"}


def measure(
    procs: Processes, args: argparse.Namespace, root: Path, log: Path, lib: str, scenario: str
) -> dict[str, Any]:
    """Start a server, warm it up, run wrk against it, stop it; return wrk's figures."""
    with log.open("w") as err:
        server = procs.start(
            [
                sys.executable,
                str(HERE / "servers.py"),
                lib,
                "--root",
                str(root),
                "--cpu",
                str(args.server_cpu),
            ],
            err,
        )
        try:
            try:
                port = read_port(server, timeout=30)
            except RuntimeError as exc:
                return {"error": f"server: {exc}; {tail(log)}"}
            url = f"http://{HOST}:{port}{SCENARIOS[scenario][1]}"
            try:
                run_wrk(url, connections=args.connections, duration=args.warmup, cpu=args.client_cpu)
                cpu_before = cpu_seconds(server.pid)
                result = run_wrk(
                    url, connections=args.connections, duration=args.duration, cpu=args.client_cpu
                )
                cpu_used = cpu_seconds(server.pid) - cpu_before
            except (RuntimeError, subprocess.TimeoutExpired, OSError) as exc:
                return {"error": f"wrk: {exc}"}
            record: dict[str, Any] = {
                "requests_per_s": result.requests_per_s,
                "server_cpu_us": cpu_used / max(result.requests, 1) * 1e6,
                "p50_ms": result.p50_ms,
                "p99_ms": result.p99_ms,
                "requests": result.requests,
            }
            if result.non_2xx or result.socket_errors:
                record["error"] = f"{result.non_2xx} non-2xx responses, {result.socket_errors} socket errors"
            if server.poll() is not None:
                record.setdefault("error", f"server died with {server.returncode}; {tail(log)}")
            return record
        finally:
            procs.stop(server)


# ----------------------------------------------------------------- report


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    good = [r for r in records if "error" not in r]
    entry: dict[str, Any] = {"errors": [r["error"] for r in records if "error" in r]}
    for key in ("requests_per_s", "p99_ms", "server_cpu_us"):
        values = [r[key] for r in good]
        if values:
            entry[key] = {"median": statistics.median(values), "min": min(values), "max": max(values)}
    return entry


def span(stat: dict[str, float] | None, digits: int) -> str:
    if stat is None:
        return DASH
    form = f"{{:,.{digits}f}}"
    return f"{form.format(stat['median'])} ({form.format(stat['min'])}{DASH}{form.format(stat['max'])})"


def fastest_peer(by_lib: dict[str, Any]) -> str | None:
    best: tuple[float, str] | None = None
    for peer in PEERS:
        rate = by_lib.get(peer, {}).get("requests_per_s")
        if rate is not None and (best is None or rate["median"] > best[0]):
            best = (rate["median"], peer)
    return best[1] if best else None


def tables(summary: dict[str, Any], libs: list[str], scenarios: list[str]) -> str:
    out: list[str] = []
    for scenario in scenarios:
        by_lib = summary.get(scenario, {})
        best = fastest_peer(by_lib)
        reference = by_lib[best]["requests_per_s"]["median"] if best else None
        out.append(f"### {SCENARIOS[scenario][0]}: `GET {SCENARIOS[scenario][1]}`\n")
        out.append(
            f"| server | requests/s: median (min{DASH}max) | ÷ fastest Python peer"
            f" | p99 latency, ms: median (min{DASH}max) | server CPU µs/request |"
        )
        out.append("|---|---:|---:|---:|---:|")
        for lib in libs:
            entry = by_lib.get(lib, {})
            rate = entry.get("requests_per_s")
            ratio = f"{rate['median'] / reference:.2f}" if rate and reference else DASH
            label = LABELS[lib] + (" (fastest peer)" if lib == best else "")
            rate_cell = span(rate, 0)
            if entry.get("errors"):
                rate_cell += f" [{len(entry['errors'])} failed]"
            cpu = entry.get("server_cpu_us")
            cpu_cell = f"{cpu['median']:.1f}" if cpu else DASH
            out.append(f"| {label} | {rate_cell} | {ratio} | {span(entry.get('p99_ms'), 2)} | {cpu_cell} |")
        out.append("")
    return "\n".join(out)


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in DISTRIBUTIONS:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[name] = metadata.version(name)
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=10)
        found["wrk"] = (wrk.stdout + wrk.stderr).split()[1]
    return found


# ------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2-second measurements, 1 run: a smoke test")
    parser.add_argument(
        "--runs", type=int, help="measurements per server and scenario (default 3; 1 with --quick)"
    )
    parser.add_argument(
        "--duration", type=int, help="seconds of each wrk measurement (default 10; 2 with --quick)"
    )
    parser.add_argument(
        "--warmup", type=int, help="seconds of wrk before each measurement (default 2; 1 with --quick)"
    )
    parser.add_argument("--connections", type=int, default=50, help="wrk connections (default 50)")
    parser.add_argument("--libs", default=",".join(LIBS), help=f"comma-separated, from {', '.join(LIBS)}")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated, from static,json")
    parser.add_argument("--json", metavar="FILE", help="write every measurement and the medians here")
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--client-cpu", type=int, default=1)
    parser.add_argument("--log-dir", help="keep the servers' stderr here (default: a temporary directory)")
    args = parser.parse_args(argv)
    args.libs = [lib.strip() for lib in args.libs.split(",") if lib.strip()]
    args.scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    for lib in args.libs:
        if lib not in LIBS:
            parser.error(f"unknown library {lib!r}")
    for scenario in args.scenarios:
        if scenario not in SCENARIOS:
            parser.error(f"unknown scenario {scenario!r}")
    if args.runs is None:
        args.runs = 1 if args.quick else 3
    if args.duration is None:
        args.duration = 2 if args.quick else 10
    if args.warmup is None:
        args.warmup = 1 if args.quick else 2
    if args.runs < 1 or args.duration <= 0 or args.warmup <= 0:
        parser.error("--runs, --duration and --warmup must be positive")
    if shutil.which("wrk") is None:
        parser.error("wrk is not installed (Debian: apt-get install wrk)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    keep_logs = args.log_dir is not None
    log_dir = Path(args.log_dir) if keep_logs else Path(tempfile.mkdtemp(prefix="bench-http-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="bench-http-root-"))
    write_static(root / "static")
    command = " ".join(shlex.quote(a) for a in ["python", "bench/http/run.py", *sys.argv[1:]])
    measurements: list[dict[str, Any]] = []
    total = args.runs * len(args.scenarios) * len(args.libs)
    procs = Processes()
    failed = interrupted = False
    try:
        for run in range(1, args.runs + 1):
            shift = (run - 1) % len(args.libs)
            order = args.libs[shift:] + args.libs[:shift]  # rotate: nobody always goes first
            for scenario in args.scenarios:
                for lib in order:
                    tag = f"{run}-{scenario}-{lib}"
                    result = measure(procs, args, root, log_dir / f"{tag}.log", lib, scenario)
                    measurements.append({"run": run, "scenario": scenario, "lib": lib, **result})
                    failed |= "error" in result
                    shown = (
                        f"{result['requests_per_s']:,.0f} req/s, p99 {result['p99_ms']:.2f} ms,"
                        f" server {result['server_cpu_us']:.1f} µs/request"
                        if "requests_per_s" in result
                        else ""
                    )
                    if "error" in result:
                        shown += f" [{result['error']}]"
                    print(f"[{len(measurements):>2}/{total}] {tag}: {shown}", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        print("interrupted; reporting what was measured", file=sys.stderr)
        interrupted = True
    finally:
        procs.stop_all()
        shutil.rmtree(root, ignore_errors=True)

    summary: dict[str, Any] = {}
    for scenario in args.scenarios:
        for lib in args.libs:
            records = [m for m in measurements if m["scenario"] == scenario and m["lib"] == lib]
            if records:
                summary.setdefault(scenario, {})[lib] = summarize(records)
    wall = time.monotonic() - started
    environment = {
        "command": command,
        "versions": versions(),
        "tether_source": tether_source(),
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "server_cpu": args.server_cpu,
        "client_cpu": args.client_cpu,
        "runs": args.runs,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "connections": args.connections,
        "wall_s": round(wall, 1),
    }
    print(f"## HTTP: tether and peers ({args.runs} run{'s' if args.runs > 1 else ''} each)\n")
    print(f"`{command}`  ")
    print(
        ", ".join(f"{k} {v}" for k, v in environment["versions"].items())
        + f" (tether at {environment['tether_source']})  "
    )
    print(
        f"{environment['cpu']}; uvloop everywhere; server on CPU {args.server_cpu},"
        f" wrk -t1 -c{args.connections} -d{args.duration:g}s on CPU {args.client_cpu};"
        f" wall time {wall:.0f} s\n"
    )
    print(
        f"Cells: median (min{DASH}max) over runs; ÷ fastest Python peer: median requests/s divided by"
        " that of the faster of aiohttp and uvicorn+starlette in this run; server CPU: median CPU time"
        " (user and system) of the server process per request.\n"
    )
    print(tables(summary, args.libs, args.scenarios))
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"environment": environment, "summary": summary, "measurements": measurements}, indent=2
            )
            + "\n"
        )
    if failed or interrupted:
        what = "some measurements failed" if failed else "interrupted"
        print(f"{what}; the servers' stderr is in {log_dir}", file=sys.stderr)
    elif not keep_logs:
        shutil.rmtree(log_dir, ignore_errors=True)
    return 1 if failed or interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
