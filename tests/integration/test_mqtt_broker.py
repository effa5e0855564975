"""tether's MQTT client against a real mosquitto (issue 3, acceptance 1).

The brokers come from tests/integration/conftest.py: ``mosquitto`` (TCP, TLS, WebSocket and
secure WebSocket listeners on free loopback ports, anonymous clients allowed) and
``mosquitto_auth`` (the same with a password file and an ACL). Covered, over MQTT 3.1.1
and 5.0:

- the broker fixture itself, with mosquitto_pub and mosquitto_sub;
- QoS 0, 1 and 2 over every transport, and the QoS downgrade to the subscription's;
- retained messages: kept, flagged, replaced and cleared;
- will messages: sent when the client's process is killed (the broker sees the TCP
  connection drop without DISCONNECT), not sent after a graceful disconnect;
- shared subscriptions: two subscribers of ``$share/g/topic`` share the messages;
- session resume: messages published while a client with a persistent session is away
  arrive when it comes back with ``clean_start=False``; a clean start drops them;
- password authentication over every transport, refusals with a clear `Refused`;
- the ACL: publishes refused (5.0: reason code 0x87 in PUBACK/PUBREC), reads filtered.

To see that something does *not* arrive without waiting for a timeout, each such test
publishes a marker after it on the same connection: the broker keeps the order, so the
marker arriving first proves the other message never will.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import selectors
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest
from tests.integration.mosquitto import SCHEMES, TIMEOUT, Broker, BrokerError, receive, run, tether_client

from tether.errors import Refused
from tether.mqtt import Client

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

VERSIONS = [pytest.param(4, id="v311"), pytest.param(5, id="v5")]
TRANSPORTS = [pytest.param(scheme, id=scheme) for scheme in SCHEMES]
NOT_AUTHORIZED = {4: 5, 5: 0x87}  # 3.1.1 CONNACK return code 5; 5.0 reason code 0x87


async def next_message(messages: Any) -> Any:
    return (await receive(messages, 1))[0]


# ------------------------------------------------------- the broker fixture itself


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("scheme", ["mqtt", "mqtts"])
def test_mosquitto_clients_through_fixture(mosquitto: Broker, topic: str, scheme: str, version: int) -> None:
    """mosquitto_pub and mosquitto_sub talk through the fixture's TCP and TLS listeners."""
    with mosquitto.mosquitto_sub(topic, qos=1, version=version, scheme=scheme) as sub:
        mosquitto.mosquitto_pub(topic, b"\x00hello\xff", qos=1, version=version, scheme=scheme)
        message = sub.get(TIMEOUT)
    assert (message.topic, message.payload, message.qos, message.retain) == (
        topic,
        b"\x00hello\xff",
        1,
        False,
    )


def listening_addresses(port: int) -> set[str]:
    """The local addresses of the sockets listening on TCP port, from /proc/net/tcp{,6}."""
    found = set()
    for name in ("tcp", "tcp6"):
        with contextlib.suppress(OSError), open(f"/proc/net/{name}") as table:
            for line in list(table)[1:]:
                local, state = line.split()[1], line.split()[3]
                address, hex_port = local.rsplit(":", 1)
                if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                    found.add(address)
    return found


@pytest.mark.skipif(not os.path.exists("/proc/net/tcp"), reason="needs Linux /proc/net/tcp")
def test_fixture_listens_on_loopback_only(mosquitto: Broker) -> None:
    """Every listener, the WebSocket ones included (socket_domain ipv4), is on 127.0.0.1 only."""
    for scheme in SCHEMES:
        assert listening_addresses(mosquitto.port(scheme)) == {"0100007F"}, scheme  # 127.0.0.1


def test_fixture_restart_and_kill(make_broker: Any, topic: str) -> None:
    """restart() keeps the ports and (through persistence) retained messages; kill() is SIGKILL."""
    broker = make_broker(schemes=("mqtt",))
    port = broker.port("mqtt")
    broker.mosquitto_pub(topic, b"kept", qos=1, retain=True)
    broker.restart()
    assert broker.port("mqtt") == port
    with broker.mosquitto_sub(topic) as sub:
        message = sub.get(TIMEOUT)
    assert (message.payload, message.retain) == (b"kept", True)
    process = broker.process
    broker.kill()
    assert process is not None and process.returncode == -signal.SIGKILL
    broker.start()
    assert broker.running() and broker.port("mqtt") == port


