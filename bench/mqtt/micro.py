"""In-process CPU cost of tether's MQTT hot paths, in µs per packet (no broker, no sockets).

``python bench/mqtt/micro.py [--count N] [--repeat R] [--version 4|5]`` prints one line per
path: the median over R repetitions of CPU time (``time.process_time``) divided by N.
Run it once normally and once with ``TETHER_NO_SPEEDUPS=1`` to compare the compiled
accelerator (``tether._speedups``) with the pure-Python path.

- ``split``: `tether.mqtt.packets._split_packets` over chunks of about 256 KiB of QoS 0 PUBLISH
  packets (32-byte payload): the framing step alone;
- ``core receive``: `Connection.receive_data` over the same chunks, events collected;
- ``client receive``: `Client` from the bytes read to a message taken from a `messages()`
  stream (the link is a stand-in that ignores writes and pauses);
- ``core publish``: `Connection.publish` at QoS 0, `data_to_send` every 1,000 packets;
- ``client publish``: ``await Client.publish`` at QoS 0 (the write is the stand-in's).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tether.mqtt import client as client_module
from tether.mqtt import packets
from tether.mqtt.protocol import Connection

TOPIC = "bench/micro/data"
CHUNK = 256 * 1024  # what asyncio's selector transports read at once


def chunks(count: int, version: int) -> list[bytes]:
    """count QoS 0 PUBLISH packets in chunks of about CHUNK bytes, cut between packets."""
    one = packets.encode(packets.Publish(TOPIC, b"x" * 32), version)
    data = one * count
    step = CHUNK // len(one) * len(one)
    return [data[i : i + step] for i in range(0, len(data), step)]


def connected_core(version: int) -> Connection:
    core = Connection("micro", version=version)
    core.connect(0.0)
    core.receive_data(b"\x20\x03\x00\x00\x00" if version == 5 else b"\x20\x02\x00\x00", 0.0)
    core.events_received()
    core.data_to_send()
    return core


def measure(repeat: int, count: int, run: Callable[[], object]) -> float:
    """Median µs per packet of run() over repeat repetitions."""
    results = []
    for _ in range(repeat):
        gc.collect()
        start = time.process_time()
        run()
        results.append((time.process_time() - start) / count * 1e6)
    return statistics.median(results)


class NullLink(client_module._Link):
    __slots__ = ()

    @property
    def paused(self) -> bool:
        return False

    def write(self, data: bytes) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def connected_client(version: int) -> Any:
    client = client_module.Client("mqtt://127.0.0.1", version=version, reconnect=False)
    client._loop = asyncio.get_running_loop()
    client._started = True
    client._open_session()
    link = NullLink()
    client._link = link
    client.session.connect(0.0)
    client._received(link, b"\x20\x03\x00\x00\x00" if version == 5 else b"\x20\x02\x00\x00")
    return client, link


async def client_paths(count: int, repeat: int, version: int, data: list[bytes]) -> dict[str, float]:
    client, link = await connected_client(version)
    stream = client.messages()

    async def receive() -> None:
        for chunk in data:
            client._received(link, chunk)
            while len(stream):
                await stream.__anext__()

    async def publish() -> None:
        payload = b"x" * 32
        for _ in range(count):
            await client.publish(TOPIC, payload)
        client._flush()

    results = {}
    for name, body in (("client receive", receive), ("client publish", publish)):
        runs = []
        for _ in range(repeat):
            gc.collect()
            start = time.process_time()
            await body()
            runs.append((time.process_time() - start) / count * 1e6)
        results[name] = statistics.median(runs)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--version", type=int, choices=(4, 5), default=5)
    args = parser.parse_args(argv)
    count, repeat, version = args.count, args.repeat, args.version
    data = chunks(count, version)

    def split() -> None:
        for chunk in data:
            packets._split_packets(chunk, 0, packets.DEFAULT_MAX_SIZE, version)

    def core_receive() -> None:
        core = connected_core(version)
        for chunk in data:
            core.receive_data(chunk, 1.0)
            core.events_received()

    def core_publish() -> None:
        core = connected_core(version)
        payload = b"x" * 32
        core.publish(TOPIC, payload)  # the first one makes the topic's encoded form
        for i in range(count):
            core.publish(TOPIC, payload)
            if i % 1000 == 0:
                core.data_to_send()

    speedups = packets.SPEEDUPS
    print(
        f"tether._speedups in use: {speedups}; MQTT {'5.0' if version == 5 else '3.1.1'}; {count:,} packets"
    )
    results = {
        "split": measure(repeat, count, split),
        "core receive": measure(repeat, count, core_receive),
        "core publish": measure(repeat, count, core_publish),
    }
    results.update(asyncio.run(client_paths(count, repeat, version, data)))
    for name, value in results.items():
        print(f"{name:>15}: {value:6.3f} µs/packet")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    raise SystemExit(main())
