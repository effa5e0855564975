"""The blocking MQTT client `tether.mqtt.sync.Client` against a real mosquitto (issue 3).

"A blocking client for scripts and threads: every method safe to call from any thread,
including from inside a message callback, without deadlock." Covered:

- publish and subscribe at QoS 0, 1 and 2 over TCP and WebSocket, and over TLS;
- ``with Client(...)``, `messages()` iteration, ``get(timeout)`` raising `Timeout`;
- 8 threads publishing at once: every message arrives;
- ``publish(qos=2)``, ``subscribe()``, ``unsubscribe()`` and ``disconnect()`` called from
  inside ``on_message``; a blocking call from the event loop thread raises `InvalidState`;
- a refused connection raises `Refused`; `request()`/`respond()` between two clients;
- no ``tether-mqtt*`` thread is left after `disconnect()` (checked after every test).

Every wait is bounded by `TIMEOUT`: a deadlock fails the test instead of hanging it. To
see that something does *not* arrive, a marker is published after it on the same
connection: the broker keeps the order, so the marker arriving first proves it.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from tests.integration.conftest import USERS
from tests.integration.mosquitto import Broker

from tether.errors import InvalidState, Refused, Timeout
from tether.mqtt import Message
from tether.mqtt.sync import Client

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

TIMEOUT = 10.0  # seconds; bounds every wait so that nothing can hang


def client(broker: Broker, scheme: str = "mqtt", **kwargs: Any) -> Client:
    """A blocking client for one listener of broker (TLS trusts the test CA), not connected."""
    if scheme in ("mqtts", "wss"):
        kwargs.setdefault("ssl", broker.client_ssl())
    kwargs.setdefault("reconnect", False)
    return Client(broker.url(scheme), timeout=TIMEOUT, **kwargs)


def tether_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("tether-mqtt")]


@pytest.fixture(autouse=True)
def no_thread_left() -> Iterator[None]:
    """After each test, every thread a blocking client started has ended."""
    before = set(tether_threads())
    yield
    left = [t for t in tether_threads() if t not in before]
    for thread in left:
        # A dispatcher that disconnected its own client returns from the callback after.
        thread.join(TIMEOUT)
    assert [t.name for t in left if t.is_alive()] == []


class Inbox:
    """An ``on_message`` callback that queues messages, with a bounded `get()`."""

    def __init__(self) -> None:
        self.queue: queue.Queue[Message] = queue.Queue()

    def __call__(self, message: Message) -> None:
        self.queue.put(message)

    def get(self) -> Message:
        return self.queue.get(timeout=TIMEOUT)


def run_in_loop(sync: Client, function: Callable[[], Any]) -> Any:
    """Run function in sync's event loop thread; return its result or raise its exception."""
    done: queue.Queue[tuple[bool, Any]] = queue.Queue()

    def call() -> None:
        try:
            done.put((True, function()))
        except BaseException as exc:
            done.put((False, exc))

    sync._loop.call_soon_threadsafe(call)
    ok, value = done.get(timeout=TIMEOUT)
    if not ok:
        raise value
    return value


# ------------------------------------------------------------------ publish and subscribe


@pytest.mark.parametrize(
    ("scheme", "qos"),
    [("mqtt", 0), ("mqtt", 1), ("mqtt", 2), ("ws", 0), ("ws", 1), ("ws", 2), ("mqtts", 2)],
)
def test_publish_subscribe(mosquitto: Broker, topic: str, scheme: str, qos: int) -> None:
    payload = bytes(range(256)) * 3
    with client(mosquitto, scheme) as sub, client(mosquitto, scheme) as pub:
        assert sub.is_connected and pub.is_connected
        messages = sub.messages(topic)
        assert sub.subscribe(topic, qos=qos) == (qos,)
        pub.publish(topic, payload, qos=qos)
        pub.publish(topic, b"", qos=qos)
        first, second = messages.get(TIMEOUT), messages.get(TIMEOUT)
    assert (first.topic, first.payload, first.qos) == (topic, payload, qos)
    assert (second.payload, second.qos) == (b"", qos)
    assert not sub.is_connected


def test_on_message_in_the_dispatcher_thread(mosquitto: Broker, topic: str) -> None:
    threads: list[str] = []
    inbox = Inbox()

    def on_message(message: Message) -> None:
        threads.append(threading.current_thread().name)
        inbox(message)

    with client(mosquitto, on_message=on_message) as sub:
        sub.subscribe(topic, qos=1)
        for i in range(5):
            sub.publish(topic, b"%d" % i, qos=1)
        assert [inbox.get().payload for _ in range(5)] == [b"0", b"1", b"2", b"3", b"4"]
    assert set(threads) == {"tether-mqtt-dispatch"}