def test_fixture_auth_refuses_anonymous(mosquitto_auth: Broker, topic: str) -> None:
    with pytest.raises(BrokerError, match=r"(?i)not authorized"):
        mosquitto_auth.mosquitto_pub(topic, b"x")
    user, password = next(iter(mosquitto_auth.users.items()))
    mosquitto_auth.mosquitto_pub(topic, b"x", extra=["-u", user, "-P", password])


# ------------------------------------------------------------------- QoS flows


@pytest.mark.parametrize("qos", [0, 1, 2])
@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("scheme", TRANSPORTS)
def test_publish_subscribe(mosquitto: Broker, topic: str, scheme: str, version: int, qos: int) -> None:
    """A client subscribes and publishes to itself at each QoS over each transport."""

    async def main() -> None:
        async with tether_client(mosquitto, scheme, version, f"qos-{scheme}-{version}-{qos}") as client:
            messages = client.messages(topic)
            assert list(await client.subscribe(topic, qos=2)) == [2]
            payloads = [f"{qos}:{i}".encode() for i in range(5)]
            for payload in payloads:
                assert await client.publish(topic, payload, qos=qos) == 0
            received = await receive(messages, len(payloads))
        assert [m.payload for m in received] == payloads
        assert {(m.topic, m.qos, m.retain) for m in received} == {(topic, qos, False)}

    run(main())


@pytest.mark.parametrize("version", VERSIONS)
def test_qos_downgraded_to_subscription(mosquitto: Broker, topic: str, version: int) -> None:
    """A QoS 2 publish reaches a QoS 0 and a QoS 1 subscription at their QoS (MQTT §3.8.4)."""

    async def main() -> None:
        async with (
            tether_client(mosquitto, "mqtt", version, f"down-pub-{version}") as publisher,
            tether_client(mosquitto, "mqtt", version, f"down-sub-{version}") as subscriber,
        ):
            messages = subscriber.messages()
            assert list(await subscriber.subscribe([(topic + "/0", 0), (topic + "/1", 1)])) == [0, 1]
            await publisher.publish(topic + "/0", b"a", qos=2)
            await publisher.publish(topic + "/1", b"b", qos=2)
            received = await receive(messages, 2)
        assert [(m.topic, m.payload, m.qos) for m in received] == [
            (topic + "/0", b"a", 0),
            (topic + "/1", b"b", 1),
        ]

    run(main())


# ----------------------------------------------------------- retained messages


@pytest.mark.parametrize("version", VERSIONS)
def test_retained_messages(mosquitto: Broker, topic: str, version: int) -> None:
    """The broker keeps the last retained message, flags it for later subscribers, and
    forgets it after an empty retained publish."""

    async def main() -> None:
        async with tether_client(mosquitto, "mqtt", version, f"retain-pub-{version}") as publisher:
            await publisher.publish(topic, b"first", qos=1, retain=True)
            await publisher.publish(topic, b"second", qos=1, retain=True)

            async with tether_client(mosquitto, "ws", version, f"retain-sub-{version}") as late:
                messages = late.messages(topic)
                await late.subscribe(topic, qos=1)
                stored = await next_message(messages)
                assert (stored.payload, stored.retain, stored.qos) == (b"second", True, 1)
                # Live messages are not flagged, though published with retain (MQTT §3.3.1.3).
                await publisher.publish(topic, b"live", qos=1, retain=True)
                live = await next_message(messages)
                assert (live.payload, live.retain) == (b"live", False)

            await publisher.publish(topic, b"", qos=1, retain=True)  # clears it
            async with tether_client(mosquitto, "mqtt", version, f"retain-late-{version}") as later:
                messages = later.messages(topic)
                await later.subscribe(topic, qos=1)
                await publisher.publish(topic, b"marker", qos=1)
                first = await next_message(messages)
                assert (first.payload, first.retain) == (b"marker", False)

    run(main())


