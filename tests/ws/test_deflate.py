"""permessage-deflate (RFC 7692): tether.ws.deflate."""

from __future__ import annotations

import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.errors import HandshakeError, PayloadTooBig, ProtocolError
from tether.ws.deflate import Deflate, DeflateParams, negotiate
from tether.ws.protocol import Connection, TextMessage

Params = list[tuple[str, str | None]]


def assert_messages(
    sent: list[list[str]], wire: bytes, params: DeflateParams | None = None, *, encodes: bool = True
) -> None:
    """A server core sending each message (a list of fragments) writes wire; a client reading wire
    gets the messages back.

    encodes=False for examples that zlib never writes (stored blocks, BFINAL): then only the
    receiving direction is checked.
    """
    params = params or DeflateParams()
    if encodes:
        server = Connection(is_client=False, deflate=params)
        for fragments in sent:
            if len(fragments) == 1:
                server.send_text(fragments[0])
                continue
            server.send_text(fragments[0], fin=False)
            for i, fragment in enumerate(fragments[1:], 2):
                server.send_continuation(fragment, fin=i == len(fragments))
        assert server.data_to_send() == wire
    for pieces in ([wire], [wire[i : i + 1] for i in range(len(wire))]):
        client = Connection(is_client=True, deflate=params)
        events = []
        for piece in pieces:
            client.receive_data(piece)
            events += client.events_received()
        assert client.error is None
        assert events == [TextMessage("".join(fragments)) for fragments in sent]


class TestRfc7692Examples:
    """RFC 7692 §7.2.3, byte for byte."""

    def test_one_compressed_block(self) -> None:
        # §7.2.3.1
        assert_messages([["Hello"]], bytes.fromhex("c1 07 f2 48 cd c9 c9 07 00"))

    def test_one_compressed_block_fragmented(self) -> None:
        # §7.2.3.1: the compressed data split into two frames.
        wire = bytes.fromhex("41 03 f2 48 cd") + bytes.fromhex("80 04 c9 c9 07 00")
        assert_messages([["Hello"]], wire, encodes=False)

    def test_sharing_the_sliding_window(self) -> None:
        # §7.2.3.2: the second "Hello" refers back to the first.
        wire = bytes.fromhex("c1 07 f2 48 cd c9 c9 07 00") + bytes.fromhex("c1 05 f2 00 11 00 00")
        assert_messages([["Hello"], ["Hello"]], wire)

    def test_no_context_takeover(self) -> None:
        # §7.2.3.2: without context takeover both messages compress to the same bytes.
        wire = bytes.fromhex("c1 07 f2 48 cd c9 c9 07 00") * 2
        params = DeflateParams(server_no_context_takeover=True)
        assert_messages([["Hello"], ["Hello"]], wire, params)

    def test_block_with_no_compression(self) -> None:
        # §7.2.3.3
        wire = bytes.fromhex("c1 0b 00 05 00 fa ff 48 65 6c 6c 6f 00")
        assert_messages([["Hello"]], wire, encodes=False)

    def test_block_with_bfinal_set(self) -> None:
        # §7.2.3.4
        wire = bytes.fromhex("c1 08 f3 48 cd c9 c9 07 00 00")
        assert_messages([["Hello"]], wire, encodes=False)

    def test_message_after_a_block_with_bfinal_set(self) -> None:
        # §7.2.3.4 ends the DEFLATE stream; the next message must still decode (§7.2.2),
        # not vanish into the ended stream's unused data.
        wire = bytes.fromhex("c1 08 f3 48 cd c9 c9 07 00 00") + bytes.fromhex("c1 07 f2 48 cd c9 c9 07 00")
        assert_messages([["Hello"], ["Hello"]], wire, encodes=False)

    def test_data_after_the_end_of_the_stream_is_refused(self) -> None:
        # A few bytes of padding may follow a BFINAL block; a stream of them may not.
        payload = bytes.fromhex("f3 48 cd c9 c9 07 00") + bytes(9)
        client = Connection(is_client=True, deflate=DeflateParams())
        client.receive_data(bytes((0xC1, len(payload))) + payload)
        assert isinstance(client.error, ProtocolError)
        assert client.error.close_code == 1002
        assert "after the end" in str(client.error)

    def test_bfinal_in_the_first_fragment(self) -> None:
        # The stream ends in the first frame; the continuation brings only padding.
        wire = bytes.fromhex("41 07 f3 48 cd c9 c9 07 00") + bytes.fromhex("80 01 00")
        assert_messages([["Hello"]], wire, encodes=False)

    def test_messages_after_bfinal_without_context_takeover(self) -> None:
        wire = bytes.fromhex("c1 08 f3 48 cd c9 c9 07 00 00") * 2
        assert_messages(
            [["Hello"], ["Hello"]], wire, DeflateParams(server_no_context_takeover=True), encodes=False
        )

    def test_two_blocks_in_one_message(self) -> None:
        # §7.2.3.5: "He" in one block, an empty stored block, "llo" in another.
        wire = bytes.fromhex("c1 0d f2 48 05 00 00 00 ff ff ca c9 c9 07 00")
        assert_messages([["Hello"]], wire, encodes=False)

    def test_empty_last_fragment(self) -> None:
        # §7.2.3.6: a message that ends after its data was flushed ends with the payload 0x00.
        wire = bytes.fromhex("41 0b f2 48 cd c9 c9 07 00 00 00 ff ff") + bytes.fromhex("80 01 00")
        assert_messages([["Hello", ""]], wire)

    def test_empty_message(self) -> None:
        server = Connection(is_client=False, deflate=DeflateParams())
        server.send_text("")
        wire = server.data_to_send()
        assert wire[0] == 0xC1
        client = Connection(is_client=True, deflate=DeflateParams())
        client.receive_data(wire)
        assert client.events_received() == [TextMessage("")]


