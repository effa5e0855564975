"""TLS contexts for tether's clients: verification on by default.

The system's CA store is used when it has one; otherwise the `certifi` bundle.
"""

from __future__ import annotations

import os
import ssl

__all__ = ["client_context", "server_context"]


def _system_store_present() -> bool:
    paths = ssl.get_default_verify_paths()
    if paths.cafile and os.path.isfile(paths.cafile):
        return True
    return bool(paths.capath and os.path.isdir(paths.capath) and os.listdir(paths.capath))


def client_context(
    *,
    ca_file: str | os.PathLike[str] | None = None,
    cert_file: str | os.PathLike[str] | None = None,
    key_file: str | os.PathLike[str] | None = None,
    verify: bool = True,
) -> ssl.SSLContext:
    """Build a client TLS context that verifies the server.

    Args:
        ca_file: a PEM bundle of trusted CAs (like Mongoose OS' ``ca.pem``);
            by default the system store, or certifi's bundle when the system has none.
        cert_file: a client certificate (PEM) for mutual TLS.
        key_file: the client certificate's key (PEM); by default inside cert_file.
        verify: False disables certificate and host name checks. Only for tests.

    Returns:
        A context to pass as ``ssl=`` to tether's clients.

    Raises:
        OSError: if a file cannot be read; ssl.SSLError if it is not valid PEM.
    """
    cafile = os.fspath(ca_file) if ca_file is not None else None
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
    if cafile is None and not _system_store_present():
        try:
            import certifi
        except ImportError:  # pragma: no cover - certifi is a dependency
            pass
        else:
            ctx.load_verify_locations(cafile=certifi.where())
    if cert_file is not None:
        ctx.load_cert_chain(os.fspath(cert_file), os.fspath(key_file) if key_file else None)
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def server_context(
    cert_file: str | os.PathLike[str],
    key_file: str | os.PathLike[str] | None = None,
    *,
    client_ca_file: str | os.PathLike[str] | None = None,
) -> ssl.SSLContext:
    """Build a server TLS context.

    Args:
        cert_file: the server certificate chain (PEM).
        key_file: its key (PEM); by default inside cert_file.
        client_ca_file: when given, clients must present a certificate signed by it.
    """
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(os.fspath(cert_file), os.fspath(key_file) if key_file else None)
    if client_ca_file is not None:
        ctx.load_verify_locations(cafile=os.fspath(client_ca_file))
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx
