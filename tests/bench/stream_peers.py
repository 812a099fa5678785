"""Load generators and backends for the bench rows wrk cannot drive, each a small uvloop program run as its
own process on the load core (`python -m tests.bench.stream_peers ROLE ...`), printing one JSON line:

- `ws-backend PORT`: answers a WebSocket upgrade (RFC 6455 accept key), then echoes every 32-byte text frame
  (unmasked, as a server sends it).
- `ws-client HOST_PORT VHOST CONNECTIONS SECONDS`: opens the connections through a proxy, then each one sends
  a masked 32-byte frame and waits for the echo before the next: round trips per second and their latency.
- `sse-backend PORT EVENTS_PER_SECOND`: every stream it serves gets events spread evenly in time, so all
  streams together carry EVENTS_PER_SECOND; each event holds the CLOCK_MONOTONIC nanoseconds it was written.
- `sse-client HOST_PORT VHOST STREAMS SECONDS`: opens the streams through a proxy and measures each event's
  delay from the backend's write to its arrival (one machine, one clock), and events lost (the backend's
  count of what it wrote, asked for at the end, which also stops it, minus what arrived).
- `idle-client HOST_PORT VHOST CONNECTIONS`: opens that many keep-alive connections, sends one small GET on
  each, reads the answer and keeps them all open until stdin closes (the bench measures the proxy meanwhile).

Frames and heads are precomputed, so the programs spend as little of the shared core per message as possible.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import socket
import sys
import time

import uvloop

WS_PAYLOAD = b"0123456789abcdef0123456789abcdef"  # 32 bytes
WS_MASK = b"\x11\x22\x33\x44"
WS_CLIENT_FRAME = b"\x81\xa0" + WS_MASK + bytes(b ^ WS_MASK[i % 4] for i, b in enumerate(WS_PAYLOAD))
WS_SERVER_FRAME = b"\x81\x20" + WS_PAYLOAD
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def _percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(fraction * len(sorted_values)))]


# WebSocket -------------------------------------------------------------------------------------------------


class _WsEchoServer(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.upgraded = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        if self.upgraded:
            self.buffer += data
            frames, rest = divmod(len(self.buffer), len(WS_CLIENT_FRAME))
            if frames:
                self.buffer = self.buffer[len(self.buffer) - rest :]
                self.transport.write(WS_SERVER_FRAME * frames)
            return
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head, self.buffer = self.buffer[:end], self.buffer[end + 4 :]
        key = b""
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"sec-websocket-key":
                key = value.strip()
        accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest())
        self.transport.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        self.upgraded = True


class _WsClient(asyncio.Protocol):
    def __init__(self, stats: dict[str, object], ready: asyncio.Future[None]) -> None:
        self.stats = stats
        self.ready = ready
        self.transport: asyncio.Transport | None = None
        self.upgraded = False
        self.pending = 0
        self.sent_at = 0
        self.running = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        if not self.upgraded:
            self.pending += len(data)
            if b"\r\n\r\n" in data:
                if not data.startswith(b"HTTP/1.1 101"):
                    self.ready.set_exception(RuntimeError(f"upgrade refused: {data[:120]!r}"))
                    return
                self.upgraded = True
                self.pending = len(data) - data.index(b"\r\n\r\n") - 4
                if not self.ready.done():
                    self.ready.set_result(None)
            return
        self.pending += len(data)
        while self.pending >= len(WS_SERVER_FRAME):
            self.pending -= len(WS_SERVER_FRAME)
            now = time.monotonic_ns()
            latencies = self.stats["latencies"]
            assert isinstance(latencies, list)
            latencies.append(now - self.sent_at)
            if self.running:
                self.sent_at = now
                self.transport.write(WS_CLIENT_FRAME)

    def start(self) -> None:
        assert self.transport is not None
        self.sent_at = time.monotonic_ns()
        self.transport.write(WS_CLIENT_FRAME)


async def ws_client(address: str, vhost: str, connections: int, seconds: float) -> dict[str, object]:
    loop = asyncio.get_running_loop()
    host, port = address.rsplit(":", 1)
    stats: dict[str, object] = {"latencies": []}
    clients = []
    key = base64.b64encode(os.urandom(16))
    request = (
        (
            f"GET /echo HTTP/1.1\r\nHost: {vhost}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: "
        ).encode()
        + key
        + b"\r\n\r\n"
    )
    for _ in range(connections):
        ready: asyncio.Future[None] = loop.create_future()
        transport, client = await loop.create_connection(lambda r=ready: _WsClient(stats, r), host, int(port))
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport.write(request)
        await asyncio.wait_for(ready, 10)
        clients.append(client)
    for client in clients:
        client.start()
    await asyncio.sleep(1.0)  # warm-up
    latencies = stats["latencies"]
    assert isinstance(latencies, list)
    latencies.clear()
    started = time.monotonic()
    await asyncio.sleep(seconds)
    elapsed = time.monotonic() - started
    done = sorted(latencies)
    for client in clients:
        client.running = False
    for client in clients:
        if client.transport is not None:
            client.transport.close()
    return {
        "round_trips": len(done),
        "round_trips_per_second": len(done) / elapsed,
        "latency_p50_ms": _percentile(done, 0.50) / 1e6,
        "latency_p99_ms": _percentile(done, 0.99) / 1e6,
    }


# Server-sent events ----------------------------------------------------------------------------------------


class _SseServer(asyncio.Protocol):
    streams: list[_SseServer] = []
    sent = 0
    stopped = False

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buffer += data
        if b"\r\n\r\n" not in self.buffer:
            return
        path = self.buffer.split(b" ", 2)[1]
        self.buffer = b""
        if path == b"/count":
            _SseServer.stopped = True  # the count is final: nothing is written after it
            body = json.dumps({"sent": _SseServer.sent}).encode()
            self.transport.write(
                b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
            )
            self.transport.close()
            return
        self.transport.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        _SseServer.streams.append(self)

    def connection_lost(self, exc: Exception | None) -> None:
        if self in _SseServer.streams:
            _SseServer.streams.remove(self)


async def _emit(events_per_second: float) -> None:
    """Round robin over the open streams, one event every 1/EVENTS_PER_SECOND seconds on a fixed grid."""
    loop = asyncio.get_running_loop()
    interval = 1.0 / events_per_second
    next_at = loop.time()
    index = 0
    while not _SseServer.stopped:
        next_at += interval
        streams = _SseServer.streams
        if streams:
            stream = streams[index % len(streams)]
            index += 1
            event = b"data: %d\n\n" % time.monotonic_ns()
            if stream.transport is not None and not stream.transport.is_closing():
                stream.transport.write(b"%x\r\n%s\r\n" % (len(event), event))
                _SseServer.sent += 1
        delay = next_at - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        elif delay < -0.1:
            next_at = loop.time()  # far behind (the core is busy): do not burst to catch up


class _SseClient(asyncio.Protocol):
    def __init__(self, delays: list[int], counting: list[bool]) -> None:
        self.delays = delays
        self.counting = counting
        self.buffer = b""
        self.in_body = False
        self.received = 0

    def data_received(self, data: bytes) -> None:
        now = time.monotonic_ns()
        self.buffer += data
        if not self.in_body:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            self.buffer = self.buffer[end + 4 :]
            self.in_body = True
        # Chunk framing (if any) is skipped by looking only at the event lines.
        while True:
            start = self.buffer.find(b"data: ")
            if start < 0:
                self.buffer = b""
                return
            end = self.buffer.find(b"\n\n", start)
            if end < 0:
                self.buffer = self.buffer[start:]
                return
            sent = int(self.buffer[start + 6 : end])
            self.buffer = self.buffer[end + 2 :]
            self.received += 1
            if self.counting[0]:
                self.delays.append(now - sent)


async def _get(host: str, port: int, vhost: str, path: str) -> bytes:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {vhost}\r\nConnection: close\r\n\r\n".encode())
    data = await reader.read()
    writer.close()
    return data.split(b"\r\n\r\n", 1)[1]


async def sse_client(address: str, vhost: str, streams: int, seconds: float) -> dict[str, object]:
    loop = asyncio.get_running_loop()
    host, port = address.rsplit(":", 1)
    delays: list[int] = []
    counting = [False]
    clients = []
    for _ in range(streams):
        transport, client = await loop.create_connection(
            lambda: _SseClient(delays, counting), host, int(port)
        )
        transport.write(
            f"GET /events HTTP/1.1\r\nHost: {vhost}\r\nAccept: text/event-stream\r\n\r\n".encode()
        )
        clients.append((transport, client))
    await asyncio.sleep(1.0)  # warm-up
    counting[0] = True
    started = time.monotonic()
    await asyncio.sleep(seconds)
    counting[0] = False
    elapsed = time.monotonic() - started
    # Stop the streams, give in-flight events a moment, then compare with the backend's count.
    for transport, _client in clients:
        transport.pause_reading()
    sent = json.loads(await _get(host, int(port), vhost, "/count"))["sent"]
    for transport, _client in clients:
        transport.resume_reading()
    await asyncio.sleep(0.5)
    received = sum(client.received for _t, client in clients)
    for transport, _client in clients:
        transport.close()
    done = sorted(delays)
    return {
        "events": len(done),
        "events_per_second": len(done) / elapsed,
        "delay_p50_ms": _percentile(done, 0.50) / 1e6,
        "delay_p99_ms": _percentile(done, 0.99) / 1e6,
        "delay_max_ms": (done[-1] / 1e6) if done else 0.0,
        "sent": sent,
        "received": received,
    }


# Idle keep-alive connections -------------------------------------------------------------------------------


def idle_client(address: str, vhost: str, connections: int) -> None:
    host, port = address.rsplit(":", 1)
    request = f"GET /small.txt HTTP/1.1\r\nHost: {vhost}\r\n\r\n".encode()
    held: list[socket.socket] = []
    failed = 0
    deadline = time.monotonic() + 120
    for _ in range(connections):
        if failed >= 50 or time.monotonic() > deadline:
            failed = connections - len(held)  # the proxy stopped taking connections: do not wait on each
            break
        sock: socket.socket | None = None
        try:
            sock = socket.create_connection((host, int(port)), timeout=2)
            sock.sendall(request)
            answer = b""
            while b"Hello, world\n" not in answer:
                chunk = sock.recv(4096)
                if not chunk:
                    raise ConnectionError("closed")
                answer += chunk
            if not answer.startswith(b"HTTP/1.1 200"):
                raise ConnectionError(answer[:60].decode("latin-1"))
            held.append(sock)
        except OSError:
            failed += 1
            if sock is not None:
                sock.close()
    print(json.dumps({"open": len(held), "failed": failed}), flush=True)
    sys.stdin.read()  # until the bench has measured
    for sock in held:
        sock.close()


def main(argv: list[str]) -> int:
    role, args = argv[0], argv[1:]
    if role == "idle-client":
        idle_client(args[0], args[1], int(args[2]))
        return 0

    async def run() -> None:
        loop = asyncio.get_running_loop()
        if role == "ws-backend":
            server = await loop.create_server(_WsEchoServer, "127.0.0.1", int(args[0]), backlog=4096)
            print(json.dumps({"listening": int(args[0])}), flush=True)
            await server.serve_forever()
        elif role == "sse-backend":
            server = await loop.create_server(_SseServer, "127.0.0.1", int(args[0]), backlog=4096)
            emitter = loop.create_task(_emit(float(args[1])))
            print(json.dumps({"listening": int(args[0])}), flush=True)
            await server.serve_forever()
            emitter.cancel()
        elif role == "ws-client":
            print(json.dumps(await ws_client(args[0], args[1], int(args[2]), float(args[3]))), flush=True)
        elif role == "sse-client":
            print(json.dumps(await sse_client(args[0], args[1], int(args[2]), float(args[3]))), flush=True)
        else:
            raise SystemExit(f"unknown role {role}")

    uvloop.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
