"""Running the dashboard: bind the socket (so a busy port is one clear error), then serve with uvicorn."""

from __future__ import annotations

import ipaddress
import secrets
import socket
from collections.abc import Callable

from hwloop.errors import ConfigError
from hwloop.serve.app import build_app
from hwloop.serve.roots import Roots


def is_loopback(host: str) -> bool:
    """An IPv4 loopback address or ``localhost``: served without a token, with the Host header checked.
    (IPv6 ``::1`` counts as any other address and needs a token: Starlette's Host check cannot parse
    ``[::1]:port``.)"""
    if host == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.version == 4 and ip.is_loopback


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0 picks a free one)."""
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port {port} is not a TCP port (0..65535)")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ConfigError(f"--host {host!r} cannot be resolved ({exc}); give an address such as 127.0.0.1") from exc
    fam, _, _, _, addr = infos[0]
    sock = socket.socket(fam, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror}); choose another --port or --host") from exc
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def resolve_token(host: str, token: str | None) -> str | None:
    """The token to require: the given one; a fresh one when binding beyond the loopback without one."""
    if token is not None:
        if len(token) < 16:
            raise ConfigError("--token must be at least 16 characters (or leave it out to have one generated)")
        return token
    return None if is_loopback(host) else secrets.token_urlsafe(24)


def serve(
    folders: list[str], *, host: str, port: int, token: str | None, stall_s: float, announce: Callable[[str], None]
) -> None:
    """Serve until interrupted. ``announce`` gets the URL line (with the token, if one is required)."""
    import uvicorn

    if not stall_s > 0:
        raise ConfigError(f"--stall-s {stall_s} must be a positive number of seconds")
    roots = Roots.from_args(folders)
    tok = resolve_token(host, token)
    loop = is_loopback(host)
    app = build_app(roots, token=tok, loopback=loop and tok is None, stall_s=stall_s, bound_host=host)
    sock = bind(host, port)
    real_port = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{real_port}/" + (f"?token={tok}" if tok else "")
    announce(url)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