# --------------------------------------------------------------- will messages

WILL_CLIENT = textwrap.dedent(
    """
    import asyncio, ssl, sys
    from tether.mqtt import Client, Properties, Will

    url, version, topic, cafile = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    properties = Properties(content_type="text/plain") if version == 5 else Properties()
    will = Will(topic, b"\\x00gone\\xff", qos=1, retain=False, properties=properties)

    async def main():
        secure = url.startswith(("mqtts:", "wss:"))
        context = ssl.create_default_context(cafile=cafile) if secure else None
        async with Client(url, client_id="will-" + topic.replace("/", "-") + str(version),
                          version=version, will=will, ssl=context, reconnect=False):
            print("connected", flush=True)
            if sys.argv[5] == "hang":
                await asyncio.Event().wait()  # until killed

    asyncio.run(main())
    """
)


@contextlib.contextmanager
def will_client(broker: Broker, scheme: str, version: int, topic: str, mode: str) -> Iterator[Any]:
    """A tether client with a will, in a process of its own, stopped by PID at the end."""
    cafile = str(broker.ca_file)
    proc = subprocess.Popen(
        [sys.executable, "-c", WILL_CLIENT, broker.url(scheme), str(version), topic, cafile, mode],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(proc.stdout, selectors.EVENT_READ)
            if not selector.select(TIMEOUT):
                raise TimeoutError("the will client did not connect")
        line = proc.stdout.readline()
        assert line == b"connected\n", proc.communicate(timeout=TIMEOUT)[1].decode()
        yield proc
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=TIMEOUT)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("scheme", TRANSPORTS)
def test_will_sent_when_client_dies(mosquitto: Broker, topic: str, scheme: str, version: int) -> None:
    """SIGKILL on the client's process drops its transport without DISCONNECT: the broker
    publishes the will, payload and (5.0) properties as given."""

    async def main() -> None:
        async with tether_client(mosquitto, "mqtt", version, f"will-watch-{scheme}-{version}") as watcher:
            messages = watcher.messages(topic)
            await watcher.subscribe(topic, qos=1)
            with will_client(mosquitto, scheme, version, topic, "hang") as proc:
                os.kill(proc.pid, signal.SIGKILL)
            will = await next_message(messages)
        assert (will.topic, will.payload, will.qos, will.retain) == (topic, b"\x00gone\xff", 1, False)
        if version == 5:
            assert will.properties.content_type == "text/plain"

    run(main())


@pytest.mark.parametrize("version", VERSIONS)
def test_will_not_sent_after_disconnect(mosquitto: Broker, topic: str, version: int) -> None:
    """A client that leaves with DISCONNECT (normal disconnection) has its will discarded."""

    async def main() -> None:
        async with tether_client(mosquitto, "mqtt", version, f"will-quiet-{version}") as watcher:
            messages = watcher.messages(topic)
            await watcher.subscribe(topic, qos=1)
            with will_client(mosquitto, "mqtt", version, topic, "exit") as proc:
                assert await asyncio.to_thread(proc.wait, TIMEOUT) == 0
            await watcher.publish(topic, b"marker", qos=1)
            assert (await next_message(messages)).payload == b"marker"

    run(main())


# --------------------------------------------------------- shared subscriptions


