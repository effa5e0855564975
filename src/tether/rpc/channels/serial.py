"""RPC over a serial line (spec mgos-rpc.md §2.4): the device side and the client side.

The framing is `tether.rpc.serialframe.SerialFramer`; this module moves its bytes.

Device side, channel type ``UART``, one persistent channel per line:

- `serve_serial(dispatcher, fd_in, fd_out)` over file descriptors: a pseudo-terminal's
  master, a tty, a pipe, stdin/stdout;
- `serve_serial_streams(dispatcher, reader, writer)` over an asyncio stream pair;
- `serve_serial_device(dispatcher, path)` over a serial port opened and configured with
  pyserial (``pip install 'tether[serial]'``);
- `open_pty()` makes a pseudo-terminal pair in raw mode: serve its ``master``, and point
  mos or `open_serial_transport` at its ``path``.

Each frame is answered in a task of its own, so a slow handler does not hold up the
others; at most ``dispatcher.max_pending + 1`` run at once (one more than the dispatcher
admits, so that a flood is answered with 429), and reading waits beyond that. Invalid
frames are logged on ``tether.rpc`` and get no reply; the channel keeps serving. A serve
function returns at end of input, after answering the calls in flight.

Client side: `open_serial_transport(path)` opens a tty or a pseudo-terminal's slave with
``os.open`` (raw mode, baud rate and XON/XOFF obeyed through termios; pyserial is not
needed) and carries frames as mos writes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import importlib
import logging
import os
import termios
import tty
from collections import deque
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from tether.errors import ConnectionClosed
from tether.rpc.dispatch import Dispatcher
from tether.rpc.frames import InvalidFrame
from tether.rpc.serialframe import FrameDropped, FrameReceived, SerialFramer

__all__ = [
    "Pty",
    "SerialTransport",
    "configure_tty",
    "open_pty",
    "open_serial_transport",
    "serve_serial",
    "serve_serial_device",
    "serve_serial_streams",
]

logger = logging.getLogger("tether.rpc")

#: The channel type ACL entries name (§4).
CHANNEL_TYPE = "UART"
_READ_SIZE = 65536
#: Frames a handler pushes (`Call.push`) are dropped while this many bytes wait to be sent.
_PUSH_LIMIT = 1 << 16
#: The largest reply frame a client accepts.
_CLIENT_MAX_FRAME = 1 << 20


# --- byte links -----------------------------------------------------------------------------


class _Link:
    """Bytes both ways; `read` returns b"" at end of input."""

    async def read(self) -> bytes:
        raise NotImplementedError

    def write(self, data: bytes) -> None:
        raise NotImplementedError

    async def drain(self) -> None:
        raise NotImplementedError

    def buffered(self) -> int:
        """Bytes written and not yet sent."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class _FdLink(_Link):
    """Non-blocking reads and writes on file descriptors, with the event loop's reader/writer
    callbacks. End of input is b"" or, on a pseudo-terminal whose other side is closed, EIO."""

    def __init__(self, fd_in: int, fd_out: int, *, owned: tuple[int, ...] = ()) -> None:
        self._loop = asyncio.get_running_loop()
        self._fd_in = fd_in
        self._fd_out = fd_out
        self._owned = owned
        self._flags = {fd: os.get_blocking(fd) for fd in {fd_in, fd_out}}
        for fd in self._flags:
            os.set_blocking(fd, False)
        self._out = bytearray()
        self._writer_added = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._read_waiter: asyncio.Future[None] | None = None
        self._error: OSError | None = None
        self._closed = False

    async def read(self) -> bytes:
        while not self._closed:
            try:
                return os.read(self._fd_in, _READ_SIZE)
            except BlockingIOError:
                pass
            except OSError as exc:
                if exc.errno == errno.EIO:
                    return b""  # Linux: the pseudo-terminal's other side is closed
                raise ConnectionClosed(1006, f"read failed: {exc}") from exc
            waiter = self._loop.create_future()
            self._read_waiter = waiter
            self._loop.add_reader(self._fd_in, _wake, waiter)
            try:
                await waiter
            finally:
                self._read_waiter = None
                if not self._closed:
                    self._loop.remove_reader(self._fd_in)
        return b""

    def write(self, data: bytes) -> None:
        if self._closed or self._error is not None or not data:
            return  # drain() reports it
        self._out += data
        if not self._writer_added:
            self._write_some()

    def buffered(self) -> int:
        return len(self._out)

    def _write_some(self) -> None:
        while self._out:
            try:
                written = os.write(self._fd_out, self._out)
            except BlockingIOError:
                break
            except OSError as exc:
                self._error = exc
                self._out.clear()
                break
            del self._out[:written]
        if self._out and not self._writer_added:
            self._loop.add_writer(self._fd_out, self._write_some)
            self._writer_added = True
        elif not self._out and self._writer_added:
            self._loop.remove_writer(self._fd_out)
            self._writer_added = False
        if not self._out:
            waiters, self._drain_waiters = self._drain_waiters, []
            for waiter in waiters:
                _wake(waiter)

    async def drain(self) -> None:
        if self._out and not self._closed:
            waiter = self._loop.create_future()
            self._drain_waiters.append(waiter)
            await waiter
        if self._error is not None:
            raise ConnectionClosed(1006, f"write failed: {self._error}") from self._error
        if self._closed:
            raise ConnectionClosed(1000, "serial link closed")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._read_waiter is not None:
            self._loop.remove_reader(self._fd_in)
            _wake(self._read_waiter)
        if self._writer_added:
            self._loop.remove_writer(self._fd_out)
            self._writer_added = False
        for waiter in self._drain_waiters:
            _wake(waiter)
        self._drain_waiters = []
        for fd, blocking in self._flags.items():
            if fd not in self._owned:
                with contextlib.suppress(OSError):
                    os.set_blocking(fd, blocking)
        for fd in self._owned:
            with contextlib.suppress(OSError):
                os.close(fd)


