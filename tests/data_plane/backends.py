"""Small real backends for data-plane tests: an HTTP/1.1 server (asyncio + h11), a WebSocket echo server
(the `websockets` library), each on a free loopback port in its own thread with its own event loop, so tests
can talk to the proxy with blocking or async clients alike; and a WSGI server (the standard library's
reference one, wsgiref) answering with the CGI environment an application sees (`WsgiBackend`); and
`RawUpstream`, a socket server whose subclasses script the exact bytes of each answer (malformed ones too).

HTTP endpoints (path, query optional):
  /echo                 JSON: method, target, headers, body (text), body_length
  /status/<code>        empty answer with that status
  /bytes?n=N&chunked=1  N bytes of b"x" (Content-Length, or chunked in 64 KiB chunks)
  /slow?seconds=S       answers after S seconds
  /sse                  text/event-stream; events come from `push_event()`, `end_sse()` ends it
  /hangup               closes the connection without answering
  OPTIONS (any path)    405 with Allow: GET, POST, DELETE, as the MCP SDK's Streamable HTTP endpoint answers
Every request is counted, and every accepted connection is counted (keep-alive reuse checks).
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import threading
import wsgiref.simple_server
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import h11
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from tests.harness.services import free_port


class _LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Awaitable[Any], timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)  # type: ignore[arg-type]

    def stop(self) -> None:
        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self.run(cancel_all())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


class HttpBackend:
    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self.host = "127.0.0.1"
        self.port = free_port()
        self.ssl_context = ssl_context
        self.connections_accepted = 0
        self.requests: list[dict[str, Any]] = []
        self._thread = _LoopThread()
        self._sse_queues: list[asyncio.Queue[bytes | None]] = []
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread.run(self._start())

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://{self.host}:{self.port}"

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port, ssl=self.ssl_context)

    def close(self) -> None:
        async def stop() -> None:
            assert self._server is not None
            self._server.close()
            for writer in list(self._writers):
                writer.close()

        self._thread.run(stop())
        self._thread.stop()

    def close_idle_connections(self) -> None:
        """Close every open connection from the server side (makes pooled proxy connections stale)."""

        async def close_all() -> None:
            for writer in list(self._writers):
                writer.close()

        self._thread.run(close_all())

    def push_event(self, data: str) -> None:
        for queue in self._sse_queues:
            self._thread.loop.call_soon_threadsafe(queue.put_nowait, f"data: {data}\n\n".encode())

    def end_sse(self) -> None:
        for queue in self._sse_queues:
            self._thread.loop.call_soon_threadsafe(queue.put_nowait, None)

    @property
    def open_connections(self) -> int:
        return len(self._writers)

    @property
    def sse_streams(self) -> int:
        return len(self._sse_queues)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections_accepted += 1
        self._writers.add(writer)
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                request: h11.Request | None = None
                body = bytearray()
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        data = await reader.read(65536)
                        conn.receive_data(data)
                        if not data and conn.their_state is h11.IDLE:
                            return
                        continue
                    if type(event) is h11.Request:
                        request = event
                        if request.target.startswith(b"/reject"):
                            # Answer before reading the body, then hang up (an early 413, as servers do).
                            self.requests.append({"method": "POST", "target": "/reject", "headers": []})
                            writer.write(
                                conn.send(
                                    h11.Response(
                                        status_code=413,
                                        headers=[("content-length", "8"), ("connection", "close")],
                                    )
                                )
                                or b""
                            )
                            writer.write(conn.send(h11.Data(data=b"too big\n")) or b"")
                            # Lingering close, as real servers do: FIN, then discard what still arrives,
                            # so the answer is not destroyed by a reset.
                            writer.write_eof()
                            try:
                                async with asyncio.timeout(5):
                                    while await reader.read(65536):
                                        pass
                            except TimeoutError:
                                pass
                            return
                    elif type(event) is h11.Data:
                        body += event.data
                    elif type(event) is h11.EndOfMessage:
                        break
                    else:
                        return
                assert request is not None
                await self._respond(conn, writer, request, bytes(body))
                if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except (ConnectionError, h11.ProtocolError):
            return
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _respond(
        self, conn: h11.Connection, writer: asyncio.StreamWriter, request: h11.Request, body: bytes
    ) -> None:
        target = request.target.decode()
        parts = urlsplit(target)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        headers = [(k.decode(), v.decode("latin-1")) for k, v in request.headers]
        self.requests.append({"method": request.method.decode(), "target": target, "headers": headers})

        def send(event: Any) -> None:
            data = conn.send(event)
            if data:
                writer.write(data)

        path = parts.path
        if request.method == b"OPTIONS":
            send(
                h11.Response(
                    status_code=405, headers=[("allow", "GET, POST, DELETE"), ("content-length", "0")]
                )
            )
            send(h11.EndOfMessage())
        elif path == "/hangup":
            writer.close()
            raise ConnectionError("hangup requested")
        if path.startswith("/status/"):
            send(h11.Response(status_code=int(path.rsplit("/", 1)[1]), headers=[("content-length", "0")]))
            send(h11.EndOfMessage())
        elif path == "/slow":
            await asyncio.sleep(float(query.get("seconds", "1")))
            send(h11.Response(status_code=200, headers=[("content-length", "4")]))
            send(h11.Data(data=b"slow"))
            send(h11.EndOfMessage())
        elif path == "/bytes":
            total = int(query.get("n", "0"))
            chunked = query.get("chunked") == "1"
            framing = ("transfer-encoding", "chunked") if chunked else ("content-length", str(total))
            send(
                h11.Response(status_code=200, headers=[framing, ("content-type", "application/octet-stream")])
            )
            block = b"x" * 65536
            sent = 0
            while sent < total:
                piece = block[: min(len(block), total - sent)]
                send(h11.Data(data=piece))
                sent += len(piece)
                await writer.drain()
            send(h11.EndOfMessage())
        elif path == "/sse":
            queue: asyncio.Queue[bytes | None] = asyncio.Queue()
            self._sse_queues.append(queue)
            send(h11.Response(status_code=200, headers=[("content-type", "text/event-stream")]))
            await writer.drain()
            try:
                while True:
                    item = await queue.get()
                    if item is None:
                        break
                    send(h11.Data(data=item))
                    await writer.drain()
                send(h11.EndOfMessage())
            finally:
                self._sse_queues.remove(queue)
        else:
            payload = json.dumps(
                {
                    "method": request.method.decode(),
                    "target": target,
                    "headers": headers,
                    "body": body.decode("latin-1"),
                    "body_length": len(body),
                    "backend_port": self.port,
                }
            ).encode()
            send(
                h11.Response(
                    status_code=200,
                    headers=[
                        ("content-type", "application/json"),
                        ("content-length", str(len(payload))),
                        ("x-backend", "echo"),
                        ("x-secret-backend", "hide-me"),
                        ("keep-alive", "timeout=5"),
                    ],
                )
            )
            send(h11.Data(data=payload))
            send(h11.EndOfMessage())
        await writer.drain()


class WebSocketBackend:
    """Echo server: echoes text and binary; a text message `close:<code>` closes with that code."""

    def __init__(self, handler: Callable[[ServerConnection], Awaitable[None]] | None = None) -> None:
        self.host = "127.0.0.1"
        self.port = free_port()
        self.request_headers: list[dict[str, str]] = []
        self._handler = handler or self._echo
        self._thread = _LoopThread()
        self._server: Any = None
        self._thread.run(self._start())

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def _start(self) -> None:
        self._server = await serve(self._handle, self.host, self.port, max_size=32 * 1024 * 1024)

    async def _handle(self, websocket: ServerConnection) -> None:
        assert websocket.request is not None
        self.request_headers.append({k.lower(): v for k, v in websocket.request.headers.raw_items()})
        await self._handler(websocket)

    @staticmethod
    async def _echo(websocket: ServerConnection) -> None:
        try:
            async for message in websocket:
                if isinstance(message, str) and message.startswith("close:"):
                    await websocket.close(int(message.split(":", 1)[1]), "requested")
                    return
                await websocket.send(message)
        except ConnectionClosed:
            return

    def close(self) -> None:
        async def stop() -> None:
            self._server.close()
            await self._server.wait_closed()

        self._thread.run(stop())
        self._thread.stop()


class WsgiBackend:
    """wsgiref answering every request with JSON of its WSGI environ's HTTP_* keys and PATH_INFO: how a
    WSGI/CGI application reads the headers it got (`-` and `_` both become `_`)."""

    def __init__(self) -> None:
        self.host = "127.0.0.1"
        self.port = free_port()
        self.environs: list[dict[str, str]] = []
        self._server = wsgiref.simple_server.make_server(
            self.host, self.port, self._app, handler_class=_QuietWsgiHandler
        )
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        seen = {k: v for k, v in environ.items() if k.startswith("HTTP_") or k == "PATH_INFO"}
        self.environs.append(seen)
        body = json.dumps(seen).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


class _QuietWsgiHandler(wsgiref.simple_server.WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class RawUpstream:
    """A keep-alive server on a raw socket, one thread per connection; `_exchanges(sock)` (the subclass's)
    reads requests and writes whatever bytes the test needs, well-formed or not."""

    def __init__(self) -> None:
        self.port = free_port()
        self.connections_accepted = 0
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._stop = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self._stop = True
        self._listener.close()

    def _accept(self) -> None:
        while not self._stop:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            self.connections_accepted += 1
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        try:
            self._exchanges(sock)
        except OSError:
            pass  # the proxy dropped this connection (what some tests expect it to do)
        finally:
            sock.close()

    def _exchanges(self, sock: socket.socket) -> None:
        raise NotImplementedError
