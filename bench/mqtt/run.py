"""Compare tether's MQTT client with paho-mqtt, aiomqtt and gmqtt through one mosquitto.

``python bench/mqtt/run.py [--quick] [--runs 3] [--loop asyncio|uvloop|both] [--json out.json]``

Starts ONE mosquitto (tests/integration/mosquitto.py) on free loopback ports with a TCP
and a WebSocket listener, pinned to one CPU; then, for every measurement, a client
process (clients.py, pinned to another CPU) runs one scenario with one library and
prints one JSON result. Runs are interleaved (run, transport, scenario, library) so that
drift of the machine spreads over every library. Prints Markdown tables on stdout,
progress on stderr. See bench/mqtt/README.md.
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
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from common import (
    DEFAULT_LIBS,
    LIBS,
    LOOPS,
    ON_LOOP,
    PEERS,
    SCENARIOS,
    TRANSPORTS,
    load_mosquitto,
    loop_label,
    raise_nofile,
    supports,
    tether_source,
)

HERE = Path(__file__).resolve().parent
DASH = "\N{EN DASH}"  # between min and max; "-" would read as a minus sign
DISTRIBUTIONS = ("tether", "paho-mqtt", "aiomqtt", "gmqtt", "uvloop")
#: mosquitto settings beyond its defaults. No client is ever dropped messages by the broker:
#: the per-client queue (default 1000) would otherwise drop QoS 0 and 1 messages for a
#: subscriber that falls behind, and measure the broker's policy instead of the client.
BROKER_CONFIG = ("max_queued_messages 1000000",)


@dataclass(frozen=True)
class Counts:
    q0: int
    q1: int
    rr: int
    mem: int


FULL = Counts(q0=100_000, q1=20_000, rr=2_000, mem=1_000)
QUICK = Counts(q0=10_000, q1=2_000, rr=200, mem=100)

TITLES = {
    "q0": ("{n:,} QoS 0 messages of 32 bytes, received by a subscriber", "msg/s", True),
    "q1": ("{n:,} QoS 1 messages of 32 bytes, received by a subscriber", "msg/s", True),
    "rr": ("{n:,} sequential request/response round trips (QoS 0, 32 bytes), median", "µs", False),
    "mem": ("{n:,} idle connections: client RSS growth per connection", "KiB/conn", False),
}


# ------------------------------------------------------------- processes


def run_client(argv: list[str], timeout: float, log: Path) -> dict[str, Any]:
    """Run one client process; always stopped by its PID; return its JSON result."""
    with log.open("w") as stderr:
        proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=stderr, stdin=subprocess.DEVNULL, text=True
        )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout:g} s (client killed)"}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    lines = out.strip().splitlines()
    if not lines:
        tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-3:])
        return {"error": f"client exited with {proc.returncode}, no result; {tail}"}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


# ----------------------------------------------------------------- report


def fmt(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}"


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    values = [r["value"] for r in records if "error" not in r]
    entry: dict[str, Any] = {"values": values, "errors": [r["error"] for r in records if "error" in r]}
    if values:
        entry.update(median=statistics.median(values), min=min(values), max=max(values))
        for key in ("p99_us", "lost"):
            found = [r[key] for r in records if key in r]
            if found:
                entry[key] = statistics.median(found) if key == "p99_us" else max(found)
    return entry


def cell(entry: dict[str, Any] | None) -> str:
    if entry is None:
        return DASH
    if "median" not in entry:
        first = entry["errors"][0]
        return "timeout" if first.startswith("timeout") else "failed: " + first[:50].replace("|", "/")
    text = f"{fmt(entry['median'])} ({fmt(entry['min'])}{DASH}{fmt(entry['max'])})"
    if entry["errors"]:
        text += f" [{len(entry['errors'])} failed]"
    return text


def best_peer(by_row: dict[str, dict[str, Any]], higher: bool) -> float | None:
    medians = [e["median"] for row, e in by_row.items() if row.split(" ")[0] in PEERS and "median" in e]
    if not medians:
        return None
    return max(medians) if higher else min(medians)


def tables(
    summary: dict[str, Any], rows: list[str], scenarios: list[str], transports: list[str], counts: Counts
) -> str:
    out: list[str] = []
    for scenario in scenarios:
        template, unit, higher = TITLES[scenario]
        title = template.format(n=getattr(counts, scenario))
        out.append(f"### {scenario}: {title} ({unit}, {'higher' if higher else 'lower'} is better)\n")
        header = ["library (loop)"]
        for transport in transports:
            header += [f"{transport}: median (min{DASH}max)", "÷ best peer"]
            if scenario == "rr":
                header.append("p99 µs")
            if scenario in ("q0", "q1"):
                header.append("lost")
        out.append("| " + " | ".join(header) + " |")
        out.append("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|")
        for row in rows:
            if not any(row in summary.get(scenario, {}).get(t, {}) for t in transports):
                continue
            line = [row]
            for transport in transports:
                by_row = summary.get(scenario, {}).get(transport, {})
                entry = by_row.get(row)
                reference = best_peer(by_row, higher)
                ratio = (
                    f"{entry['median'] / reference:.2f}"
                    if entry and "median" in entry and reference
                    else DASH
                )
                line += [cell(entry), ratio]
                if scenario == "rr":
                    line.append(fmt(entry["p99_us"]) if entry and "p99_us" in entry else DASH)
                if scenario in ("q0", "q1"):
                    line.append(str(entry["lost"]) if entry and "lost" in entry else DASH)
            out.append("| " + " | ".join(line) + " |")
        out.append("")
    return "\n".join(out)


def versions(broker: Path) -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in DISTRIBUTIONS:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[name] = metadata.version(name)
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        head = subprocess.run([str(broker), "-h"], capture_output=True, text=True, timeout=10).stdout
        found["mosquitto"] = head.split("version", 1)[1].split()[0]
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
        "--libs", default=",".join(DEFAULT_LIBS), help=f"comma-separated, from {', '.join(LIBS)}"
    )
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated, from q0,q1,rr,mem")
    parser.add_argument("--transports", default=",".join(TRANSPORTS), help="comma-separated, from tcp,ws")
    parser.add_argument("--version", type=int, choices=(4, 5), default=5, help="MQTT version (default 5)")
    parser.add_argument("--json", metavar="FILE", help="write every measurement and the medians here")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per measurement (default 120)")
    parser.add_argument("--broker-cpu", type=int, default=0)
    parser.add_argument("--client-cpu", type=int, default=1)
    parser.add_argument("--log-dir", help="keep the children's stderr and the broker's log here")
    args = parser.parse_args(argv)
    for name, allowed in (("libs", LIBS), ("scenarios", SCENARIOS), ("transports", TRANSPORTS)):
        chosen = [item.strip() for item in getattr(args, name).split(",") if item.strip()]
        for item in chosen:
            if item not in allowed:
                parser.error(f"unknown {name[:-1]} {item!r}")
        setattr(args, name, chosen)
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
    log_dir = Path(args.log_dir) if keep_logs else Path(tempfile.mkdtemp(prefix="bench-mqtt-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    command = " ".join(shlex.quote(a) for a in ["python", "bench/mqtt/run.py", *sys.argv[1:]])
    # (lib, loop) pairs: paho runs on its own thread and mosquitto's clients in C, once each.
    combos = [(lib, loop) for lib in args.libs for loop in (loops if lib in ON_LOOP else loops[:1])]
    rows = [f"{lib} ({loop_label(lib, loop)})" for lib, loop in combos]
    plan = [
        (run, transport, scenario, lib, loop)
        for run in range(1, args.runs + 1)
        for transport in args.transports
        for scenario in args.scenarios
        for lib, loop in combos
        if supports(lib, scenario, transport)
    ]

    raise_nofile()  # mosquitto inherits it: the mem scenario opens 1,000 connections at once
    mosquitto = load_mosquitto()
    broker = mosquitto.Broker(
        log_dir / "mosquitto",
        schemes=("mqtt", "ws"),
        log_types=("error", "warning"),
        extra_config=BROKER_CONFIG,
    )
    measurements: list[dict[str, Any]] = []
    failed = interrupted = False
    try:
        broker.start()
        with contextlib.suppress(OSError):
            if args.broker_cpu >= 0:
                os.sched_setaffinity(broker.pid, {args.broker_cpu})
        for index, (run, transport, scenario, lib, loop) in enumerate(plan, 1):
            tag = f"{run}-{transport}-{scenario}-{lib}-{loop_label(lib, loop)}"
            argv = [
                sys.executable,
                str(HERE / "clients.py"),
                lib,
                scenario,
                "--port",
                str(broker.port("mqtt" if transport == "tcp" else "ws")),
                "--transport",
                transport,
                "--loop",
                loop,
                "--cpu",
                str(args.client_cpu),
                "--count",
                str(getattr(counts, scenario)),
                "--version",
                str(args.version),
                "--timeout",
                str(args.timeout),
                "--tag",
                f"r{run}{transport}{scenario}{lib}{loop}".replace("-", ""),
            ]
            result = run_client(argv, args.timeout + 30, log_dir / f"{tag}.log")
            if not broker.running():
                result.setdefault("error", "mosquitto died")
                broker.start()
            record = {
                "run": run,
                "transport": transport,
                "scenario": scenario,
                "lib": lib,
                "loop": loop_label(lib, loop),
                **result,
            }
            measurements.append(record)
            failed |= "error" in result
            shown = result.get("error") or f"{fmt(result['value'])} {result['unit']}"
            if result.get("lost"):
                shown += f" ({result['lost']} lost)"
            print(f"[{index:>3}/{len(plan)}] {tag}: {shown}", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        print("interrupted; reporting what was measured", file=sys.stderr)
        interrupted = True
    finally:
        broker.stop()

    grouped: dict[str, dict[str, dict[str, list[dict[str, Any]]]]] = {}
    for record in measurements:
        row = f"{record['lib']} ({record['loop']})"
        grouped.setdefault(record["scenario"], {}).setdefault(record["transport"], {}).setdefault(
            row, []
        ).append(record)
    summary = {
        scenario: {
            transport: {row: summarize(records) for row, records in by_row.items()}
            for transport, by_row in by_transport.items()
        }
        for scenario, by_transport in grouped.items()
    }

    wall = time.monotonic() - started
    environment = {
        "command": command,
        "versions": versions(Path(broker.executable)),
        "tether_source": tether_source(),
        "mqtt_version": args.version,
        "broker_config": list(BROKER_CONFIG),
        "broker_cpu": args.broker_cpu,
        "client_cpu": args.client_cpu,
        "runs": args.runs,
        "counts": counts.__dict__,
        "wall_s": round(wall, 1),
    }
    runs = f"{args.runs} run{'s' if args.runs > 1 else ''}"
    print(f"## MQTT clients through one mosquitto: tether and peers ({runs})\n")
    print(f"`{command}`  ")
    print(
        ", ".join(f"{k} {v}" for k, v in environment["versions"].items())
        + f" (tether at {environment['tether_source']}); MQTT {'5.0' if args.version == 5 else '3.1.1'}  "
    )
    print(f"broker on CPU {args.broker_cpu}, clients on CPU {args.client_cpu}; wall time {wall:.0f} s\n")
    print(
        f"Cells: median (min{DASH}max) over runs; ÷ best peer: median divided by the best peer's"
        " (paho-mqtt, aiomqtt, gmqtt; mosquitto's C clients are a reference, not a peer);"
        " lost: most messages lost in one run.\n"
    )
    print(tables(summary, rows, args.scenarios, args.transports, counts))
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"environment": environment, "summary": summary, "measurements": measurements}, indent=2
            )
            + "\n"
        )
    if failed or interrupted:
        print(
            f"{'some measurements failed' if failed else 'interrupted'}; logs are in {log_dir}",
            file=sys.stderr,
        )
    elif not keep_logs:
        shutil.rmtree(log_dir, ignore_errors=True)
    return 1 if failed or interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