class _StreamLink(_Link):
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    async def read(self) -> bytes:
        try:
            return await self._reader.read(_READ_SIZE)
        except OSError as exc:
            raise ConnectionClosed(1006, f"read failed: {exc}") from exc

    def write(self, data: bytes) -> None:
        if data and not self._writer.is_closing():
            self._writer.write(data)

    def buffered(self) -> int:
        return self._writer.transport.get_write_buffer_size()

    async def drain(self) -> None:
        try:
            await self._writer.drain()
        except OSError as exc:
            raise ConnectionClosed(1006, f"write failed: {exc}") from exc

    def close(self) -> None:
        self._writer.close()


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


# --- device side ----------------------------------------------------------------------------


async def _serve(
    dispatcher: Dispatcher, link: _Link, *, peer: str, max_concurrency: int | None, close: bool
) -> None:
    framer = SerialFramer(max_frame_size=dispatcher.max_frame_size)
    slots = asyncio.Semaphore(max_concurrency or dispatcher.max_pending + 1)
    tasks: set[asyncio.Task[None]] = set()

    def push(frame: bytes) -> bool:
        if link.buffered() > _PUSH_LIMIT:
            return False  # a slow reader loses pushed frames, never replies
        framer.send_frame(frame)
        link.write(framer.data_to_send())
        return True

    async def answer(frame: bytes) -> None:
        try:
            try:
                reply = await dispatcher.handle(frame, channel=CHANNEL_TYPE, peer=peer, push=push)
            except InvalidFrame as exc:
                logger.info("serial: dropped an invalid frame: %s", exc)
                return
            if reply is not None:
                try:
                    framer.send_frame(reply)
                except ValueError as exc:  # a RawJSON result that is not JSON
                    logger.error("serial: reply not sent: %s", exc)
                    return
                link.write(framer.data_to_send())
                await link.drain()
        except ConnectionClosed as exc:
            logger.info("serial: reply not sent: %s", exc)
        finally:
            slots.release()

    try:
        while True:
            data = await link.read()
            if not data:
                break
            framer.receive_data(data)
            link.write(framer.data_to_send())  # the answers to empty and 0x04 frames
            for event in framer.events_received():
                if isinstance(event, FrameDropped):
                    logger.info("serial: dropped %s: %r", event.reason, event.data)
                    continue
                assert isinstance(event, FrameReceived)
                await slots.acquire()
                task = asyncio.create_task(answer(event.frame))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            await link.drain()
        # End of input: answer what is in flight, then return.
        if tasks:
            await asyncio.gather(*tasks)
        await link.drain()
    finally:
        for task in tasks:
            task.cancel()
        if close:
            link.close()


async def serve_serial(
    dispatcher: Dispatcher,
    fd_in: int,
    fd_out: int | None = None,
    *,
    peer: str = "UART0",
    max_concurrency: int | None = None,
) -> None:
    """Serve dispatcher over file descriptors until end of input (§2.4).

    The descriptors are made non-blocking while serving (and restored after) and are
    not closed. They must be ones the event loop can watch: a tty, a pseudo-terminal's
    master, a pipe, a socket (not a regular file). A tty must be in non-canonical mode
    with VMIN 1 (as `open_pty` and pyserial without a timeout leave it): with VMIN 0 an
    idle tty reads as end of input.

    Args:
        dispatcher: answers the frames, with channel type ``UART``.
        fd_in: where requests are read; e.g. ``Pty.master`` or ``sys.stdin.fileno()``.
        fd_out: where replies are written; default fd_in (a tty or pseudo-terminal).
        peer: what ``RPC.Ping`` reports as ``channel_info`` (firmware: ``UART0``).
        max_concurrency: frames answered at once; default ``dispatcher.max_pending + 1``.

    Raises:
        ConnectionClosed: if reading fails (other than at end of input).
    """
    link = _FdLink(fd_in, fd_in if fd_out is None else fd_out)
    await _serve(dispatcher, link, peer=peer, max_concurrency=max_concurrency, close=True)