@pytest.mark.parametrize("version", VERSIONS)
def test_shared_subscription(mosquitto: Broker, topic: str, version: int) -> None:
    """Two members of ``$share/g/<topic>`` share the messages: each message reaches exactly
    one of them, and both get some."""
    count = 20
    shared = f"$share/g/{topic}"

    async def main() -> dict[str, list[bytes]]:
        got: dict[str, list[bytes]] = {"a": [], "b": []}
        all_in = asyncio.Event()

        async def collect(name: str, messages: Any) -> None:
            async for message in messages:
                got[name].append(message.payload)
                if sum(map(len, got.values())) >= count:
                    all_in.set()

        async with (
            tether_client(mosquitto, "mqtt", version, f"share-a-{version}") as a,
            tether_client(mosquitto, "ws", version, f"share-b-{version}") as b,
            tether_client(mosquitto, "mqtt", version, f"share-pub-{version}") as publisher,
        ):
            streams = {"a": a.messages(shared), "b": b.messages(topic)}
            await a.subscribe(shared, qos=1)
            await b.subscribe(shared, qos=1)
            tasks = [asyncio.create_task(collect(name, stream)) for name, stream in streams.items()]
            try:
                for i in range(count):
                    await publisher.publish(topic, b"%d" % i, qos=1)
                await all_in.wait()
                # One more round through the broker: any duplicate would have arrived by now.
                await a.unsubscribe(shared)
                await b.unsubscribe(shared)
            finally:
                for task in tasks:
                    task.cancel()
        return got

    got = run(main())
    assert sorted(got["a"] + got["b"], key=int) == [b"%d" % i for i in range(count)]
    assert got["a"] and got["b"], got


# ------------------------------------------------------------------ sessions


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("scheme", ["mqtt", "wss"])
def test_session_resume(mosquitto: Broker, topic: str, scheme: str, version: int) -> None:
    """QoS 1 and 2 messages published while a persistent session's client is away arrive,
    in order, when it comes back with clean_start=False; the broker says the session was
    present. 3.1.1 keeps the session because Clean Session is 0."""
    client_id = f"resume-{scheme}-{version}"
    persistent = {"session_expiry": 300} if version == 5 else {"clean_start": False}

    async def main() -> None:
        async with tether_client(mosquitto, scheme, version, client_id, **persistent) as first:
            await first.subscribe(topic, qos=2)
        async with tether_client(mosquitto, "mqtt", version, "resume-publisher") as publisher:
            for i in range(6):
                await publisher.publish(topic, b"away %d" % i, qos=1 + i % 2)
        back = tether_client(mosquitto, scheme, version, client_id, clean_start=False, session_expiry=300)
        messages = back.messages(topic)  # before connecting: the queued messages come at once
        connected = await back.connect()
        try:
            assert connected.session_present
            received = await receive(messages, 6)
        finally:
            await back.disconnect()
        assert [(m.payload, m.qos) for m in received] == [(b"away %d" % i, 1 + i % 2) for i in range(6)]

    run(main())


@pytest.mark.parametrize("version", VERSIONS)
def test_clean_start_discards_session(mosquitto: Broker, topic: str, version: int) -> None:
    """Coming back with clean_start=True starts afresh: no subscription, no queued messages."""
    client_id = f"discard-{version}"
    persistent = {"session_expiry": 300} if version == 5 else {"clean_start": False}

    async def main() -> None:
        async with tether_client(mosquitto, "mqtt", version, client_id, **persistent) as first:
            await first.subscribe(topic, qos=1)
        async with tether_client(mosquitto, "mqtt", version, "discard-publisher") as publisher:
            await publisher.publish(topic, b"lost", qos=1)
        async with tether_client(mosquitto, "mqtt", version, client_id, clean_start=True) as fresh:
            messages = fresh.messages(topic)
            await fresh.subscribe(topic + "/marker", qos=1)
            everything = fresh.messages()
            await fresh.publish(topic + "/marker", b"marker", qos=1)
            assert (await next_message(everything)).payload == b"marker"
            assert len(messages) == 0

    run(main())


# --------------------------------------------------------- authentication, ACL


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("scheme", TRANSPORTS)
def test_password_accepted(mosquitto_auth: Broker, topic: str, scheme: str, version: int) -> None:
    """alice logs in over every transport and uses the topics the ACL gives her."""

    async def main() -> None:
        async with tether_client(
            mosquitto_auth,
            scheme,
            version,
            f"alice-{scheme}-{version}",
            username="alice",
            password=mosquitto_auth.users["alice"],
        ) as client:
            messages = client.messages(topic)
            await client.subscribe(topic, qos=1)
            await client.publish(topic, b"hello", qos=1)
            assert (await next_message(messages)).payload == b"hello"

    run(main())


