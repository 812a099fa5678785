"""A tiny HTTPS server on loopback (self-signed certificate for 127.0.0.1) that serves JSON documents set
by the test: stands in for a client's web site hosting its Client ID Metadata Document. Tests only."""

from __future__ import annotations

import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.harness.tls_material import write_test_ca


class DocumentServer:
    def __init__(self, directory: Path) -> None:
        material = write_test_ca(directory, dns_names=(), ip_addresses=("127.0.0.1",), valid_days=1)
        # Trusted by the control plane as its CA file (SSL_CERT_FILE); the server presents the leaf.
        self.cert_path, cert_path, key_path = material.ca_path, material.cert_path, material.key_path
        self.documents: dict[str, tuple[Any, dict[str, str]]] = {}
        self.fetches: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_GET(self) -> None:
                server.fetches.append(self.path)
                entry = server.documents.get(self.path)
                body = json.dumps(entry[0]).encode() if entry else b'{"message": "not found"}'
                self.send_response(200 if entry else 404)
                for name, value in (entry[1] if entry else {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_path, key_path)
        self._httpd.socket = context.wrap_socket(self._httpd.socket, server_side=True)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self._httpd.server_address[1]}"

    def start(self) -> DocumentServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
