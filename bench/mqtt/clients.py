"""Benchmark clients, one per library, each running one scenario against a running mosquitto.

``python bench/mqtt/clients.py LIB SCENARIO --port N [--transport tcp|ws] [--loop asyncio|uvloop] ...``
prints one JSON line on stdout: ``{"value": ..., "unit": ..., ...}`` or ``{"error": ...}``.
Scenarios (see bench/mqtt/README.md):

- q0: one connection publishes COUNT messages of SIZE bytes at QoS 0, another one (same
  library, same process) subscribes; messages/s at the subscriber, loss counted;
- q1: the same at QoS 1 (publishes awaited through a window of WINDOW in flight);
- rr: request/response: a responder echoes each request on a reply topic; COUNT
  sequential round trips, p50 and p99 in microseconds;
- mem: COUNT idle connections; growth of this process's VmRSS per connection, KiB.

Every wait is bounded by --timeout; a stalled stream (no message for IDLE seconds after
the last publish) ends the measurement and counts the rest as lost.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import gc
import json
import os
import selectors
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from common import (
    HOST,
    LIBS,
    LOOPS,
    SCENARIOS,
    TRANSPORTS,
    WS_PATH,
    pin_to_cpu,
    raise_nofile,
    run_on_loop,
    settle_malloc,
    vm_rss_kib,
)

IDLE = 3.0  # seconds without a message, after the last publish, that end a stream
WINDOW = 100  # QoS 1 publishes in flight at once, for libraries whose publish() awaits PUBACK
BATCH = 50  # connections opened at once in the mem scenario

Handler = Callable[[str, bytes], Awaitable[None] | None]


class Settings(argparse.Namespace):
    lib: str
    scenario: str
    transport: str
    port: int
    loop: str
    cpu: int
    count: int
    size: int
    version: int
    timeout: float
    tag: str


# ------------------------------------------------------- asyncio libraries


class AsyncConn:
    """One connection of an asyncio library, behind the calls the scenarios make."""

    async def subscribe(self, topic: str, qos: int) -> None:
        raise NotImplementedError

    async def publish(self, topic: str, payload: bytes, qos: int) -> None:
        """Publish; returns when the library says the QoS flow is done (or, for a library
        whose publish does not wait, at once)."""
        raise NotImplementedError

    def receive(self, handler: Handler) -> None:
        """Call handler(topic, payload) for each message, the library's idiomatic way."""
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


async def _consume(messages: Any, handler: Handler) -> None:
    async for message in messages:
        result = handler(str(message.topic), message.payload)
        if result is not None:
            await result


class TetherConn(AsyncConn):
    def __init__(self, client: Any) -> None:
        self.client = client
        self.task: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, s: Settings, client_id: str) -> TetherConn:
        from tether.mqtt import Client

        scheme = "mqtt" if s.transport == "tcp" else "ws"
        path = WS_PATH if s.transport == "ws" else ""
        client = Client(
            f"{scheme}://{HOST}:{s.port}{path}",
            client_id=client_id,
            version=s.version,
            keepalive=60,
            reconnect=False,
        )
        await client.connect()
        return cls(client)

    async def subscribe(self, topic: str, qos: int) -> None:
        await self.client.subscribe(topic, qos=qos)

    async def publish(self, topic: str, payload: bytes, qos: int) -> None:
        await self.client.publish(topic, payload, qos=qos)

    def receive(self, handler: Handler) -> None:
        self.task = asyncio.create_task(_consume(self.client.messages(), handler))

    async def close(self) -> None:
        await self.client.disconnect()
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


class AiomqttConn(TetherConn):
    @classmethod
    async def open(cls, s: Settings, client_id: str) -> AiomqttConn:
        import aiomqtt

        client = aiomqtt.Client(
            HOST,
            s.port,
            identifier=client_id,
            protocol=aiomqtt.ProtocolVersion.V5 if s.version == 5 else aiomqtt.ProtocolVersion.V311,
            transport="websockets" if s.transport == "ws" else "tcp",
            websocket_path=WS_PATH if s.transport == "ws" else None,
            keepalive=60,
            timeout=s.timeout,
        )
        await client.__aenter__()
        return cls(client)

    async def publish(self, topic: str, payload: bytes, qos: int) -> None:
        await self.client.publish(topic, payload, qos=qos)

    def receive(self, handler: Handler) -> None:
        self.task = asyncio.create_task(_consume(self.client.messages, handler))

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        await self.client.__aexit__(None, None, None)


class GmqttConn(AsyncConn):
    """gmqtt: publish() and subscribe() send at once and return; messages come to a callback."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.handler: Handler | None = None
        self.subacks: dict[int, asyncio.Future[None]] = {}
        self.acked: asyncio.Event | None = None
        self.tasks: set[asyncio.Future[None]] = set()  # the responder's publishes
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        # gmqtt has no flow control of its own: publish() raises OverflowError once every
        # packet id the server's Receive Maximum allows is in flight, and it tells nobody
        # about PUBACKs. Wrapping the store it removes acknowledged messages from gives a
        # sliding window, the best gmqtt can do.
        storage = client._persistent_storage
        remove = storage.remove_message_by_mid

        def remove_and_wake(mid: int) -> Any:
            result = remove(mid)
            if self.acked is not None:
                self.acked.set()
            return result

        storage.remove_message_by_mid = remove_and_wake

    @classmethod
    async def open(cls, s: Settings, client_id: str) -> GmqttConn:
        from gmqtt import Client

        client = Client(client_id)
        conn = cls(client)
        await client.connect(HOST, s.port, keepalive=60, version=s.version)
        return conn

    def _on_message(self, _client: Any, topic: str, payload: bytes, _qos: int, _properties: Any) -> int:
        if self.handler is not None:
            result = self.handler(topic, payload)
            if result is not None:
                task = asyncio.ensure_future(result)
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
        return 0  # the reason code of the PUBACK

    def _on_subscribe(self, _client: Any, mid: int, _qos: Any, _properties: Any) -> None:
        future = self.subacks.pop(mid, None)
        if future is not None and not future.done():
            future.set_result(None)

    async def subscribe(self, topic: str, qos: int) -> None:
        future = asyncio.get_running_loop().create_future()
        mid = self.client.subscribe(topic, qos=qos)
        self.subacks[mid] = future
        await future

    async def publish(self, topic: str, payload: bytes, qos: int) -> None:
        while True:
            try:
                self.client.publish(topic, payload, qos=qos)
                return
            except OverflowError:
                self.acked = self.acked or asyncio.Event()
                self.acked.clear()
                await self.acked.wait()

    def receive(self, handler: Handler) -> None:
        self.handler = handler

    async def close(self) -> None:
        await self.client.disconnect()


ASYNC_LIBS: dict[str, Any] = {
    "tether": TetherConn,
    "tether-py": TetherConn,  # with TETHER_NO_SPEEDUPS=1 (see main())
    "aiomqtt": AiomqttConn,
    "gmqtt": GmqttConn,
}


async def async_throughput(s: Settings, qos: int) -> dict[str, Any]:
    conn_class = ASYNC_LIBS[s.lib]
    topic = f"bench/{s.tag}/data"
    payload = b"x" * s.size
    loop = asyncio.get_running_loop()
    state = {"got": 0, "last": 0.0, "target": 0}
    arrived = asyncio.Event()

    def on_message(_topic: str, _payload: bytes) -> None:
        state["got"] += 1
        state["last"] = time.perf_counter()
        if state["got"] >= state["target"]:
            arrived.set()

    async def wait_for_stream(deadline: float) -> None:
        """Until every message arrived, the stream stalls for IDLE s, or deadline."""
        seen = -1
        while not arrived.is_set() and seen != state["got"] and loop.time() < deadline:
            seen = state["got"]
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(arrived.wait(), min(IDLE, max(deadline - loop.time(), 0.01)))

    deadline = loop.time() + s.timeout
    sub = await conn_class.open(s, f"{s.tag}-sub")
    pub = await conn_class.open(s, f"{s.tag}-pub")
    try:
        sub.receive(on_message)
        await sub.subscribe(topic, qos)
        warmup = max(s.count // 20, 2)
        state["target"] = warmup
        for _ in range(warmup):
            await pub.publish(topic, payload, qos)
        await wait_for_stream(deadline)
        if state["got"] < warmup:
            return {"error": f"warm-up: {state['got']} of {warmup} messages arrived"}
        state["got"], state["target"] = 0, s.count
        arrived.clear()
        start = time.perf_counter()
        if qos == 0 or s.lib == "gmqtt":
            for _ in range(s.count):
                await pub.publish(topic, payload, qos)
        else:
            # A sliding window of WINDOW publishes, at O(1) per message (asyncio.wait() over
            # the window would cost the harness more than some clients spend).
            window = asyncio.Semaphore(WINDOW)
            failures: list[BaseException] = []

            def done(task: asyncio.Future[None]) -> None:
                window.release()
                if not task.cancelled() and task.exception() is not None:
                    failures.append(task.exception())  # type: ignore[arg-type]

            for _ in range(s.count):
                await window.acquire()
                asyncio.ensure_future(pub.publish(topic, payload, qos)).add_done_callback(done)
            for _ in range(WINDOW):
                await window.acquire()
            if failures:
                raise failures[0]
        published = time.perf_counter()
        await wait_for_stream(deadline)
        got, last = state["got"], state["last"]
    finally:
        await pub.close()
        await sub.close()
    return throughput_result(s, got, start, last, published)


def throughput_result(s: Settings, got: int, start: float, last: float, published: float) -> dict[str, Any]:
    if got == 0:
        return {"error": "no message arrived"}
    elapsed = last - start
    return {
        "value": got / elapsed,
        "unit": "msg/s",
        "received": got,
        "lost": s.count - got,
        "elapsed_s": elapsed,
        "publish_s": published - start,
    }


async def async_round_trips(s: Settings) -> dict[str, Any]:
    conn_class = ASYNC_LIBS[s.lib]
    request_topic, reply_topic = f"bench/{s.tag}/request", f"bench/{s.tag}/reply"
    payload = b"r" * s.size
    loop = asyncio.get_running_loop()
    waiting: list[asyncio.Future[None]] = []

    def on_reply(_topic: str, _payload: bytes) -> None:
        if waiting and not waiting[0].done():
            waiting[0].set_result(None)

    responder = await conn_class.open(s, f"{s.tag}-responder")
    requester = await conn_class.open(s, f"{s.tag}-requester")
    try:
        responder.receive(lambda _topic, body: responder.publish(reply_topic, body, 0))
        await responder.subscribe(request_topic, 0)
        requester.receive(on_reply)
        await requester.subscribe(reply_topic, 0)
        warmup = max(s.count // 20, 2)
        samples: list[float] = []
        for i in range(warmup + s.count):
            future = loop.create_future()
            waiting[:] = [future]
            start = time.perf_counter()
            await requester.publish(request_topic, payload, 0)
            await asyncio.wait_for(future, s.timeout)
            if i >= warmup:
                samples.append(time.perf_counter() - start)
    finally:
        await requester.close()
        await responder.close()
    return latency_result(samples)


def latency_result(samples: list[float]) -> dict[str, Any]:
    micros = sorted(sample * 1e6 for sample in samples)
    p99 = micros[min(len(micros) - 1, round(0.99 * (len(micros) - 1)))]
    return {
        "value": statistics.median(micros),
        "unit": "µs",
        "p50_us": statistics.median(micros),
        "p99_us": p99,
        "mean_us": statistics.fmean(micros),
    }


async def async_memory(s: Settings) -> dict[str, Any]:
    conn_class = ASYNC_LIBS[s.lib]
    first = await conn_class.open(s, f"{s.tag}-warm")  # imports and first-connection costs
    conns: list[AsyncConn] = [first]
    try:
        gc.collect()
        before = vm_rss_kib()
        for start in range(0, s.count, BATCH):
            batch = range(start, min(start + BATCH, s.count))
            conns += await asyncio.gather(*(conn_class.open(s, f"{s.tag}-{i}") for i in batch))
        gc.collect()
        after = vm_rss_kib()
    finally:
        for start in range(0, len(conns), BATCH):
            await asyncio.gather(
                *(conn.close() for conn in conns[start : start + BATCH]), return_exceptions=True
            )
    return memory_result(s, before, after)


def memory_result(s: Settings, before: int, after: int) -> dict[str, Any]:
    return {
        "value": (after - before) / s.count,
        "unit": "KiB/conn",
        "rss_before_kib": before,
        "rss_after_kib": after,
    }


async def run_async(s: Settings) -> dict[str, Any]:
    if s.scenario == "q0":
        return await async_throughput(s, 0)
    if s.scenario == "q1":
        return await async_throughput(s, 1)
    if s.scenario == "rr":
        return await async_round_trips(s)
    return await async_memory(s)


# -------------------------------------------------------------- paho-mqtt


def paho_client(s: Settings, client_id: str) -> Any:
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=paho.MQTTv5 if s.version == 5 else paho.MQTTv311,
        transport="websockets" if s.transport == "ws" else "tcp",
    )
    if s.transport == "ws":
        client.ws_set_options(path=WS_PATH)
    return client


class PahoConn:
    """paho on its own network thread (loop_start), as its users run it."""

    def __init__(self, s: Settings, client_id: str) -> None:
        self.client = paho_client(s, client_id)
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.client.on_connect = lambda *_args: self.connected.set()
        self.client.on_subscribe = lambda *_args: self.subscribed.set()
        self.client.connect(HOST, s.port, keepalive=60)
        self.client.loop_start()
        if not self.connected.wait(s.timeout):
            raise TimeoutError("paho: no CONNACK")

    def subscribe(self, topic: str, qos: int, timeout: float) -> None:
        self.subscribed.clear()
        self.client.subscribe(topic, qos)
        if not self.subscribed.wait(timeout):
            raise TimeoutError("paho: no SUBACK")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def paho_throughput(s: Settings, qos: int) -> dict[str, Any]:
    topic = f"bench/{s.tag}/data"
    payload = b"x" * s.size
    lock = threading.Lock()
    state = {"got": 0, "last": 0.0, "target": 0}
    arrived = threading.Event()

    def on_message(_client: Any, _userdata: Any, _message: Any) -> None:
        with lock:
            state["got"] += 1
            state["last"] = time.perf_counter()
            if state["got"] >= state["target"]:
                arrived.set()

    def wait_for_stream(deadline: float) -> None:
        seen = -1
        while not arrived.is_set() and seen != state["got"] and time.monotonic() < deadline:
            seen = state["got"]
            arrived.wait(min(IDLE, max(deadline - time.monotonic(), 0.01)))

    deadline = time.monotonic() + s.timeout
    sub = PahoConn(s, f"{s.tag}-sub")
    pub = PahoConn(s, f"{s.tag}-pub")
    try:
        sub.client.on_message = on_message
        sub.subscribe(topic, qos, s.timeout)
        warmup = max(s.count // 20, 2)
        state["target"] = warmup
        for _ in range(warmup):
            pub.client.publish(topic, payload, qos)
        wait_for_stream(deadline)
        if state["got"] < warmup:
            return {"error": f"warm-up: {state['got']} of {warmup} messages arrived"}
        with lock:
            state["got"], state["target"] = 0, s.count
            arrived.clear()
        start = time.perf_counter()
        for _ in range(s.count):
            pub.client.publish(topic, payload, qos)
        published = time.perf_counter()
        wait_for_stream(deadline)
        got, last = state["got"], state["last"]
    finally:
        pub.close()
        sub.close()
    return throughput_result(s, got, start, last, published)


def paho_round_trips(s: Settings) -> dict[str, Any]:
    request_topic, reply_topic = f"bench/{s.tag}/request", f"bench/{s.tag}/reply"
    payload = b"r" * s.size
    replied = threading.Event()
    responder = PahoConn(s, f"{s.tag}-responder")
    requester = PahoConn(s, f"{s.tag}-requester")
    try:
        responder.client.on_message = lambda client, _userdata, message: client.publish(
            reply_topic, message.payload, 0
        )
        responder.subscribe(request_topic, 0, s.timeout)
        requester.client.on_message = lambda *_args: replied.set()
        requester.subscribe(reply_topic, 0, s.timeout)
        warmup = max(s.count // 20, 2)
        samples: list[float] = []
        for i in range(warmup + s.count):
            replied.clear()
            start = time.perf_counter()
            requester.client.publish(request_topic, payload, 0)
            if not replied.wait(s.timeout):
                return {"error": f"no reply within {s.timeout:g} s"}
            if i >= warmup:
                samples.append(time.perf_counter() - start)
    finally:
        requester.close()
        responder.close()
    return latency_result(samples)


def paho_memory(s: Settings) -> dict[str, Any]:
    """Many paho clients on one thread: paho's documented external-loop API (socket(),
    loop_read(), loop_misc()), not a thread per client."""
    deadline = time.monotonic() + s.timeout
    connected: set[int] = set()

    def open_batch(clients: list[Any]) -> None:
        for index, client in enumerate(clients):
            client.on_connect = lambda *_args, index=index: connected.add(index)
        # connect() blocks until the TCP connection (and, over WebSocket, the HTTP upgrade)
        # is done; mosquitto answers upgrades only when its loop wakes, so do a batch at once.
        with concurrent.futures.ThreadPoolExecutor(len(clients)) as pool:
            list(pool.map(lambda client: client.connect(HOST, s.port, keepalive=60), clients))
        with selectors.DefaultSelector() as selector:
            for client in clients:
                selector.register(client.socket(), selectors.EVENT_READ, client)
            connected.clear()
            while len(connected) < len(clients):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"paho: {len(connected)} of {len(clients)} connected")
                selector.select(0.05)
                # Read every client still waiting, not only the readable ones: over
                # WebSocket, paho may already hold the CONNACK in its own buffer.
                for index, client in enumerate(clients):
                    if index not in connected:
                        client.loop_read()
                    if client.want_write():
                        client.loop_write()

    clients = [paho_client(s, f"{s.tag}-warm")]
    open_batch(clients)
    try:
        gc.collect()
        before = vm_rss_kib()
        for start in range(0, s.count, BATCH):
            batch = [paho_client(s, f"{s.tag}-{i}") for i in range(start, min(start + BATCH, s.count))]
            clients += batch
            open_batch(batch)
        gc.collect()
        after = vm_rss_kib()
    finally:
        for client in clients:
            with contextlib.suppress(Exception):
                client.disconnect()
    return memory_result(s, before, after)


def run_paho(s: Settings) -> dict[str, Any]:
    if s.scenario == "q0":
        return paho_throughput(s, 0)
    if s.scenario == "q1":
        return paho_throughput(s, 1)
    if s.scenario == "rr":
        return paho_round_trips(s)
    return paho_memory(s)


# --------------------------------------- mosquitto_pub and mosquitto_sub (C)


def mosquitto_clients_throughput(s: Settings, qos: int) -> dict[str, Any]:
    """mosquitto_sub -C N+1 exits after the last message; mosquitto_pub -l floods from a file.

    A retained probe on a second topic tells that mosquitto_sub has subscribed: exactly one
    line arrives for it at once. Output goes to a file (one short line per message) that
    nobody reads until the end, so that counting costs mosquitto_sub nothing extra.
    """
    topic = f"bench/{s.tag}/data"
    probe = f"bench/{s.tag}/probe"
    common = ["-h", HOST, "-p", str(s.port), "-V", "mqttv5" if s.version == 5 else "mqttv311"]
    workdir = Path(tempfile.mkdtemp(prefix="bench-mqtt-c-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        subprocess.run(["mosquitto_pub", *common, "-t", probe, "-m", "p", "-r"], check=True, timeout=10)
        lines = workdir / "payloads"
        lines.write_bytes((b"x" * s.size + b"\n") * s.count)
        output = workdir / "received"
        with output.open("wb") as out:
            sub = subprocess.Popen(
                [
                    *("mosquitto_sub", *common, "-t", topic, "-t", probe, "-q", str(qos), "-F", "%t"),
                    *("-C", str(s.count + 1), "-W", str(max(int(s.timeout), 1))),
                ],
                stdout=out,
                stderr=subprocess.DEVNULL,
                stdin=subprocess.DEVNULL,
            )
        procs.append(sub)
        deadline = time.monotonic() + 10
        while output.stat().st_size == 0:
            if sub.poll() is not None or time.monotonic() > deadline:
                return {"error": "mosquitto_sub did not subscribe"}
            time.sleep(0.005)  # polling a file: there is no event to wait for
        start = time.perf_counter()
        with lines.open("rb") as source:
            pub = subprocess.Popen(
                ["mosquitto_pub", *common, "-t", topic, "-q", str(qos), "-l"],
                stdin=source,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        procs.append(pub)
        pub.wait(s.timeout)
        published = time.perf_counter()
        sub.wait(s.timeout + 5)
        last = time.perf_counter()
        got = output.read_bytes().count(topic.encode() + b"\n")
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
        subprocess.run(["mosquitto_pub", *common, "-t", probe, "-n", "-r"], timeout=10, check=False)
        shutil.rmtree(workdir, ignore_errors=True)
    return throughput_result(s, got, start, last, published)


def run_mosquitto_clients(s: Settings) -> dict[str, Any]:
    if s.scenario not in ("q0", "q1"):
        return {"error": f"mosquitto's clients do not run {s.scenario}"}
    if s.transport != "tcp":
        return {"error": "mosquitto's clients have no WebSocket"}
    return mosquitto_clients_throughput(s, 1 if s.scenario == "q1" else 0)


# ------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> Settings:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lib", choices=LIBS)
    parser.add_argument("scenario", choices=SCENARIOS)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--transport", choices=TRANSPORTS, default="tcp")
    parser.add_argument("--loop", choices=LOOPS, default="asyncio")
    parser.add_argument("--cpu", type=int, default=-1, help="pin to this CPU (default: no pinning)")
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--version", type=int, choices=(4, 5), default=5)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--tag", default=f"b{os.getpid()}", help="makes topics and client ids unique")
    return parser.parse_args(argv, namespace=Settings())


def main(argv: list[str] | None = None) -> int:
    s = parse_args(argv)
    if s.lib == "tether-py":
        # tether's pure-Python path: set before tether is first imported.
        assert "tether.mqtt" not in sys.modules
        os.environ["TETHER_NO_SPEEDUPS"] = "1"
    settle_malloc()
    pin_to_cpu(s.cpu)
    raise_nofile()
    try:
        if s.lib == "paho":
            result = run_paho(s)
        elif s.lib == "mosquitto-clients":
            result = run_mosquitto_clients(s)
        else:

            async def bounded() -> dict[str, Any]:
                return await asyncio.wait_for(run_async(s), s.timeout)

            result = run_on_loop(s.loop, bounded())
    except (TimeoutError, asyncio.TimeoutError) as exc:
        result = {"error": f"timeout after {s.timeout:g} s" + (f" ({exc})" if str(exc) else "")}
    except Exception as exc:
        result = {"error": f"{type(exc).__name__}: {exc}"}
    if s.lib.startswith("tether"):
        from tether.mqtt import packets

        result["speedups"] = getattr(packets, "SPEEDUPS", False)  # False before the MQTT speedups
    print(json.dumps(result), flush=True)
    return 0 if "error" not in result else 1


if __name__ == "__main__":
    sys.exit(main())
