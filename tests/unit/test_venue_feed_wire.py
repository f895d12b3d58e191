"""The websocket feed's own framing and batching (app/venue/feeds.py): the bytes it writes are
the frames websockets itself would write, a batch joined in one piece is the same bytes as its
frames apart, and a connection's outbox holds its bound. No sockets, no database."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from app.venue.feeds import (
    _STATUSES,
    SubscriptionFilter,
    _Outbox,
    _Outgoing,
    _Subscription,
    frame_header,
    parse_filters,
    text_frame,
)
from app.venue.store import FeedTuple

ALICE = "0xAbC0000000000000000000000000000000000001"
BOB = "0x00000000000000000000000000000000000000b2"
ROWS: list[FeedTuple] = [
    (1, "confirmed", "0xC1", "slug-a", f"{ALICE} {BOB}", b'{"n":1}'),
    (2, "pending", "0xc1", "slug-a", ALICE.lower(), b'{"n":2,"pad":"' + b"x" * 200 + b'"}'),
    (3, "confirmed", "0xc2", "slug-b", BOB, b'{"n":3}'),
    (4, "confirmed", "0xc1", "slug-b", ALICE, b'{"n":4,"pad":"' + b"y" * 70_000 + b'"}'),
]


def decode(wire: bytes) -> list[bytes]:
    """The text messages in `wire`, parsed by websockets as a client would."""
    reader = StreamReader()
    reader.feed_data(wire)
    reader.feed_eof()
    messages = []
    while reader.buffer:
        parser = Frame.parse(reader.read_exact, mask=False)
        try:
            next(parser)
        except StopIteration as done:
            frame = done.value
        else:
            pytest.fail("truncated frame")
        assert (frame.opcode, frame.fin) == (Opcode.TEXT, True)
        messages.append(bytes(frame.data))
    return messages


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 1100, 65_535, 65_536, 70_000])
def test_text_frame_is_what_websockets_serializes(size: int) -> None:
    payload = bytes(i % 251 for i in range(size))
    expected = Frame(Opcode.TEXT, payload).serialize(mask=False, extensions=[])
    assert text_frame(payload) == expected
    assert frame_header(size) == expected[: len(expected) - size]


def subscription(filters: SubscriptionFilter, *, per_event: bool) -> _Subscription:
    connection: Any = SimpleNamespace(per_event=per_event)
    return _Subscription("sub_0123456789ab", filters, connection, "event")


@pytest.mark.parametrize(
    ("raw", "seqs"),
    [
        ({"users": ["*"], "status": "all"}, [1, 2, 3, 4]),
        ({"users": ["*"]}, [1, 3, 4]),
        ({"users": [ALICE.upper().replace("0X", "0x")], "status": "all"}, [1, 2, 4]),
        ({"users": [BOB]}, [1, 3]),
        ({"condition_ids": ["0XC1"], "status": "pending"}, [2]),
        ({"market_slugs": ["slug-b"], "users": [BOB]}, [3]),
    ],
)
def test_joined_batch_is_its_frames_apart(raw: dict[str, Any], seqs: list[int]) -> None:
    filters = parse_filters(raw)
    apart, apart_count = subscription(filters, per_event=True).wire(filters, ROWS)
    joined, joined_count = subscription(filters, per_event=False).wire(filters, ROWS)
    prefix = b'{"type":"event","subscription_id":"sub_0123456789ab","data":'
    expected = [prefix + data + b"}" for seq, *_, data in ROWS if seq in seqs]
    assert apart == [text_frame(message) for message in expected]
    assert apart_count == joined_count == len(expected)
    assert len(joined) == 1
    assert joined[0] == b"".join(apart)
    assert decode(joined[0]) == expected


def test_a_status_only_filter_reads_no_user_column() -> None:
    """Subscriptions to every user do not look at (or split) the users column."""
    filters = SubscriptionFilter(None, None, None, _STATUSES["confirmed"])
    rows: list[Any] = [
        (1, "confirmed", None, None, None, b"{}"),
        (2, "pending", None, None, None, b"[]"),
    ]
    assert list(filters.matching(rows)) == [b"{}"]


def item(count: int) -> _Outgoing:
    return _Outgoing([b"x" * count], count)


def test_the_outbox_holds_its_bound_and_close_frees_a_waiting_feed() -> None:
    async def scenario() -> None:
        outbox = _Outbox(4)
        await outbox.put(item(3))
        assert (outbox.room(), outbox.full()) == (1, False)
        blocked = asyncio.create_task(outbox.put(item(2)))  # 3 + 2 > 4: waits
        await asyncio.sleep(0)
        assert not blocked.done()
        assert (await outbox.get()).count == 3
        await asyncio.wait_for(blocked, 1)
        await outbox.put(item(2))
        assert (outbox.frames, outbox.full()) == (4, True)
        waiting = asyncio.create_task(outbox.put(item(1)))
        await asyncio.sleep(0)
        assert not waiting.done()
        outbox.close()
        await asyncio.wait_for(waiting, 1)
        assert outbox.empty()
        assert outbox.room() == 4
        await outbox.put(item(1))  # a closed outbox drops what it is given
        assert outbox.empty()

    asyncio.run(scenario())


def test_an_empty_outbox_takes_an_item_larger_than_its_bound() -> None:
    async def scenario() -> None:
        outbox = _Outbox(2)
        await asyncio.wait_for(outbox.put(item(5)), 1)
        assert outbox.frames == 5

    asyncio.run(scenario())
