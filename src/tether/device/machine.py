"""Facts about the machine a device runs on: ids, memory, storage, network, WiFi.

Everything is read from Linux's ``/proc``, ``/sys`` and ``/etc`` without extra
dependencies; on other systems the functions return neutral values ("" or 0)
rather than fail, so a device still starts.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import shutil
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DefaultRoute",
    "Memory",
    "Wifi",
    "arch",
    "default_route",
    "machine_digits",
    "memory",
    "primary_mac",
    "storage",
]

logger = logging.getLogger("tether.device")

_MACHINE_ID_FILES = (Path("/etc/machine-id"), Path("/var/lib/dbus/machine-id"))


def machine_digits() -> str:
    """12 upper-case hex digits that stay the same for this machine: ``device.id``'s ``??????``.

    Derived from ``/etc/machine-id`` (stable across reboots and network changes,
    unlike a MAC in a container); the primary interface's MAC when there is none.
    """
    for path in _MACHINE_ID_FILES:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text:
            return hashlib.sha256(b"tether-device-id:" + text.encode()).hexdigest()[:12].upper()
    return primary_mac() or "000000000000"


def primary_mac() -> str:
    """The MAC of the first physical-looking interface, 12 upper-case hex digits, "" if none."""
    root = Path("/sys/class/net")
    try:
        names = sorted(os.listdir(root))
    except OSError:
        return ""
    route = default_route()
    if route is not None and route.interface in names:
        names.remove(route.interface)
        names.insert(0, route.interface)
    for name in names:
        if name == "lo":
            continue
        try:
            mac = (root / name / "address").read_text().strip().replace(":", "").upper()
        except OSError:
            continue
        if len(mac) == 12 and mac != "000000000000":
            return mac
    return ""


def arch() -> str:
    """``Sys.GetInfo.arch``: e.g. ``linux-x86_64``, ``linux-aarch64``."""
    uname = os.uname()
    return f"{uname.sysname.lower()}-{uname.machine.lower() or 'unknown'}"


@dataclass(frozen=True)
class Memory:
    """RAM in bytes: total and available now."""

    total: int
    free: int


def memory() -> Memory:
    """The machine's RAM from ``/proc/meminfo`` (``MemTotal``, ``MemAvailable``)."""
    values: dict[str, int] = {}
    try:
        with open("/proc/meminfo", encoding="ascii") as file:
            for line in file:
                key, _, rest = line.partition(":")
                if key in ("MemTotal", "MemAvailable"):
                    values[key] = int(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        return Memory(0, 0)
    return Memory(values.get("MemTotal", 0), values.get("MemAvailable", 0))


def storage(path: Path) -> tuple[int, int]:
    """(size, free) in bytes of the file system holding path."""
    try:
        stat = os.statvfs(path)
    except OSError:
        return 0, 0
    return stat.f_blocks * stat.f_frsize, stat.f_bavail * stat.f_frsize


@dataclass(frozen=True)
class DefaultRoute:
    """The interface of the IPv4 default route and its address."""

    interface: str
    ip: str

    @property
    def wireless(self) -> bool:
        """Whether the interface is a WiFi one."""
        return Path("/sys/class/net", self.interface, "wireless").exists()


def default_route() -> DefaultRoute | None:
    """The IPv4 default route from ``/proc/net/route``, None when the machine has none."""
    try:
        with open("/proc/net/route", encoding="ascii") as file:
            next(file, None)
            for line in file:
                fields = line.split()
                if len(fields) >= 4 and fields[1] == "00000000" and int(fields[3], 16) & 1:
                    return DefaultRoute(fields[0], _interface_ip(fields[0]))
    except (OSError, ValueError):
        return None
    return None


def _interface_ip(interface: str) -> str:
    """The IPv4 address of an interface (SIOCGIFADDR), "" if it has none."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            import fcntl

            packed = fcntl.ioctl(sock.fileno(), 0x8915, struct.pack("256s", interface[:15].encode()))
            return socket.inet_ntoa(packed[20:24])
    except (OSError, ImportError):
        return ""


class Wifi:
    """WiFi station control through NetworkManager's ``nmcli``, when the machine has it."""

    def __init__(self) -> None:
        self.nmcli = shutil.which("nmcli")
        self.status = "disconnected"
        self.ssid = ""

    @property
    def available(self) -> bool:
        """Whether WiFi can be managed here."""
        return self.nmcli is not None

    def info(self, sta_ip: str) -> dict[str, object]:
        """``Sys.GetInfo.wifi``."""
        info: dict[str, object] = {"sta_ip": sta_ip, "ap_ip": "", "status": self.status, "ssid": self.ssid}
        if not self.available:
            info["status"] = "disconnected"
            info["note"] = "WiFi management is not available here (no nmcli)"
        return info

    async def connect(self, ssid: str, password: str, *, timeout: float = 60.0) -> bool:
        """Join ssid with ``nmcli device wifi connect``; True on success.

        The password goes to nmcli's argument list, never to the log.
        """
        if self.nmcli is None:
            return False
        self.status, self.ssid = "connecting", ssid
        command = [self.nmcli, "--wait", str(int(timeout)), "device", "wifi", "connect", ssid]
        if password:
            command += ["password", password]
        process = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
        )
        try:
            _, err = await asyncio.wait_for(process.communicate(), timeout + 5)
        except asyncio.TimeoutError:
            process.kill()
            await process.wait()
            self.status = "disconnected"
            logger.error("wifi: joining %r timed out", ssid)
            return False
        if process.returncode != 0:
            self.status = "disconnected"
            logger.error("wifi: joining %r failed: %s", ssid, err.decode(errors="replace").strip()[:200])
            return False
        self.status = "got ip"
        logger.info("wifi: joined %r", ssid)
        return True