async def serve_serial_streams(
    dispatcher: Dispatcher,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    *,
    peer: str = "UART0",
    max_concurrency: int | None = None,
    close: bool = True,
) -> None:
    """Serve dispatcher over an asyncio stream pair until end of input (§2.4).

    Args:
        close: close writer at the end.

    See `serve_serial` for the other arguments.
    """
    link = _StreamLink(reader, writer)
    await _serve(dispatcher, link, peer=peer, max_concurrency=max_concurrency, close=close)


def _pyserial() -> Any:
    try:
        module = importlib.import_module("serial")
    except ImportError:
        module = None
    if module is None or not hasattr(module, "Serial"):
        raise ImportError(
            "serving a serial port needs pyserial: pip install 'tether[serial]' (or pyserial); "
            "a pseudo-terminal or stdin/stdout needs nothing (open_pty, serve_serial)"
        )
    return module


async def serve_serial_device(
    dispatcher: Dispatcher,
    path: str,
    *,
    baudrate: int = 115200,
    flow_control: str = "xonxoff",
    peer: str = "UART0",
    max_concurrency: int | None = None,
) -> None:
    """Open a serial port with pyserial (8N1) and serve dispatcher on it (§2.4).

    Runs until the port reports end of input or the task is cancelled; closes the port.

    Args:
        path: the port, e.g. ``/dev/ttyUSB0`` or ``/dev/ttyS0``.
        baudrate: ``rpc.uart.baud_rate`` (115200).
        flow_control: ``"xonxoff"`` (``rpc.uart.fc_type`` 2, the default), ``"rtscts"`` (1)
            or ``"none"`` (0).

    Raises:
        ImportError: if pyserial is not installed.
        ValueError: for an unknown flow_control.
        OSError: if the port cannot be opened.
    """
    if flow_control not in ("xonxoff", "rtscts", "none"):
        raise ValueError(f"flow_control {flow_control!r} is not 'xonxoff', 'rtscts' or 'none'")
    serial = _pyserial()
    port = serial.Serial(
        path,
        baudrate=baudrate,
        bytesize=serial.EIGHTBITS,
        parity=serial.PARITY_NONE,
        stopbits=serial.STOPBITS_ONE,
        xonxoff=flow_control == "xonxoff",
        rtscts=flow_control == "rtscts",
    )
    try:
        # pyserial leaves VMIN 0 (it polls with select); then an idle tty reads b"", which
        # would look like the end of input. VMIN 1: a read waits for a byte.
        attributes = termios.tcgetattr(port.fileno())
        attributes[6][termios.VMIN] = 1
        attributes[6][termios.VTIME] = 0
        termios.tcsetattr(port.fileno(), termios.TCSANOW, attributes)
        await serve_serial(dispatcher, port.fileno(), peer=peer, max_concurrency=max_concurrency)
    finally:
        port.close()


@dataclass
class Pty:
    """A pseudo-terminal pair in raw mode, for serving RPC where mos expects a serial port.

    Serve ``master`` (`serve_serial`); clients open ``path``, the slave's name (e.g.
    ``mos --port /dev/pts/5 call RPC.List``). The pair keeps its own slave descriptor
    open, so that clients may come and go without the master seeing a hang-up.

    Attributes:
        master: the master's file descriptor.
        slave: the slave's file descriptor, held open.
        path: the slave's device path.
    """

    master: int
    slave: int
    path: str

    def close(self) -> None:
        """Close both descriptors."""
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> Pty:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def open_pty() -> Pty:
    """Make a pseudo-terminal pair in raw mode (no echo, no line editing, 8 bits).

    Raises:
        OSError: if the system has no pseudo-terminals left.
    """
    master, slave = os.openpty()
    try:
        tty.setraw(slave, termios.TCSANOW)
        path = os.ttyname(slave)
    except BaseException:
        os.close(master)
        os.close(slave)
        raise
    return Pty(master, slave, path)


# --- client side ----------------------------------------------------------------------------