class TestDeflateParams:
    @pytest.mark.parametrize("bits", [7, 16, 0, -15])
    def test_window_bits_range(self, bits: int) -> None:
        with pytest.raises(ValueError, match=r"outside 8\.\.15"):
            DeflateParams(server_max_window_bits=bits)
        with pytest.raises(ValueError, match=r"outside 8\.\.15"):
            DeflateParams(client_max_window_bits=bits)

    def test_offer(self) -> None:
        # RFC 7692 §7.1.2.2: the offer lets the server limit the client's window.
        assert DeflateParams().offer() == "permessage-deflate; client_max_window_bits"
        everything = DeflateParams(True, True, 10, 12)
        assert everything.offer() == (
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
            "server_max_window_bits=10; client_max_window_bits=12"
        )

    def test_response(self) -> None:
        assert DeflateParams().response() == "permessage-deflate"
        assert DeflateParams(True, True, 8, 9).response() == (
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
            "server_max_window_bits=8; client_max_window_bits=9"
        )


class TestFromResponse:
    @pytest.mark.parametrize(
        ("offered", "answer", "agreed"),
        [
            (DeflateParams(), [], DeflateParams()),
            (
                DeflateParams(),
                [("server_no_context_takeover", None)],
                DeflateParams(server_no_context_takeover=True),
            ),
            (
                DeflateParams(),
                [("client_no_context_takeover", None)],
                DeflateParams(client_no_context_takeover=True),
            ),
            # The client keeps to what it offered even when the server does not echo it.
            (
                DeflateParams(client_no_context_takeover=True),
                [],
                DeflateParams(client_no_context_takeover=True),
            ),
            (
                DeflateParams(server_no_context_takeover=True),
                [("server_no_context_takeover", None)],
                DeflateParams(server_no_context_takeover=True),
            ),
            (
                DeflateParams(server_max_window_bits=10),
                [("server_max_window_bits", "10")],
                DeflateParams(server_max_window_bits=10),
            ),
            (
                DeflateParams(server_max_window_bits=10),
                [("server_max_window_bits", "9")],
                DeflateParams(server_max_window_bits=9),
            ),
            # §7.1.2.1: the server may limit its window unasked.
            (DeflateParams(), [("server_max_window_bits", "12")], DeflateParams(server_max_window_bits=12)),
            (DeflateParams(), [("client_max_window_bits", "9")], DeflateParams(client_max_window_bits=9)),
            (
                DeflateParams(client_max_window_bits=10),
                [("client_max_window_bits", "10")],
                DeflateParams(client_max_window_bits=10),
            ),
            (DeflateParams(client_max_window_bits=10), [], DeflateParams(client_max_window_bits=10)),
        ],
    )
    def test_accepted(self, offered: DeflateParams, answer: Params, agreed: DeflateParams) -> None:
        assert DeflateParams.from_response(offered, answer) == agreed

    @pytest.mark.parametrize(
        ("offered", "answer", "message"),
        [
            (DeflateParams(server_no_context_takeover=True), [], "ignored server_no_context_takeover"),
            (DeflateParams(server_max_window_bits=10), [], "exceeds the offer"),
            (
                DeflateParams(server_max_window_bits=10),
                [("server_max_window_bits", "11")],
                "exceeds the offer",
            ),
            (
                DeflateParams(client_max_window_bits=10),
                [("client_max_window_bits", "11")],
                "exceeds the offer",
            ),
            (DeflateParams(), [("client_max_window_bits", None)], "needs a value"),
            (DeflateParams(), [("server_max_window_bits", None)], "needs a value"),
            (DeflateParams(), [("server_no_context_takeover", "1")], "takes no value"),
            (DeflateParams(), [("client_no_context_takeover", None)] * 2, "duplicate"),
            (DeflateParams(), [("server_max_window_bits", "7")], "invalid"),
            (DeflateParams(), [("server_max_window_bits", "16")], "invalid"),
            (DeflateParams(), [("server_max_window_bits", "010")], "invalid"),
            (DeflateParams(), [("server_max_window_bits", "ten")], "invalid"),
            (DeflateParams(), [("server_max_window_bits", "")], "invalid"),
            (DeflateParams(), [("mystery", None)], "unknown parameter"),
        ],
    )
    def test_refused(self, offered: DeflateParams, answer: Params, message: str) -> None:
        with pytest.raises(HandshakeError, match=message):
            DeflateParams.from_response(offered, answer)

    def test_superscript_digit(self) -> None:
        # "¹".isdigit() is True but int("¹") raises ValueError: a malformed answer must be a HandshakeError.
        with pytest.raises(HandshakeError):
            DeflateParams.from_response(DeflateParams(), [("server_max_window_bits", "\u00b9")])


