"""Compare tether's WebSocket with its peers: one run, medians and ratios.

``python bench/ws/run.py [--quick] [--runs 3] [--loop asyncio|uvloop|both] [--json out.json]``

For every measurement a fresh echo server (servers.py, pinned to one CPU) and a
client of the same library (clients.py, pinned to another CPU) run in separate
processes; the client prints one JSON result. Runs are interleaved (run, loop,
scenario, library) so slow drift of the machine spreads over every library.
Prints Markdown tables on stdout, progress on stderr. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from common import LIBS, LOOPS, Processes, cpu_model, read_port, tail, tether_source

HERE = Path(__file__).resolve().parent
SCENARIOS = ("A", "B", "C", "D")
EXTRA_LIBS = ("picows-fastnet",)  # selectable with --libs, not run by default
DASH = "\N{EN DASH}"  # between min and max; "-" would read as a minus sign
DISTRIBUTIONS = ("tether", "websockets", "aiohttp", "picows", "aiofastnet", "wsproto", "uvloop")


@dataclass(frozen=True)
class Counts:
    """How much work each scenario does."""

    a_round_trips: int
    b_connections: int
    b_round_trips: int
    c_round_trips: int
    c_size: int
    d_connections: int


FULL = Counts(20_000, 50, 1_000, 200, 2**20, 2_000)
QUICK = Counts(2_000, 10, 100, 20, 2**20, 200)


def describe(scenario: str, counts: Counts) -> tuple[str, str, bool]:
    """A scenario's title, unit and whether higher is better."""
    if scenario == "A":
        return f"A: 1 connection, {counts.a_round_trips:,} sequential 32-byte round trips", "rt/s", True
    if scenario == "B":
        title = (
            f"B: {counts.b_connections} connections x {counts.b_round_trips:,} round trips"
            " of 32 bytes, concurrently"
        )
        return title, "rt/s", True
    if scenario == "C":
        size = f"{counts.c_size / 2**20:g} MiB" if counts.c_size >= 2**20 else f"{counts.c_size:,} B"
        title = f"C: {counts.c_round_trips} sequential round trips of {size} binary"
        return title, "MiB/s", True
    return f"D: {counts.d_connections:,} idle connections, server RSS growth", "KiB/conn", False


def client_args(scenario: str, counts: Counts) -> list[str]:
    if scenario == "A":
        return ["--count", str(counts.a_round_trips), "--size", "32"]
    if scenario == "B":
        return [
            "--connections",
            str(counts.b_connections),
            "--count",
            str(counts.b_round_trips),
            "--size",
            "32",
        ]
    if scenario == "C":
        return ["--count", str(counts.c_round_trips), "--size", str(counts.c_size)]
    return ["--connections", str(counts.d_connections)]


# ------------------------------------------------------------- processes


@dataclass
class Settings:
    python: list[str]
    counts: Counts
    timeout: float
    server_cpu: int
    client_cpu: int
    log_dir: Path


def measure(
    procs: Processes, settings: Settings, lib: str, loop: str, scenario: str, tag: str
) -> dict[str, Any]:
    """Start a server, run one client scenario against it, stop both; return the client's result."""
    server_log = settings.log_dir / f"{tag}-server.log"
    client_log = settings.log_dir / f"{tag}-client.log"
    with server_log.open("w") as server_err, client_log.open("w") as client_err:
        server = procs.start(
            [
                *settings.python,
                str(HERE / "servers.py"),
                lib,
                "--loop",
                loop,
                "--cpu",
                str(settings.server_cpu),
            ],
            server_err,
        )
        try:
            try:
                port = read_port(server, timeout=30)
            except RuntimeError as exc:
                return {"error": f"server: {exc}; {tail(server_log)}"}
            argv = [
                *settings.python,
                str(HERE / "clients.py"),
                lib,
                scenario,
                "--port",
                str(port),
                "--loop",
                loop,
                "--cpu",
                str(settings.client_cpu),
                "--server-pid",
                str(server.pid),
                "--timeout",
                str(settings.timeout),
                *client_args(scenario, settings.counts),
            ]
            client = procs.start(argv, client_err)
            try:
                out, _ = client.communicate(timeout=settings.timeout + 30)
            except subprocess.TimeoutExpired:
                return {"error": f"timeout after {settings.timeout:g} s (client killed)"}
            finally:
                procs.stop(client)
            lines = out.strip().splitlines()
            if not lines:
                return {"error": f"client exited with {client.returncode}, no result; {tail(client_log)}"}
            result: dict[str, Any] = json.loads(lines[-1])
            if server.poll() is not None:
                result.setdefault("error", f"server died with {server.returncode}; {tail(server_log)}")
            return result
        finally:
            procs.stop(server)


