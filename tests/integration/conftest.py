"""Fixtures for the integration tests: real mosquitto brokers on free loopback ports.

- ``mosquitto``: one broker for the session with TCP, TLS, WebSocket and secure WebSocket
  listeners; anonymous clients allowed. Tests keep apart by their own topics and client ids.
- ``mosquitto_auth``: the same listeners, a password file (`USERS`) and an ACL (`ACL`);
  anonymous clients refused.
- ``make_broker``: a factory for brokers a test may stop, kill and restart; each is stopped
  by PID at the end of the test.

When a test that used a broker fails, the tail of that broker's log is added to the report.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.integration.mosquitto import Broker, TlsFiles, mosquitto_available

#: The users of ``mosquitto_auth``: name to password.
USERS = {"alice": "wonder land", "bob": "b0b-secret"}
#: The ACL of ``mosquitto_auth``: alice may do anything under ``tether/``, read ``public/``
#: and write ``inbox/alice``; bob may only read ``tether/#`` and write nothing.
ACL = """\
user alice
topic readwrite tether/#
topic read public/#
topic write inbox/alice

user bob
topic read tether/#
"""

SKIP_REASON = "mosquitto is not installed (Debian: apt-get install mosquitto mosquitto-clients)"


def _require_mosquitto() -> None:
    for tool in ("mosquitto", "mosquitto_passwd", "mosquitto_pub", "mosquitto_sub"):
        if mosquitto_available(tool) is None:
            pytest.skip(f"{tool} not found: {SKIP_REASON}")


def _tls(pki: dict[str, Path]) -> TlsFiles:
    return TlsFiles(ca=pki["ca"], cert=pki["cert"], key=pki["key"])


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory, pki: dict[str, Path]) -> Iterator[Broker]:
    """A mosquitto with mqtt, mqtts, ws and wss listeners; anonymous clients allowed."""
    _require_mosquitto()
    broker = Broker(tmp_path_factory.mktemp("mosquitto"), tls=_tls(pki))
    try:
        broker.start()
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def mosquitto_auth(tmp_path_factory: pytest.TempPathFactory, pki: dict[str, Path]) -> Iterator[Broker]:
    """A mosquitto with every listener, password authentication (`USERS`) and `ACL`."""
    _require_mosquitto()
    broker = Broker(tmp_path_factory.mktemp("mosquitto-auth"), tls=_tls(pki), users=USERS, acl=ACL)
    try:
        broker.start()
        yield broker
    finally:
        broker.stop()


class BrokerFactory:
    """Starts brokers of a test's own (``factory(**Broker kwargs)``); `close()` stops them all."""

    def __init__(self, directory: Path, tls: TlsFiles) -> None:
        self.directory = directory
        self.tls = tls
        self.brokers: list[Broker] = []

    def __call__(self, **kwargs: Any) -> Broker:
        kwargs.setdefault("tls", self.tls)
        broker = Broker(self.directory / f"mosquitto-{len(self.brokers)}", **kwargs)
        self.brokers.append(broker)
        broker.start()
        return broker

    def close(self) -> None:
        for broker in self.brokers:
            broker.stop()


@pytest.fixture
def make_broker(tmp_path: Path, pki: dict[str, Path]) -> Iterator[BrokerFactory]:
    """make_broker(**Broker kwargs) starts a broker of the test's own; stopped at teardown."""
    _require_mosquitto()
    factory = BrokerFactory(tmp_path, _tls(pki))
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture
def topic(request: pytest.FixtureRequest) -> str:
    """A topic of this test's own under ``tether/`` (which alice may use), the same every run."""
    digest = hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:12]
    return f"tether/test/{digest}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.failed:
        funcargs = getattr(item, "funcargs", {})
        for name, value in funcargs.items():
            brokers = value.brokers if isinstance(value, BrokerFactory) else [value]
            for broker in brokers:
                if isinstance(broker, Broker):
                    report.sections.append((f"mosquitto log ({name})", broker.log_tail(40)))
    return report