class TestNegotiate:
    @pytest.mark.parametrize(
        ("config", "offers", "agreed"),
        [
            (DeflateParams(), [], None),
            (DeflateParams(), [[]], DeflateParams()),
            (DeflateParams(), [[("client_max_window_bits", None)]], DeflateParams()),
            (
                DeflateParams(),
                [[("server_no_context_takeover", None), ("client_no_context_takeover", None)]],
                DeflateParams(True, True),
            ),
            (
                DeflateParams(server_no_context_takeover=True),
                [[]],
                DeflateParams(server_no_context_takeover=True),
            ),
            (
                DeflateParams(client_no_context_takeover=True),
                [[]],
                DeflateParams(client_no_context_takeover=True),
            ),
            (DeflateParams(), [[("server_max_window_bits", "9")]], DeflateParams(server_max_window_bits=9)),
            (DeflateParams(), [[("client_max_window_bits", "11")]], DeflateParams(client_max_window_bits=11)),
            (DeflateParams(server_max_window_bits=10), [[]], DeflateParams(server_max_window_bits=10)),
            (
                DeflateParams(server_max_window_bits=10),
                [[("server_max_window_bits", "12")]],
                DeflateParams(server_max_window_bits=10),
            ),
            (
                DeflateParams(server_max_window_bits=10),
                [[("server_max_window_bits", "9")]],
                DeflateParams(server_max_window_bits=9),
            ),
            # §7.1.2.2: the server limits the client's window only if the offer allows it.
            (DeflateParams(client_max_window_bits=10), [[]], None),
            (
                DeflateParams(client_max_window_bits=10),
                [[("client_max_window_bits", None)]],
                DeflateParams(client_max_window_bits=10),
            ),
            (
                DeflateParams(client_max_window_bits=10),
                [[("client_max_window_bits", "9")]],
                DeflateParams(client_max_window_bits=9),
            ),
            (
                DeflateParams(client_max_window_bits=10),
                [[("client_max_window_bits", "12")]],
                DeflateParams(client_max_window_bits=10),
            ),
            (
                DeflateParams(client_max_window_bits=10),
                [[], [("client_max_window_bits", None)]],
                DeflateParams(client_max_window_bits=10),
            ),
        ],
    )
    def test_agreement(
        self, config: DeflateParams, offers: list[Params], agreed: DeflateParams | None
    ) -> None:
        assert negotiate(config, offers) == agreed

    @pytest.mark.parametrize(
        "bad",
        [
            [("server_max_window_bits", "7")],
            [("server_max_window_bits", None)],
            [("server_max_window_bits", "08")],
            [("client_no_context_takeover", None), ("client_no_context_takeover", None)],
            [("server_no_context_takeover", "yes")],
            [("unknown", None)],
        ],
    )
    def test_bad_offers_are_skipped(self, bad: Params) -> None:
        # RFC 7692 §5: the server picks the first offer it can accept.
        good = [("server_no_context_takeover", None)]
        assert negotiate(DeflateParams(), [bad]) is None
        assert negotiate(DeflateParams(), [bad, good, []]) == DeflateParams(server_no_context_takeover=True)

    def test_superscript_digit_offer_is_skipped(self) -> None:
        assert negotiate(DeflateParams(), [[("client_max_window_bits", "\u00b2")], []]) == DeflateParams()