# ----------------------------------------------------------------- report


def summarize(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def fmt(value: float, unit: str) -> str:
    if unit == "KiB/conn":
        return f"{value:.1f}"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}"


def short_error(errors: list[str]) -> str:
    first = errors[0]
    if first.startswith("timeout"):
        return "timeout"
    return "failed: " + first.split(";")[0][:60].replace("|", "/")


def cell(summary: dict[str, Any] | None, unit: str) -> str:
    if summary is None:
        return DASH
    if "median" not in summary:
        return short_error(summary["errors"])
    text = f"{fmt(summary['median'], unit)} ({fmt(summary['min'], unit)}{DASH}{fmt(summary['max'], unit)})"
    if summary["errors"]:
        text += f" [{len(summary['errors'])} failed]"
    return text


def ratio(summary: dict[str, Any] | None, reference: dict[str, Any] | None) -> str:
    if not summary or not reference or "median" not in summary or "median" not in reference:
        return DASH
    if reference["median"] == 0:
        return DASH
    return f"{summary['median'] / reference['median']:.2f}"


def tables(
    summary: dict[str, Any], libs: list[str], loops: list[str], scenarios: list[str], counts: Counts
) -> str:
    out: list[str] = []
    for scenario in scenarios:
        title, unit, higher = describe(scenario, counts)
        better = "higher is better" if higher else "lower is better"
        out.append(f"### {title} ({unit}, {better})\n")
        cpu = scenario != "D"
        header = ["library"]
        for loop in loops:
            header += [f"{loop}: median (min{DASH}max)", "÷ tether", "÷ raw"]
            if cpu:
                header.append("server CPU µs/rt")
        out.append("| " + " | ".join(header) + " |")
        out.append("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|")
        for lib in libs:
            row = [lib]
            for loop in loops:
                by_lib = summary.get(loop, {}).get(scenario, {})
                entry = by_lib.get(lib)
                row += [
                    cell(entry, unit),
                    ratio(entry, by_lib.get("tether")),
                    ratio(entry, by_lib.get("raw")),
                ]
                if cpu:
                    server_cpu = (entry or {}).get("server_cpu_us_per_rt")
                    row.append(
                        DASH
                        if server_cpu is None
                        else f"{server_cpu:,.0f}"
                        if server_cpu >= 100
                        else f"{server_cpu:.1f}"
                    )
            out.append("| " + " | ".join(row) + " |")
        out.append("")
    return "\n".join(out)


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in DISTRIBUTIONS:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[name] = metadata.version(name)
    return found