def configure_tty(fd: int, baudrate: int) -> None:
    """Raw 8N1 at baudrate, receiver on, modem lines ignored, XON/XOFF from the device
    obeyed (``rpc.uart.fc_type`` 2 is the firmware's default); buffered bytes flushed."""
    speed = getattr(termios, f"B{baudrate}", None)
    if not isinstance(speed, int):
        raise ValueError(f"baud rate {baudrate} is not one termios knows")
    iflag, oflag, cflag, lflag, _, _, cc = termios.tcgetattr(fd)
    iflag &= ~(
        termios.IGNBRK
        | termios.BRKINT
        | termios.PARMRK
        | termios.ISTRIP
        | termios.INLCR
        | termios.IGNCR
        | termios.ICRNL
        | termios.IXOFF
        | termios.IXANY
    )
    iflag |= termios.IXON
    oflag &= ~termios.OPOST
    lflag &= ~(termios.ECHO | termios.ECHONL | termios.ICANON | termios.ISIG | termios.IEXTEN)
    cflag &= ~(termios.CSIZE | termios.PARENB | termios.CSTOPB | getattr(termios, "CRTSCTS", 0))
    cflag |= termios.CS8 | termios.CREAD | termios.CLOCAL
    cc = list(cc)
    cc[termios.VMIN] = 1
    cc[termios.VTIME] = 0
    termios.tcsetattr(fd, termios.TCSANOW, [iflag, oflag, cflag, lflag, speed, speed, cc])
    # mos flushes what was waiting before it talks: it would be stale.
    termios.tcflush(fd, termios.TCIOFLUSH)


class SerialTransport:
    """A client-side `tether.rpc.transports.Transport` over a serial line (§2.4).

    Frames go out as mos writes them, ``\\n\"\"\"<frame><crc>\"\"\"\\n``; what comes back is
    read with `SerialFramer`, and lines that are not frames (a device's log output) are
    skipped. Made by `open_serial_transport`.
    """

    def __init__(self, link: _Link, name: str) -> None:
        self.name = name
        self._link = link
        self._framer = SerialFramer(client=True, max_frame_size=_CLIENT_MAX_FRAME)
        self._frames: deque[bytes] = deque()
        self._closed: ConnectionClosed | None = None

    def __repr__(self) -> str:
        return f"SerialTransport({self.name!r}{', closed' if self._closed else ''})"

    async def send(self, frame: bytes) -> None:
        """Write one frame.

        Raises:
            ConnectionClosed: if the line is closed or writing fails.
            ValueError: if frame holds ``\"\"\"``.
        """
        if self._closed is not None:
            raise self._closed
        self._framer.send_frame(frame)
        self._link.write(self._framer.data_to_send())
        await self._link.drain()

    async def recv(self) -> bytes:
        """The next frame from the line.

        Raises:
            ConnectionClosed: once the line is closed (by `close`, or the other side).
        """
        while not self._frames:
            if self._closed is not None:
                raise self._closed
            data = await self._link.read()
            if not data:
                if self._closed is None:
                    self._closed = ConnectionClosed(1006, "serial line closed by the other side")
                    self._link.close()
                continue
            self._framer.receive_data(data)
            for event in self._framer.events_received():
                if isinstance(event, FrameReceived):
                    self._frames.append(event.frame)
                else:
                    logger.debug("serial: skipped %s: %r", event.reason, event.data)
        return self._frames.popleft()

    async def close(self) -> None:
        """Close the line; a pending `recv` raises `ConnectionClosed`."""
        if self._closed is None:
            self._closed = ConnectionClosed(1000, "serial line closed")
        self._link.close()


async def open_serial_transport(
    path: str, *, baudrate: int = 115200, timeout: float = 10.0
) -> SerialTransport:
    """Open a serial device or a pseudo-terminal's slave as a client transport.

    A tty is put in raw mode, 8N1 at baudrate, obeying the device's XON/XOFF; a path that
    is not a tty (a FIFO, say) is used as it is.

    Args:
        path: ``/dev/ttyUSB0``, ``/dev/pts/5``, or ``serial://`` followed by the path.
        baudrate: the line speed (mos: 115200).
        timeout: unused: opening does not wait for the device (mos's handshake is not sent;
            the device answers the first frame).

    Raises:
        ValueError: for an empty path or a baud rate termios does not know.
        OSError: if the path cannot be opened.
    """
    del timeout
    if path.startswith("serial://"):
        path = path[len("serial://") :]
    if not path:
        raise ValueError("no serial device path given")
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    try:
        if os.isatty(fd):
            configure_tty(fd, baudrate)
        link = _FdLink(fd, fd, owned=(fd,))
    except BaseException:
        os.close(fd)
        raise
    return SerialTransport(link, path)
