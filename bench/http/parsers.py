"""Request-head parsers compared: tether's hand-written core, httptools (llhttp) and h11.

Each candidate turns the same bytes into a method, a target and a list of header
fields, the way an asyncio server uses it: one request per call, on a parser
that is reused when the library allows it (httptools, tether's core) and made
anew when it does not (h11, which insists on a response before the next cycle).

    .venv/bin/pip install httptools h11
    .venv/bin/python bench/http/parsers.py

Prints the median time per request of several runs, and each candidate's ratio
to tether's core.
"""

from __future__ import annotations

import statistics
import timeit
from collections.abc import Callable

from tether.http.parser import parse_request_head
from tether.http.protocol import ServerConnection

WRK = b"GET /api/cpu HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"
BROWSER = (
    b"GET /static/app.js?v=3 HTTP/1.1\r\n"
    b"Host: device.local:8000\r\n"
    b"Connection: keep-alive\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    b"Chrome/124.0 Safari/537.36\r\n"
    b"Accept: */*\r\n"
    b"Sec-Fetch-Site: same-origin\r\n"
    b"Sec-Fetch-Mode: no-cors\r\n"
    b"Sec-Fetch-Dest: script\r\n"
    b"Referer: http://device.local:8000/\r\n"
    b"Accept-Encoding: gzip, deflate, br\r\n"
    b"Accept-Language: en-US,en;q=0.9\r\n"
    b'If-None-Match: "17f0a9c1e2b-4d2"\r\n'
    b"Cookie: session=0123456789abcdef\r\n\r\n"
)
POST = (
    b"POST /save HTTP/1.1\r\nHost: device.local\r\nContent-Type: application/x-www-form-urlencoded\r\n"
    b"Content-Length: 27\r\n\r\nname=pump-7&interval=10&x=1"
)


def tether_core() -> Callable[[bytes], object]:
    conn = ServerConnection()

    def parse(data: bytes) -> object:
        conn.receive_data(data)
        events = conn.events_received()
        conn.respond(200)  # ends the cycle so the same connection takes the next request
        conn.data_to_send()
        return events

    return parse


def tether_head() -> Callable[[bytes], object]:
    def parse(data: bytes) -> object:
        end = data.find(b"\r\n\r\n")
        return parse_request_head(data[:end])

    return parse


def httptools_parser() -> Callable[[bytes], object] | None:
    try:
        import httptools
    except ImportError:
        return None

    class Sink:
        def __init__(self) -> None:
            self.url = b""
            self.headers: list[tuple[bytes, bytes]] = []
            self.body: list[bytes] = []
            self.done = False

        def on_url(self, url: bytes) -> None:
            self.url += url

        def on_header(self, name: bytes, value: bytes) -> None:
            self.headers.append((name, value))

        def on_body(self, body: bytes) -> None:
            self.body.append(body)

        def on_message_complete(self) -> None:
            self.done = True

    sink = Sink()
    parser = httptools.HttpRequestParser(sink)

    def parse(data: bytes) -> object:
        sink.headers = []
        sink.url = b""
        parser.feed_data(data)
        # What a server does next with the result: decode the fields to str.
        return parser.get_method(), [(n.decode().lower(), v.decode("latin-1")) for n, v in sink.headers]

    return parse


def h11_parser() -> Callable[[bytes], object] | None:
    try:
        import h11
    except ImportError:
        return None

    def parse(data: bytes) -> object:
        conn = h11.Connection(h11.SERVER)
        conn.receive_data(data)
        events = []
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA or isinstance(event, h11.EndOfMessage):
                break
            events.append(event)
        return events

    return parse


def measure(parse: Callable[[bytes], object], data: bytes, number: int = 20000, repeat: int = 7) -> float:
    """Median seconds per call."""
    times = timeit.repeat(lambda: parse(data), number=number, repeat=repeat)
    return statistics.median(times) / number


def main() -> None:
    candidates: list[tuple[str, Callable[[bytes], object] | None]] = [
        ("tether core (ServerConnection)", tether_core()),
        ("tether parse_request_head only", tether_head()),
        ("httptools 0.x (llhttp, C)", httptools_parser()),
        ("h11", h11_parser()),
    ]
    for label, data in (("wrk GET, 1 field", WRK), ("browser GET, 12 fields", BROWSER), ("form POST", POST)):
        print(f"\n{label} ({len(data)} bytes)")
        base = None
        for name, parse in candidates:
            if parse is None:
                print(f"  {name:34s} not installed")
                continue
            if name.startswith("tether parse_request_head") and data is POST:
                continue
            seconds = measure(parse, data)
            base = base or seconds
            print(f"  {name:34s} {seconds * 1e6:7.2f} µs/request   {seconds / base:5.2f}x tether core")


if __name__ == "__main__":
    main()
