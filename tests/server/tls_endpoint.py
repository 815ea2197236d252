"""A TLS endpoint on loopback holding a consortium's superlink.pem: all of a SuperLink
(or registry) that a pre-flight TLS handshake talks to."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def tls_endpoint(pki: Path, port: int = 0) -> Iterator[int]:
    """Serve TLS handshakes on 127.0.0.1:port (0: a free one); yields the port."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki / "superlink.pem", pki / "superlink.key")
    context.set_alpn_protocols(["h2"])
    server = socket.create_server(("127.0.0.1", port))

    def serve():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with contextlib.suppress(ssl.SSLError, OSError), \
                    context.wrap_socket(conn, server_side=True):
                pass
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield server.getsockname()[1]
    finally:
        server.close()
