"""``cameo serve``: uvicorn over :func:`service.create_app`, with the transport rules.

* A non-loopback address is refused without TLS (``--tls-cert``/``--tls-key``): enrollment
  uploads are biometric data, and signed requests are not confidential.
* Several workers share the registry through its database (SQLite on one host, PostgreSQL for
  several hosts): replay nonces, pending enrollments and releases live there; revocation and
  the likeness index's change counter are read inside each decision's transaction.
* The server makes no key: every registry key is made by ``cameo init``.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path
from typing import Any

import uvicorn

from cameo._errors import BadInput


def is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, tls_cert: Path | None, tls_key: Path | None) -> None:
    if (tls_cert is None) != (tls_key is None):
        raise BadInput("give both --tls-cert and --tls-key, or neither")
    if tls_cert is None and not is_loopback(host):
        raise BadInput(f"refusing to serve {host} over plain HTTP: enrollment uploads are biometric data; "
                       "give --tls-cert and --tls-key (or bind 127.0.0.1 behind a TLS proxy)")
    for p in (tls_cert, tls_key):
        if p is not None and not p.is_file():
            raise BadInput(f"no such file: {p.name}")


def serve(home: Any, *, host: str, port: int, workers: int, tls_cert: Path | None = None,
          tls_key: Path | None = None, log_level: str = "info") -> None:
    if not 1 <= workers <= 64:
        raise BadInput("--workers must be between 1 and 64")
    if not 0 < port < 65536:
        raise BadInput("--port must be between 1 and 65535")
    check_bind(host, tls_cert, tls_key)
    home.require()
    from cameo.registry import engine_for

    engine_for(home)  # the schema is there and the keys are readable, before any worker starts
    try:
        with socket.create_server((host, port)):
            pass
    except OSError as e:
        raise BadInput(f"cannot listen on {host}:{port}: {e.strerror}") from e
    os.environ["CAMEO_HOME"] = str(home.path)
    os.environ["CAMEO_DATABASE_URL"] = home.db_url
    config = NoDelayConfig("service:create_app", factory=True, host=host, port=port, workers=workers,
                           ssl_certfile=str(tls_cert) if tls_cert else None,
                           ssl_keyfile=str(tls_key) if tls_key else None, log_level=log_level, access_log=True,
                           server_header=False, timeout_keep_alive=5, limit_concurrency=256,
                           timeout_graceful_shutdown=10, h11_max_incomplete_event_size=64 << 10)
    server = uvicorn.Server(config)
    if workers > 1:
        from uvicorn.supervisors import Multiprocess

        Multiprocess(config, sockets=[config.bind_socket()]).run()
    else:
        server.run(sockets=[config.bind_socket()])


class NoDelayConfig(uvicorn.Config):
    """uvicorn's own listening socket is made as ``socket.socket(family)``, so its ``proto`` is 0
    and asyncio (which sets TCP_NODELAY only on sockets whose proto is IPPROTO_TCP) leaves Nagle
    on for every connection it accepts: with several workers each small response then waited for
    the client's delayed ACK (44 ms per round trip, measured with bench/serve.py; 0.05 ms after).
    The same socket, re-made from its descriptor, reports IPPROTO_TCP."""

    def bind_socket(self) -> socket.socket:
        sock = super().bind_socket()
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock = socket.socket(fileno=sock.detach())
            sock.set_inheritable(True)
        return sock



