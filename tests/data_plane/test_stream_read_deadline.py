"""Read waits of io.stream.Stream and their one deadline timer per stream (armed once, re-armed only when it
fires early), over real TCP connections on 127.0.0.1 in a uvloop loop: a wait still times out at its own
deadline, whatever earlier waits armed; data wakes it; a closed connection drops its timer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest
import uvloop

from data_plane.io.stream import ChannelClosed, ChannelTimeout, Stream


class _Reader(Stream):
    def _receive(self, data: bytes) -> None:
        self._wake_reader()

    def _receive_eof(self) -> bool:
        self._wake_reader()
        return False


async def _pair() -> tuple[_Reader, asyncio.StreamWriter, asyncio.Server]:
    loop = asyncio.get_running_loop()
    accepted: asyncio.Future[asyncio.StreamWriter] = loop.create_future()

    async def on_client(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set_result(writer)

    server = await asyncio.start_server(on_client, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    _transport, stream = await loop.create_connection(lambda: _Reader(loop), "127.0.0.1", port)
    return stream, await accepted, server


def _run(test: Callable[[], Awaitable[None]]) -> None:
    loop = uvloop.new_event_loop()
    try:
        loop.run_until_complete(asyncio.wait_for(test(), 30))
    finally:
        loop.close()


def test_a_short_wait_after_a_long_one_times_out_at_its_own_deadline() -> None:
    async def scenario() -> None:
        stream, peer, server = await _pair()
        try:
            # A long wait arms the timer far out; data ends it early.
            waiting = stream.wait_for_data(60.0)
            peer.write(b"x")
            await waiting
            started = time.monotonic()
            with pytest.raises(ChannelTimeout):
                await stream.wait_for_data(0.2)
            assert 0.15 <= time.monotonic() - started < 5.0
        finally:
            peer.close()
            server.close()

    _run(scenario)


def test_waits_with_the_same_timeout_share_one_timer_and_still_expire() -> None:
    async def scenario() -> None:
        stream, peer, server = await _pair()
        try:
            timers = []  # the handles themselves: kept alive, so no id can be reused by a new timer
            for _ in range(20):
                waiting = stream.wait_for_data(0.3)
                timers.append(stream._read_timer)
                peer.write(b"x")
                await waiting
            assert timers[0] is not None and all(t is timers[0] for t in timers)  # armed once for all twenty
            started = time.monotonic()
            with pytest.raises(ChannelTimeout):
                await stream.wait_for_data(0.3)  # the timer fires early for this wait, re-arms, expires it
            assert 0.25 <= time.monotonic() - started < 5.0
        finally:
            peer.close()
            server.close()

    _run(scenario)


def test_a_wait_without_timeout_is_not_expired_by_an_earlier_armed_timer() -> None:
    async def scenario() -> None:
        stream, peer, server = await _pair()
        try:
            waiting = stream.wait_for_data(0.1)
            peer.write(b"x")
            await waiting
            waiting = stream.wait_for_data(None)
            await asyncio.sleep(0.3)  # past the first wait's deadline: its timer has fired
            assert not waiting.done()
            peer.write(b"y")
            await waiting
        finally:
            peer.close()
            server.close()

    _run(scenario)


def test_a_closed_connection_drops_its_timer_and_refuses_new_waits() -> None:
    async def scenario() -> None:
        stream, peer, server = await _pair()
        waiting = stream.wait_for_data(60.0)
        assert stream._read_timer is not None
        peer.close()
        await waiting  # EOF wakes the reader
        stream.close()
        for _ in range(100):
            if stream.closed:
                break
            await asyncio.sleep(0.01)
        assert stream.closed, stream.link
        assert stream._read_timer is None  # nothing keeps a closed stream alive for 60 s
        with pytest.raises(ChannelClosed):
            stream.wait_for_data(60.0)
        server.close()

    _run(scenario)


def test_a_cancelled_wait_is_not_awaiting_data() -> None:
    async def scenario() -> None:
        stream, peer, server = await _pair()
        try:
            task = asyncio.ensure_future(stream.wait_for_data(60.0))
            await asyncio.sleep(0)
            assert stream.awaiting_data
            task.cancel()
            await asyncio.sleep(0)
            assert not stream.awaiting_data  # bytes arriving now pause reading instead of waking nobody
        finally:
            peer.close()
            server.close()

    _run(scenario)
