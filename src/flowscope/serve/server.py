"""The web server: uvicorn running the ASGI app in a background thread, with explicit start/stop.

``start`` binds the listening socket itself, before the thread starts, so a port in use is a
``ConfigError`` naming ``web.port`` right away, and port 0 gives the bound port at once. ``stop``
first ends the live streams (a server cannot finish while a stream is open), then asks uvicorn to
exit and waits for its thread.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import uvicorn

from flowscope.errors import ConfigError
from flowscope.serve.app import build_app
from flowscope.serve.dashboard import Dashboard

if TYPE_CHECKING:
    from flowscope.pipeline import Service

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WebConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    shutdown_timeout_s: int = 3


def _listen(host: str, port: int) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise ConfigError(f"web.host: cannot resolve {host!r} ({error})") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and host in ("::", ""):
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # :: serves IPv4 too
        sock.bind(address)
        sock.listen(128)
    except OSError as error:
        sock.close()
        raise ConfigError(f"web.port: cannot listen on {host}:{port} ({error.strerror or error})") from None
    sock.setblocking(False)
    return sock


class WebServer:
    """Serves ``app`` on ``config.host:config.port`` from a background thread."""

    def __init__(self, config: WebConfig, app: Any, dashboard: Dashboard | None = None) -> None:
        self.config = config
        self.app = app
        self.dashboard = dashboard
        self._server: uvicorn.Server | None = None
        self._socket: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self.bound_address: tuple[str, int] = ("", 0)

    @property
    def url(self) -> str:
        host, port = self.bound_address
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}/"

    def start(self, timeout_s: float = 10.0) -> None:
        self._socket = _listen(self.config.host, self.config.port)
        host, port = self._socket.getsockname()[:2]
        self.bound_address = (str(host), int(port))
        settings = uvicorn.Config(
            self.app, log_config=None, access_log=False, lifespan="off", loop="asyncio", http="h11",
            timeout_graceful_shutdown=self.config.shutdown_timeout_s, log_level="warning",
            server_header=False,
        )
        self._server = uvicorn.Server(settings)
        if self.dashboard is not None:
            self.dashboard.start()
        sockets = [self._socket]
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": sockets},
                                        name="flowscope-web", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the web server did not start on {self.url}")
            time.sleep(0.01)
        log.info("dashboard on %s", self.url)

    def stop(self) -> None:
        if self.dashboard is not None:
            self.dashboard.stop()
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=self.config.shutdown_timeout_s + 5)
            if self._thread.is_alive():
                log.warning("the web server did not stop in time")
            self._thread = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        self._server = None


def start_dashboard(service: Service) -> WebServer:
    """Build the app over a running service and serve it on web.host:web.port."""
    dashboard = Dashboard.from_service(service)
    server = WebServer(WebConfig(service.config.web_host, service.config.web_port), build_app(dashboard), dashboard)
    server.start()
    return server