class TestDeflate:
    def test_compress_keeps_the_tail_until_the_message_ends(self) -> None:
        # RFC 7692 §7.2.1: the 00 00 ff ff tail is removed at the end of the message only.
        d = Deflate(DeflateParams(), is_client=False)
        assert d.compress(b"Hello", fin=False) == bytes.fromhex("f2 48 cd c9 c9 07 00 00 00 ff ff")
        assert d.compress(b"", fin=True) == b"\x00"

    @pytest.mark.parametrize("is_client", [True, False])
    def test_context_takeover_per_direction(self, is_client: bool) -> None:
        first, again = bytes.fromhex("f2 48 cd c9 c9 07 00"), bytes.fromhex("f2 00 11 00 00")
        own = DeflateParams(client_no_context_takeover=is_client, server_no_context_takeover=not is_client)
        other = DeflateParams(client_no_context_takeover=not is_client, server_no_context_takeover=is_client)
        d = Deflate(own, is_client=is_client)
        assert [d.compress(b"Hello", fin=True) for _ in range(2)] == [first, first]
        d = Deflate(other, is_client=is_client)
        assert [d.compress(b"Hello", fin=True) for _ in range(2)] == [first, again]

    def test_decompress_with_context_takeover(self) -> None:
        d = Deflate(DeflateParams(), is_client=True)
        assert d.decompress(bytes.fromhex("f2 48 cd c9 c9 07 00"), 100, fin=True) == b"Hello"
        assert d.decompress(bytes.fromhex("f2 00 11 00 00"), 100, fin=True) == b"Hello"

    def test_decompress_without_context_takeover(self) -> None:
        # The window is reset after each message: a back reference has nothing to refer to.
        d = Deflate(DeflateParams(server_no_context_takeover=True), is_client=True)
        assert d.decompress(bytes.fromhex("f2 48 cd c9 c9 07 00"), 100, fin=True) == b"Hello"
        with pytest.raises(ProtocolError) as info:
            d.decompress(bytes.fromhex("f2 00 11 00 00"), 100, fin=True)
        assert info.value.close_code == 1002

    def test_decompress_in_pieces(self) -> None:
        d = Deflate(DeflateParams(), is_client=False)
        data = bytes.fromhex("f2 48 cd c9 c9 07 00")
        out = [d.decompress(data[i : i + 1], 100, fin=i == len(data) - 1) for i in range(len(data))]
        assert b"".join(out) == b"Hello"

    def test_decompress_limit(self) -> None:
        d = Deflate(DeflateParams(), is_client=True)
        assert d.decompress(bytes.fromhex("f2 48 cd c9 c9 07 00"), 5, fin=True) == b"Hello"
        with pytest.raises(PayloadTooBig) as info:
            d.decompress(bytes.fromhex("f2 48 cd c9 c9 07 00"), 4, fin=True)
        assert info.value.close_code == 1009
        # The limit applies to the tail's output too, and with nothing left to give.
        with pytest.raises(PayloadTooBig):
            Deflate(DeflateParams(), is_client=True).decompress(
                bytes.fromhex("f2 48 cd c9 c9 07 00"), 0, fin=False
            )

    def test_zip_bomb_output_is_bounded(self) -> None:
        compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
        bomb = compressor.compress(bytes(50_000_000)) + compressor.flush(zlib.Z_SYNC_FLUSH)
        d = Deflate(DeflateParams(), is_client=False)
        with pytest.raises(PayloadTooBig):
            d.decompress(bomb, 1000, fin=False)
        # A fresh stream afterwards: the failed one is dropped.
        assert d.decompress(bytes.fromhex("f2 48 cd c9 c9 07 00"), 100, fin=True) == b"Hello"

    def test_invalid_data(self) -> None:
        d = Deflate(DeflateParams(), is_client=True)
        with pytest.raises(ProtocolError, match="invalid compressed data"):
            d.decompress(b"\xff\xff\xff", 100, fin=True)
        assert d.decompress(bytes.fromhex("f2 48 cd c9 c9 07 00"), 100, fin=True) == b"Hello"

    @pytest.mark.parametrize(
        ("params", "is_client", "enabled"),
        [
            (DeflateParams(server_max_window_bits=8), False, False),
            (DeflateParams(server_max_window_bits=8), True, True),
            (DeflateParams(client_max_window_bits=8), True, False),
            (DeflateParams(client_max_window_bits=8), False, True),
            (DeflateParams(server_max_window_bits=9, client_max_window_bits=9), True, True),
        ],
    )
    def test_8_bit_window_disables_compression(
        self, params: DeflateParams, is_client: bool, enabled: bool
    ) -> None:
        assert Deflate(params, is_client=is_client).compress_enabled is enabled

    @settings(max_examples=50)
    @given(
        messages=st.lists(st.binary(max_size=3000) | st.sampled_from([b"ab" * 2000]), min_size=1, max_size=5),
        bits=st.integers(9, 15),
        level=st.integers(0, 9),
        reset=st.booleans(),
    )
    def test_round_trip(self, messages: list[bytes], bits: int, level: int, reset: bool) -> None:
        params = DeflateParams(
            server_no_context_takeover=reset, client_no_context_takeover=reset, client_max_window_bits=bits
        )
        sender = Deflate(params, is_client=True, level=level)
        receiver = Deflate(params, is_client=False)
        for message in messages:
            compressed = sender.compress(message, fin=True)
            assert not compressed.endswith(b"\x00\x00\xff\xff")
            assert receiver.decompress(compressed, len(message), fin=True) == message
            # The window agreed is the window used: a decoder limited to it decodes the stream too.
            if reset:
                plain = zlib.decompressobj(-bits)
                assert plain.decompress(compressed + b"\x00\x00\xff\xff") == message