@pytest.mark.parametrize("version", VERSIONS)
def test_password_in_url(mosquitto_auth: Broker, topic: str, version: int) -> None:
    """``mqtt://user:password@host`` logs in; the space is percent-encoded."""
    url = mosquitto_auth.url("mqtt").replace("mqtt://", "mqtt://alice:wonder%20land@")

    async def main() -> None:
        async with Client(url, client_id=f"alice-url-{version}", version=version, reconnect=False) as client:
            await client.publish(topic, b"x", qos=1)

    run(main())


@pytest.mark.parametrize(
    "credentials",
    [
        pytest.param({"username": "alice", "password": "wrong"}, id="wrong-password"),
        pytest.param({"username": "mallory", "password": "x"}, id="unknown-user"),
        pytest.param({}, id="anonymous"),
    ],
)
@pytest.mark.parametrize("version", VERSIONS)
def test_password_refused(mosquitto_auth: Broker, version: int, credentials: dict[str, str]) -> None:
    """A refused login raises Refused at once (no retries), with the broker's code and a
    message that says why; mosquitto answers "not authorized" (3.1.1: 5; 5.0: 0x87)."""

    async def main() -> None:
        client = tether_client(
            mosquitto_auth, "mqtt", version, f"refused-{version}", reconnect=True, **credentials
        )
        with pytest.raises(Refused) as caught:
            await client.connect()
        assert caught.value.reason_code == NOT_AUTHORIZED[version]
        assert "not authorized" in str(caught.value)
        assert not client.is_connected

    run(main())


@pytest.mark.parametrize("qos", [1, 2])
def test_acl_refuses_publish_v5(mosquitto_auth: Broker, topic: str, qos: int) -> None:
    """5.0: a publish the ACL forbids fails with Refused 0x87 (PUBACK/PUBREC reason code);
    the connection stays usable."""

    async def main() -> None:
        async with tether_client(
            mosquitto_auth,
            "mqtt",
            5,
            f"acl-pub-{qos}",
            username="alice",
            password=mosquitto_auth.users["alice"],
        ) as client:
            with pytest.raises(Refused) as caught:
                await client.publish("public/news", b"x", qos=qos)
            assert caught.value.reason_code == 0x87
            assert await client.publish(topic, b"allowed", qos=qos) in (0, 0x10)

    run(main())


@pytest.mark.parametrize("version", VERSIONS)
def test_acl_drops_forbidden_publish(mosquitto_auth: Broker, topic: str, version: int) -> None:
    """A forbidden publish never reaches a subscriber (3.1.1 cannot even say so: PUBACK
    looks like success)."""

    async def main() -> None:
        async with tether_client(
            mosquitto_auth,
            "mqtt",
            version,
            f"acl-drop-{version}",
            username="alice",
            password=mosquitto_auth.users["alice"],
        ) as client:
            messages = client.messages()
            await client.subscribe([("public/#", 1), (topic, 1)])
            if version == 5:
                with pytest.raises(Refused):
                    await client.publish("public/news", b"forbidden", qos=1)
            else:
                assert await client.publish("public/news", b"forbidden", qos=1) == 0
            await client.publish(topic, b"marker", qos=1)
            assert (await next_message(messages)).payload == b"marker"

    run(main())


@pytest.mark.parametrize("version", VERSIONS)
def test_acl_filters_reads(mosquitto_auth: Broker, topic: str, version: int) -> None:
    """bob may not read ``inbox/alice``. mosquitto 2.0's acl_file grants the SUBSCRIBE and
    checks read access per message: bob gets the message on his topic, not alice's."""

    async def main() -> None:
        async with (
            tether_client(
                mosquitto_auth,
                "mqtt",
                version,
                f"bob-{version}",
                username="bob",
                password=mosquitto_auth.users["bob"],
            ) as bob,
            tether_client(
                mosquitto_auth,
                "mqtt",
                version,
                f"alice-w-{version}",
                username="alice",
                password=mosquitto_auth.users["alice"],
            ) as alice,
        ):
            messages = bob.messages()
            await bob.subscribe([("inbox/alice", 1), (topic, 1)])
            await alice.publish("inbox/alice", b"private", qos=1)
            await alice.publish(topic, b"marker", qos=1)
            assert (await next_message(messages)).payload == b"marker"

    run(main())
