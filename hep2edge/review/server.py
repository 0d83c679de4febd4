"""Serving the review app with uvicorn on a socket bound first (a port in use is one line, not a traceback)."""

from __future__ import annotations

import errno
import signal
import socket

import uvicorn
from fastapi import FastAPI

from hep2edge.errors import ConfigError


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0: any free one); ConfigError when it cannot be had."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"`host` {host}: not an address of this machine ({exc.strerror})") from exc
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(f"{host}:{port} is already in use (another review app or program); pass another "
                              "`port`") from exc
        raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror})") from exc
    return sock


def url_of(sock: socket.socket, host: str) -> str:
    """The address a browser opens for a socket bound to `host`."""
    port = sock.getsockname()[1]
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
    return f"http://[{shown}]:{port}/" if ":" in shown else f"http://{shown}:{port}/"


def make_server(app: FastAPI) -> uvicorn.Server:
    """A quiet uvicorn server for `app` (no access log; errors still logged)."""
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", server_header=False)
    return uvicorn.Server(config)


def serve(app: FastAPI, sock: socket.socket) -> None:
    """Serve until SIGINT/SIGTERM, then return (uvicorn finishes open requests first).

    uvicorn raises the signal it stopped on again once it has shut down; these handlers make that a return.
    """
    previous = signal.signal(signal.SIGTERM, _stopped)
    try:
        make_server(app).run(sockets=[sock])
    except (KeyboardInterrupt, _Stopped):
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)


class _Stopped(Exception):
    """SIGTERM after uvicorn's shutdown."""


def _stopped(signum: int, frame: object) -> None:
    raise _Stopped
