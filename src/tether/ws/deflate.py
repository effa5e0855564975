"""permessage-deflate (RFC 7692): negotiation and per-message (de)compression.

`DeflateParams` is what both sides agreed on. A client offers with
`DeflateParams.offer()` and checks the answer with `DeflateParams.from_response()`;
a server picks from the client's offers with `negotiate()`. `Deflate` then
compresses outgoing and inflates incoming messages for one connection.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from tether.errors import HandshakeError, PayloadTooBig, ProtocolError

__all__ = ["Deflate", "DeflateParams", "negotiate"]

NAME = "permessage-deflate"
_TAIL = b"\x00\x00\xff\xff"  # RFC 7692 §7.2.1: removed by the sender, appended by the receiver
_BITS = range(8, 16)
_MAX_AFTER_END = 8
_BITS_TEXT = {str(bits): bits for bits in _BITS}


@dataclass(frozen=True)
class DeflateParams:
    """The parameters of permessage-deflate (RFC 7692 §7.1).

    As configuration of a client, the values are what it offers; as
    configuration of a server, the constraints it applies when it accepts;
    after the handshake, what was agreed.

    Attributes:
        server_no_context_takeover: the server resets its compressor per message.
        client_no_context_takeover: the client resets its compressor per message.
        server_max_window_bits: the server's LZ77 window, 8..15 (None: 15).
        client_max_window_bits: the client's LZ77 window, 8..15 (None: 15).
    """

    server_no_context_takeover: bool = False
    client_no_context_takeover: bool = False
    server_max_window_bits: int | None = None
    client_max_window_bits: int | None = None

    def __post_init__(self) -> None:
        for bits in (self.server_max_window_bits, self.client_max_window_bits):
            if bits is not None and bits not in _BITS:
                raise ValueError(f"max_window_bits {bits} is outside 8..15")

    def offer(self) -> str:
        """The client's Sec-WebSocket-Extensions offer (RFC 7692 §5.1).

        The offer always includes ``client_max_window_bits`` so that a server
        may lower the client's window (§7.1.2.2).
        """
        text = self.response()
        return text if self.client_max_window_bits is not None else text + "; client_max_window_bits"

    def response(self) -> str:
        """The server's Sec-WebSocket-Extensions answer for these agreed parameters."""
        parts = [NAME]
        if self.server_no_context_takeover:
            parts.append("server_no_context_takeover")
        if self.client_no_context_takeover:
            parts.append("client_no_context_takeover")
        if self.server_max_window_bits is not None:
            parts.append(f"server_max_window_bits={self.server_max_window_bits}")
        if self.client_max_window_bits is not None:
            parts.append(f"client_max_window_bits={self.client_max_window_bits}")
        return "; ".join(parts)

    @classmethod
    def from_response(cls, offered: DeflateParams, params: Sequence[tuple[str, str | None]]) -> DeflateParams:
        """Check a server's answer against the client's offer (RFC 7692 §7.1).

        Raises:
            HandshakeError: if the answer is not one the offer allows.
        """
        found = _parse_params(params, response=True)
        snct = found.get("server_no_context_takeover", False)
        cnct = found.get("client_no_context_takeover", False)
        smwb = found.get("server_max_window_bits")
        cmwb = found.get("client_max_window_bits")
        assert not isinstance(smwb, bool) and not isinstance(cmwb, bool)
        if offered.server_no_context_takeover and not snct:
            raise HandshakeError("server ignored server_no_context_takeover", status=0)
        if offered.server_max_window_bits is not None and (
            smwb is None or smwb > offered.server_max_window_bits
        ):
            raise HandshakeError("server_max_window_bits in the answer exceeds the offer", status=0)
        if cmwb is not None and (
            offered.client_max_window_bits is not None and cmwb > offered.client_max_window_bits
        ):
            raise HandshakeError("client_max_window_bits in the answer exceeds the offer", status=0)
        return cls(
            bool(snct),
            bool(cnct) or offered.client_no_context_takeover,
            smwb,
            cmwb if cmwb is not None else offered.client_max_window_bits,
        )


def _parse_params(
    params: Sequence[tuple[str, str | None]], *, response: bool
) -> dict[str, bool | int | None]:
    """Validate the parameters of one offer or answer (RFC 7692 §7.1)."""
    found: dict[str, bool | int | None] = {}
    for name, value in params:
        if name in found:
            raise HandshakeError(f"duplicate parameter {name}", status=0 if response else 400)
        if name in ("server_no_context_takeover", "client_no_context_takeover"):
            if value is not None:
                raise HandshakeError(f"{name} takes no value", status=0 if response else 400)
            found[name] = True
        elif name in ("server_max_window_bits", "client_max_window_bits"):
            if value is None:
                # Only an offer's client_max_window_bits may come without a value (§7.1.2.2).
                if response or name == "server_max_window_bits":
                    raise HandshakeError(f"{name} needs a value", status=0 if response else 400)
                found[name] = None
                found["client_max_window_bits_bare"] = True
                continue
            if value not in _BITS_TEXT:
                raise HandshakeError(f"invalid {name} {value!r}", status=0 if response else 400)
            found[name] = _BITS_TEXT[value]
        else:
            raise HandshakeError(f"unknown parameter {name}", status=0 if response else 400)
    return found