def test_messages_iteration_and_get_timeout(mosquitto: Broker, topic: str) -> None:
    sync = client(mosquitto)
    sync.connect()
    stream = sync.messages(topic + "/#")
    other = sync.messages("elsewhere/#")
    sync.subscribe(topic + "/#", qos=1)
    for i in range(3):
        sync.publish(f"{topic}/{i}", b"m%d" % i, qos=1)
    received = []
    for message in stream:
        received.append((message.topic, message.payload))
        if len(received) == 3:
            break
    assert received == [(f"{topic}/{i}", b"m%d" % i) for i in range(3)]
    assert len(other) == 0
    with pytest.raises(Timeout) as caught:
        stream.get(timeout=0.1)
    assert isinstance(caught.value, TimeoutError)
    # One more message after the timeout: the cancelled get() took nothing.
    sync.publish(f"{topic}/3", b"m3", qos=1)
    assert stream.get(TIMEOUT).payload == b"m3"
    sync.disconnect()
    assert list(stream) == []  # iteration ends with the client
    with pytest.raises(InvalidState):
        sync.publish(topic, b"late")


def test_publish_from_eight_threads(mosquitto: Broker, topic: str) -> None:
    threads, each = 8, 200
    with client(mosquitto) as sub, client(mosquitto) as pub:
        stream = sub.messages(topic + "/#", max_queue=threads * each)
        sub.subscribe(topic + "/#", qos=1)
        errors: list[BaseException] = []

        def publish(n: int) -> None:
            try:
                for i in range(each):
                    pub.publish(f"{topic}/{n}", b"%d" % i, qos=1)
            except BaseException as exc:
                errors.append(exc)

        workers = [threading.Thread(target=publish, args=(n,)) for n in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(TIMEOUT)
        assert not any(worker.is_alive() for worker in workers)
        assert errors == []
        received: dict[str, list[bytes]] = {f"{topic}/{n}": [] for n in range(threads)}
        for _ in range(threads * each):
            message = stream.get(TIMEOUT)
            received[message.topic].append(message.payload)
    # Each thread's messages arrive in the order it published them.
    assert received == {name: [b"%d" % i for i in range(each)] for name in received}


# ------------------------------------------------------------------ calls from callbacks


def test_publish_subscribe_unsubscribe_from_on_message(mosquitto: Broker, topic: str) -> None:
    """A chain: each message subscribes to the next topic, unsubscribes from its own and
    publishes at QoS 2 to the next, all from inside on_message."""
    steps = 10
    seen: list[str] = []
    errors: list[BaseException] = []
    done = threading.Event()
    marker = threading.Event()

    def on_message(message: Message) -> None:
        seen.append(message.topic)
        try:
            if message.payload == b"marker":
                marker.set()
                return
            n = int(message.topic.rsplit("/", 1)[1])
            if n == steps:
                done.set()
                return
            sync.subscribe(f"{topic}/{n + 1}", qos=2)
            sync.unsubscribe(f"{topic}/{n}")
            assert sync.publish(f"{topic}/{n + 1}", b"step", qos=2) == 0
        except BaseException as exc:
            errors.append(exc)
            done.set()

    with client(mosquitto, on_message=on_message) as sync:
        sync.subscribe(f"{topic}/0", qos=2)
        sync.publish(f"{topic}/0", b"start", qos=2)
        assert done.wait(TIMEOUT)
        assert errors == []
        # Unsubscribed from every topic but the last: only the marker comes back.
        sync.publish(f"{topic}/0", b"again", qos=2)
        sync.publish(f"{topic}/{steps}", b"marker", qos=2)
        assert marker.wait(TIMEOUT)
    assert seen == [f"{topic}/{n}" for n in range(steps + 1)] + [f"{topic}/{steps}"]


def test_disconnect_from_on_message(mosquitto: Broker, topic: str) -> None:
    returned = threading.Event()
    errors: list[BaseException] = []

    def on_message(message: Message) -> None:
        try:
            sync.disconnect()
            sync.disconnect()  # idempotent
        except BaseException as exc:
            errors.append(exc)
        returned.set()

    sync = client(mosquitto, on_message=on_message)
    sync.connect()
    sync.subscribe(topic, qos=1)
    sync.publish(topic, b"bye", qos=1)
    assert returned.wait(TIMEOUT)
    assert errors == []
    assert not sync.is_connected
    sync.disconnect()  # and once more from another thread
    with pytest.raises(InvalidState):
        sync.publish(topic, b"late")


def test_disconnect_from_on_message_while_another_thread_disconnects(
    mosquitto: Broker, topic: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The callback's disconnect() must not wait for the thread whose disconnect() waits
    for the callback to return."""
    entered, closing, returned = threading.Event(), threading.Event(), threading.Event()

    def on_message(message: Message) -> None:
        entered.set()
        assert closing.wait(TIMEOUT)
        sync.disconnect()
        returned.set()

    sync = client(mosquitto, on_message=on_message)
    # The asyncio client has __slots__: patch its class (this test's only client).
    client_class = type(sync.asyncio_client)
    disconnect = client_class.disconnect

    async def disconnect_and_tell(self: Any, *args: Any, **kwargs: Any) -> None:
        closing.set()  # sync.disconnect() calls this holding its lock
        await disconnect(self, *args, **kwargs)

    monkeypatch.setattr(client_class, "disconnect", disconnect_and_tell)
    sync.connect()
    sync.subscribe(topic, qos=1)
    sync.publish(topic, b"bye", qos=1)
    assert entered.wait(TIMEOUT)
    closer = threading.Thread(target=sync.disconnect)
    closer.start()
    assert returned.wait(TIMEOUT)
    closer.join(TIMEOUT)
    assert not closer.is_alive()


def test_blocking_call_from_the_loop_thread_raises(mosquitto: Broker, topic: str) -> None:
    with client(mosquitto) as sync:
        for call in (
            lambda: sync.publish(topic, b"x", qos=1),
            lambda: sync.subscribe(topic),
            lambda: sync.unsubscribe(topic),
            lambda: sync.wait_connected(),
            lambda: sync.disconnect(),
        ):
            with pytest.raises(InvalidState, match="event loop thread"):
                run_in_loop(sync, call)
        # messages() does not block: it works from the loop thread too.
        stream = run_in_loop(sync, lambda: sync.messages(topic))
        with pytest.raises(InvalidState, match="event loop thread"):
            run_in_loop(sync, lambda: stream.get(1.0))
        # The client still works from other threads.
        sync.subscribe(topic, qos=1)
        sync.publish(topic, b"still here", qos=1)
        assert stream.get(TIMEOUT).payload == b"still here"


# ------------------------------------------------------------------ connecting


def test_refused(mosquitto_auth: Broker) -> None:
    sync = client(mosquitto_auth, username="alice", password="not " + USERS["alice"])
    with pytest.raises(Refused, match="connection refused") as caught:
        sync.connect()
    assert caught.value.reason_code in (0x86, 0x87)
    sync.disconnect()
    with pytest.raises(Refused), client(mosquitto_auth, username="nobody", password="x"):
        raise AssertionError("connected")  # pragma: no cover
    # the autouse fixture checks that neither left a thread behind


def test_authorized(mosquitto_auth: Broker, topic: str) -> None:
    with client(mosquitto_auth, "mqtts", username="alice", password=USERS["alice"]) as sync:
        stream = sync.messages()
        sync.subscribe(topic, qos=1)
        sync.publish(topic, b"ok", qos=1)
        assert stream.get(TIMEOUT).payload == b"ok"


def test_session_messages_reach_on_message(mosquitto: Broker, topic: str) -> None:
    """Messages the broker kept for a persistent session arrive right after CONNACK: the
    dispatcher must take them, not drop them."""
    session: dict[str, Any] = {
        "client_id": "tether-sync-session",
        "clean_start": False,
        "session_expiry": 300,
    }
    with client(mosquitto, **session) as away:
        away.subscribe(topic, qos=1)
    with client(mosquitto) as pub:
        for i in range(5):
            pub.publish(topic, b"%d" % i, qos=1)
    inbox = Inbox()
    with client(mosquitto, on_message=inbox, **session) as back:
        assert [inbox.get().payload for _ in range(5)] == [b"0", b"1", b"2", b"3", b"4"]
        back.unsubscribe(topic)


def test_request_respond(mosquitto: Broker, topic: str) -> None:
    def on_message(message: Message) -> None:
        responder.respond(message, b"re: " + message.payload)

    with client(mosquitto, on_message=on_message) as responder, client(mosquitto) as requester:
        responder.subscribe(topic, qos=1)
        # The first request subscribes to the response topic (see the test below).
        assert requester.request(topic, b"first", timeout=TIMEOUT).payload == b"re: first"
        answers: dict[int, bytes] = {}

        def ask(n: int) -> None:
            answers[n] = requester.request(topic, b"q%d" % n, timeout=TIMEOUT).payload

        askers = [threading.Thread(target=ask, args=(n,)) for n in range(4)]
        for asker in askers:
            asker.start()
        for asker in askers:
            asker.join(TIMEOUT)
        assert answers == {n: b"re: q%d" % n for n in range(4)}


def test_threads_end_with_disconnect(mosquitto: Broker) -> None:
    before = tether_threads()
    sync = client(mosquitto, on_message=lambda message: None)
    sync.connect()
    started = [t for t in tether_threads() if t not in before]
    assert sorted(t.name for t in started) == ["tether-mqtt", "tether-mqtt-dispatch"]
    sync.disconnect()
    assert not any(t.is_alive() for t in started)


def test_concurrent_first_requests(mosquitto: Broker, topic: str) -> None:
    def on_message(message: Message) -> None:
        responder.respond(message, b"re: " + message.payload)

    with client(mosquitto, on_message=on_message) as responder, client(mosquitto) as requester:
        responder.subscribe(topic, qos=1)
        asyncio_client = requester.asyncio_client

        async def both() -> tuple[Message, Message]:
            # Both start in one loop iteration: neither has seen a SUBACK yet.
            return await asyncio.gather(
                asyncio_client.request(topic, b"a", timeout=1.0),
                asyncio_client.request(topic, b"b", timeout=1.0),
            )

        answers = asyncio.run_coroutine_threadsafe(both(), requester._loop).result(TIMEOUT)
        assert [answer.payload for answer in answers] == [b"re: a", b"re: b"]