# ------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts and 1 run, for smoke tests")
    parser.add_argument(
        "--runs", type=int, help="repetitions of each measurement (default 3; 1 with --quick)"
    )
    parser.add_argument("--loop", choices=[*LOOPS, "both"], default="both")
    parser.add_argument(
        "--libs", default=",".join(LIBS), help=f"comma-separated, from {', '.join(LIBS + EXTRA_LIBS)}"
    )
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated, from A,B,C,D")
    parser.add_argument("--json", metavar="FILE", help="write every measurement and the medians here")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per measurement (default 120)")
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--client-cpu", type=int, default=1)
    parser.add_argument("--optimize", action="store_true", help="run the child interpreters with -O")
    parser.add_argument("--log-dir", help="keep the children's stderr here (default: a temporary directory)")
    args = parser.parse_args(argv)
    args.libs = [lib.strip() for lib in args.libs.split(",") if lib.strip()]
    args.scenarios = [s.strip().upper() for s in args.scenarios.split(",") if s.strip()]
    for lib in args.libs:
        if lib not in LIBS + EXTRA_LIBS:
            parser.error(f"unknown library {lib!r}")
    for scenario in args.scenarios:
        if scenario not in SCENARIOS:
            parser.error(f"unknown scenario {scenario!r}")
    if args.runs is None:
        args.runs = 1 if args.quick else 3
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    loops = list(LOOPS) if args.loop == "both" else [args.loop]
    counts = QUICK if args.quick else FULL
    keep_logs = args.log_dir is not None
    log_dir = Path(args.log_dir) if keep_logs else Path(tempfile.mkdtemp(prefix="bench-ws-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    settings = Settings(
        python=[sys.executable, *(["-O"] if args.optimize else [])],
        counts=counts,
        timeout=args.timeout,
        server_cpu=args.server_cpu,
        client_cpu=args.client_cpu,
        log_dir=log_dir,
    )
    # As a reader would type it: no paths of this machine in the report.
    command = " ".join(shlex.quote(a) for a in ["python", "bench/ws/run.py", *sys.argv[1:]])
    measurements: list[dict[str, Any]] = []
    total = args.runs * len(loops) * len(args.scenarios) * len(args.libs)
    procs = Processes()
    failed = interrupted = False
    try:
        for run in range(1, args.runs + 1):
            for loop in loops:
                for scenario in args.scenarios:
                    for lib in args.libs:
                        tag = f"{run}-{loop}-{scenario}-{lib}"
                        result = measure(procs, settings, lib, loop, scenario, tag)
                        record = {"run": run, "loop": loop, "scenario": scenario, "lib": lib, **result}
                        measurements.append(record)
                        failed |= "error" in result
                        shown = (
                            result.get("error") or f"{fmt(result['value'], result['unit'])} {result['unit']}"
                        )
                        print(f"[{len(measurements):>3}/{total}] {tag}: {shown}", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        print("interrupted; reporting what was measured", file=sys.stderr)
        interrupted = True
    finally:
        procs.stop_all()

    summary: dict[str, Any] = {}
    for record in measurements:
        slot = summary.setdefault(record["loop"], {}).setdefault(record["scenario"], {})
        entry = slot.setdefault(record["lib"], {"values": [], "errors": [], "server_cpu": []})
        if "error" in record:
            entry["errors"].append(record["error"])
        else:
            entry["values"].append(record["value"])
            if "server_cpu_us_per_rt" in record:
                entry["server_cpu"].append(record["server_cpu_us_per_rt"])
    for by_scenario in summary.values():
        for by_lib in by_scenario.values():
            for entry in by_lib.values():
                if entry["values"]:
                    entry.update(summarize(entry["values"]))
                if entry["server_cpu"]:
                    entry["server_cpu_us_per_rt"] = statistics.median(entry["server_cpu"])

    wall = time.monotonic() - started
    environment = {
        "command": command,
        "versions": versions(),
        "tether_source": tether_source(),
        "cpu": cpu_model(),
        "server_cpu": args.server_cpu,
        "client_cpu": args.client_cpu,
        "runs": args.runs,
        "optimize": args.optimize,
        "counts": counts.__dict__,
        "wall_s": round(wall, 1),
    }
    print(f"## WebSocket echo: tether and peers ({args.runs} run{'s' if args.runs > 1 else ''} each)\n")
    print(f"`{command}`  ")
    print(
        ", ".join(f"{k} {v}" for k, v in environment["versions"].items())
        + f" (tether at {environment['tether_source']})  "
    )
    print(
        f"{environment['cpu']}; server on CPU {args.server_cpu}, client on CPU {args.client_cpu};"
        f" wall time {wall:.0f} s\n"
    )
    print(
        f"Cells: median (min{DASH}max) over runs; ÷ tether and ÷ raw: median divided by theirs;"
        " server CPU: median CPU time of the server process per round trip, in microseconds.\n"
    )
    print(tables(summary, args.libs, loops, args.scenarios, counts))
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"environment": environment, "summary": summary, "measurements": measurements}, indent=2
            )
            + "\n"
        )
    if failed or interrupted:
        what = "some measurements failed" if failed else "interrupted"
        print(f"{what}; children's stderr is in {log_dir}", file=sys.stderr)
    elif not keep_logs:
        shutil.rmtree(log_dir, ignore_errors=True)
    return 1 if failed or interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
