"""The monitoring endpoint of a long-running fedehr process: /metrics and /healthz.

The server and every site daemon serve one small HTTP endpoint for
Prometheus. Their metrics come from collectors evaluated at scrape time over
the state each side already persists (the server's status.json and
checkpoints, the site's privacy ledger and activity log), so they survive
restarts and need nothing from Flower's short-lived per-message processes.

    GET /metrics   Prometheus text format, from a dedicated CollectorRegistry
    GET /healthz   200 {"status": "ok"} when the process's check passes,
                   503 {"status": "down"} otherwise (e.g. its Flower child died)

The endpoint runs in a daemon thread, so it never keeps a process alive, and
`stop()` closes it.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from fedehr.shared.errors import FedEHRError

log = logging.getLogger("fedehr.monitoring")

HealthCheck = Callable[[], bool]


class MonitoringError(FedEHRError):
    """The monitoring endpoint could not be served."""


class MonitoringServer:
    """/metrics and /healthz on `host:port` (port 0 picks a free one), in a daemon thread."""

    def __init__(self, collectors: Iterable[Collector], *, port: int, host: str = "0.0.0.0",
                 health: HealthCheck | None = None, service: str = "fedehr"):
        self.registry = CollectorRegistry(auto_describe=False)
        for collector in collectors:
            self.registry.register(collector)
        self.host, self.port = host, int(port)
        self.health = health or (lambda: True)
        self.service = service
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> MonitoringServer:
        try:
            self._httpd = ThreadingHTTPServer((self.host, self.port), _handler(self))
        except OSError as exc:
            raise MonitoringError(f"cannot serve metrics on {self.host}:{self.port} "
                                  f"({exc.strerror or exc})", where="metrics_port",
                                  fix="pick a free port for metrics_port, or remove the key"
                                  ) from None
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.1},  # quick stop()
                                        name=f"monitoring-{self.port}", daemon=True)
        self._thread.start()
        return self

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}"

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> MonitoringServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def healthy(self) -> bool:
        try:
            return bool(self.health())
        except Exception:  # a failing check is a failed check, not a crashed endpoint
            log.exception("health check of %s failed", self.service)
            return False


def _handler(server: MonitoringServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                try:
                    body, status = generate_latest(server.registry), 200
                except Exception as exc:  # unreadable state: fail the scrape, say why
                    log.exception("metrics collection failed")
                    self._send(500, "text/plain; charset=utf-8",
                               f"metrics collection failed: {exc}\n".encode())
                    return
                self._send(status, CONTENT_TYPE_LATEST, body)
            elif path == "/healthz":
                ok = server.healthy()
                body = json.dumps({"status": "ok" if ok else "down",
                                   "service": server.service}).encode()
                self._send(200 if ok else 503, "application/json", body)
            else:
                self._send(404, "text/plain; charset=utf-8", b"not found: try /metrics or "
                           b"/healthz\n")

        def _send(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args) -> None:  # noqa: A002 (stdlib signature)
            log.debug("%s %s", self.address_string(), format % args)

    return Handler