def negotiate(
    config: DeflateParams, offers: Sequence[Sequence[tuple[str, str | None]]]
) -> DeflateParams | None:
    """Pick the first acceptable client offer (RFC 7692 §5).

    Args:
        config: the server's own wishes: no_context_takeover flags it requires,
            and max window bits it wants at most.
        offers: the parameters of each permessage-deflate offer, in order.

    Returns:
        The agreed parameters, or None when no offer is acceptable.
    """
    for params in offers:
        try:
            found = _parse_params(params, response=False)
        except HandshakeError:
            continue
        smwb = found.get("server_max_window_bits")
        cmwb = found.get("client_max_window_bits")
        assert not isinstance(smwb, bool) and not isinstance(cmwb, bool)
        client_may_set = "client_max_window_bits" in found
        if config.server_max_window_bits is not None:
            smwb = min(smwb or 15, config.server_max_window_bits)
        if config.client_max_window_bits is not None:
            if not client_may_set:
                continue  # we may only limit the client's window if it allows it
            cmwb = min(cmwb or 15, config.client_max_window_bits)
        return DeflateParams(
            server_no_context_takeover=bool(found.get("server_no_context_takeover"))
            or config.server_no_context_takeover,
            client_no_context_takeover=bool(found.get("client_no_context_takeover"))
            or config.client_no_context_takeover,
            server_max_window_bits=smwb,
            client_max_window_bits=cmwb,
        )
    return None


class Deflate:
    """Compression state of one connection.

    Args:
        params: the agreed parameters.
        is_client: which side of them this endpoint is.
        level: the zlib compression level for outgoing messages.
    """

    __slots__ = (
        "_compressor",
        "_decompressor",
        "_level",
        "_reset_in",
        "_reset_out",
        "_wbits_out",
        "compress_enabled",
    )

    def __init__(self, params: DeflateParams, *, is_client: bool, level: int = 6) -> None:
        if is_client:
            self._reset_out = params.client_no_context_takeover
            self._reset_in = params.server_no_context_takeover
            out_bits = params.client_max_window_bits or 15
        else:
            self._reset_out = params.server_no_context_takeover
            self._reset_in = params.client_no_context_takeover
            out_bits = params.server_max_window_bits or 15
        self._wbits_out = out_bits
        # zlib cannot write raw deflate with a 256-byte window: with 8 bits agreed for our
        # direction we send every message uncompressed, which RFC 7692 §6 allows.
        self.compress_enabled = out_bits > 8
        self._level = level
        self._compressor: zlib._Compress | None = None
        self._decompressor: zlib._Decompress | None = None

    def compress(self, data: bytes | bytearray | memoryview, *, fin: bool) -> bytes:
        """Compress one frame's worth of an outgoing message (RFC 7692 §7.2.1).

        Args:
            data: the uncompressed payload of this frame.
            fin: whether this frame ends the message.
        """
        if self._compressor is None:
            self._compressor = zlib.compressobj(self._level, zlib.DEFLATED, -self._wbits_out)
        out = self._compressor.compress(data) + self._compressor.flush(zlib.Z_SYNC_FLUSH)
        if fin:
            out = out[:-4]  # a sync flush always ends with the empty stored block, _TAIL
            if self._reset_out:
                self._compressor = None
        return out

    def decompress(self, data: bytes | bytearray | memoryview, max_length: int, *, fin: bool) -> bytes:
        """Inflate one chunk of an incoming compressed message (RFC 7692 §7.2.2).

        Args:
            data: compressed bytes as they arrive.
            max_length: the most bytes the message may still grow by.
            fin: whether data ends the message.

        Raises:
            PayloadTooBig: if the output exceeds max_length.
            ProtocolError: if the data is not valid deflate (close code 1007 is
                not right here: a corrupt stream is a protocol error, 1002).
        """
        if self._decompressor is None:
            self._decompressor = zlib.decompressobj(-15)
        d = self._decompressor
        try:
            out = d.decompress(data, max_length + 1)
            if fin and not d.eof and len(out) <= max_length and not d.unconsumed_tail:
                out += d.decompress(_TAIL, max_length + 1 - len(out))
        except zlib.error as exc:
            self._decompressor = None
            raise ProtocolError(f"invalid compressed data: {exc}") from exc
        if len(out) > max_length or d.unconsumed_tail:
            self._decompressor = None
            raise PayloadTooBig(f"decompressed message is over {max_length} bytes")
        # A sender may end the stream with a BFINAL block (RFC 7692 §7.2.3.4); a few
        # bytes of padding may follow it in the message, nothing more.
        if len(d.unused_data) > _MAX_AFTER_END:
            self._decompressor = None
            raise ProtocolError("data after the end of the compressed stream")
        if fin and (d.eof or self._reset_in):
            self._decompressor = None  # the next message starts a new stream
        return out
