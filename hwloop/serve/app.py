"""The dashboard's web application (Starlette): a page, its static files and read-only JSON endpoints.

Only GET (and HEAD) requests are routed; there is no endpoint that writes anything. Files are named by
(served folder, relative path) and checked by :class:`hwloop.serve.roots.Roots`. The JavaScript the page
needs (plotly.min.js from the plotly wheel, and the dashboard's own script) is served from the installed
packages, so the page works offline. Endpoints and payloads: ``docs/serve.md``.
"""

from __future__ import annotations

import hmac
import math
import threading
import time
from http.cookies import SimpleCookie
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import numpy as np
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hwloop.errors import HwloopError
from hwloop.serve import rundata
from hwloop.serve.roots import Refused, Roots
from hwloop.serve.wear import WearCache

TOKEN_COOKIE = "hwloop_token"
#: how often the page polls the served JSON (ms); also what the latency benchmark polls at
POLL_MS = 2000
#: largest block-mean factor a map request may ask for, and the default (128 x 128 -> 64 x 64)
MAX_FACTOR = 16
DEFAULT_FACTOR = 2
MAX_COMPARE = 64
LOOPBACK_HOSTS = ["127.0.0.1", "localhost"]

_STATIC = {
    "dashboard.js": "application/javascript",
    "dashboard.css": "text/css",
}
_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self' 'unsafe-eval'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data: blob:; connect-src 'self'; frame-ancestors 'none'"
    ),
}


def plotly_js_path() -> Path:
    """plotly.min.js as shipped inside the plotly wheel."""
    import plotly

    p = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    if not p.is_file():
        raise HwloopError(f"the installed plotly has no {p}; reinstall it with pip install -e '.[serve]'")
    return p


def clean(o: Any) -> Any:
    """JSON-safe copy: NaN/inf -> None, numpy scalars -> Python."""
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {str(k): clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [clean(v) for v in o]
    if isinstance(o, np.generic):
        return clean(o.item())
    if isinstance(o, Path):
        return str(o)
    return o


def _json(obj: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(clean(obj), status_code=status, headers={"Cache-Control": "no-store"})


def _error(msg: str, status: int) -> JSONResponse:
    return _json({"error": msg}, status)


class TokenGate:
    """ASGI middleware: every request must carry the token (``?token=``, ``Authorization: Bearer``,
    ``X-Hwloop-Token`` or the cookie set when the page was opened with ``?token=``)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token.encode()

    def _ok(self, value: str | None) -> bool:
        return value is not None and hmac.compare_digest(value.encode(), self.token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        q = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [None])[0]
        auth = headers.get("authorization", "")
        bearer = auth[7:] if auth.lower().startswith("bearer ") else None
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except Exception:  # a malformed Cookie header counts as no cookie
            cookie = SimpleCookie()
        from_cookie = cookie[TOKEN_COOKIE].value if TOKEN_COOKIE in cookie else None
        if not (self._ok(q) or self._ok(bearer) or self._ok(headers.get("x-hwloop-token")) or self._ok(from_cookie)):
            resp = _error("this dashboard needs its token: open the URL that `hwloop serve` printed", 401)
            await resp(scope, receive, send)
            return
        set_cookie = self._ok(q) and not self._ok(from_cookie)

        async def send_with_cookie(msg: Message) -> None:
            if set_cookie and msg["type"] == "http.response.start":
                c = f"{TOKEN_COOKIE}={self.token.decode()}; Path=/; HttpOnly; SameSite=Strict"
                msg["headers"] = [*msg.get("headers", []), (b"set-cookie", c.encode("latin-1"))]
            await send(msg)

        await self.app(scope, receive, send_with_cookie)


class SecurityHeaders:
    """ASGI middleware adding the headers in ``_SECURITY_HEADERS`` to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.extra = [(k.lower().encode(), v.encode()) for k, v in _SECURITY_HEADERS.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send2(msg: Message) -> None:
            if msg["type"] == "http.response.start":
                msg["headers"] = [*msg.get("headers", []), *self.extra]
            await send(msg)

        await self.app(scope, receive, send2)


class Dashboard:
    """The state behind the endpoints: the folders, a summary cache of unchanged logs, the wear counts."""

    def __init__(self, roots: Roots, stall_s: float = rundata.DEFAULT_STALL_S) -> None:
        self.roots = roots
        self.stall_s = stall_s
        self.wear = WearCache()
        self.snapshots = rundata.SnapshotCache()
        self._lock = threading.Lock()
        self._summaries: dict[Path, tuple[tuple[int, int, int], dict]] = {}

    # ------------------------------------------------------------------ helpers
    def _run(self, request: Request) -> tuple[int, str, Path]:
        rid = request.query_params.get("id", "")
        return self._parse_id(rid)

    def _parse_id(self, rid: str) -> tuple[int, str, Path]:
        root_s, sep, rel = rid.partition(":")
        if not sep or not root_s.isdigit():
            raise Refused(f"run id {rid!r} is not of the form <folder index>:<relative path>")
        root = int(root_s)
        return root, rel, self.roots.resolve(root, rel)

    def _summary(self, root: int, rel: str, p: Path) -> dict:
        try:
            ident = rundata.file_identity(p)
        except OSError as exc:
            return {
                "id": f"{root}:{rel}",
                "root": root,
                "rel": rel,
                "name": p.stem,
                "status": "error",
                "error": f"{p}: {exc}",
            }
        with self._lock:
            hit = self._summaries.get(p)
        if hit is not None and hit[0] == ident and hit[1].get("status") not in ("running", "error"):
            return hit[1]
        row = rundata.summary(p, rel, root, self.stall_s)
        with self._lock:
            self._summaries[p] = (ident, row)
        return row

    @staticmethod
    def _int(request: Request, name: str, default: int, lo: int, hi: int) -> int:
        raw = request.query_params.get(name)
        if raw is None:
            return default
        try:
            v = int(raw)
        except ValueError:
            raise Refused(f"{name}={raw!r} is not an integer") from None
        if not lo <= v <= hi:
            raise Refused(f"{name}={v} is outside {lo}..{hi}")
        return v

    # ------------------------------------------------------------------ endpoints
    def index(self, request: Request) -> Response:
        page = resources.files("hwloop.serve").joinpath("static/index.html").read_text(encoding="utf-8")
        return Response(
            page.replace("{{POLL_MS}}", str(POLL_MS)), media_type="text/html", headers={"Cache-Control": "no-store"}
        )

    def static(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name == "plotly.min.js":
            return FileResponse(
                plotly_js_path(), media_type="application/javascript", headers={"Cache-Control": "max-age=86400"}
            )
        if name not in _STATIC:
            return _error(f"no static file {name!r}", 404)
        body = resources.files("hwloop.serve").joinpath(f"static/{name}").read_bytes()
        return Response(body, media_type=_STATIC[name], headers={"Cache-Control": "no-cache"})

    def runs(self, request: Request) -> Response:
        files = self.roots.run_files()
        rows = [self._summary(root, rel, p) for root, rel, p in files]
        present = {p for _, _, p in files}
        with self._lock:
            for gone in set(self._summaries) - present:
                del self._summaries[gone]
                self.wear.forget(gone)
        return _json(
            {
                "folders": [str(d) for d in self.roots.dirs],
                "runs": rows,
                "sweeps": self.roots.sweeps(),
                "now_s": time.time(),
                "poll_ms": POLL_MS,
            }
        )

    def run(self, request: Request) -> Response:
        root, rel, p = self._run(request)
        return _json(rundata.detail(p, rel, root, self.stall_s))

    def tile_map(self, request: Request) -> Response:
        _root, _rel, p = self._run(request)
        snap = self._int(request, "snap", -1, -(1 << 20), 1 << 20)
        tile = self._int(request, "tile", 0, 0, 1 << 16)
        factor = self._int(request, "factor", DEFAULT_FACTOR, 1, MAX_FACTOR)
        wear = self.wear.programs(p, tile)
        return _json(rundata.tile_map(p, snap, tile, factor, wear, self.snapshots))

    def hist(self, request: Request) -> Response:
        _root, _rel, p = self._run(request)
        snap = self._int(request, "snap", -1, -(1 << 20), 1 << 20)
        return _json(rundata.level_histogram(p, snap, self.snapshots))

    def compare(self, request: Request) -> Response:
        ids = request.query_params.getlist("id")
        if not ids:
            raise Refused("compare needs at least one id= (a run id from /api/runs)")
        if len(ids) > MAX_COMPARE:
            raise Refused(f"compare takes at most {MAX_COMPARE} runs")
        runs = [(rid, self._parse_id(rid)[2]) for rid in ids]
        return _json(rundata.compare(runs))


#: HDF5 shares one file handle per file within a process, and an SWMR open and a plain open of the same
#: file cannot coexist (the check before each open is a plain one): so requests that read logs take turns.
#: h5py serialises its calls under one lock anyway, so this costs no parallelism.
H5_TURN = threading.Lock()


def _guard(fn: Any, reads_logs: bool = True) -> Any:
    """Turn refusals and log errors into JSON error responses; the server keeps serving."""

    def endpoint(request: Request) -> Response:
        try:
            if not reads_logs:
                return fn(request)
            with H5_TURN:
                return fn(request)
        except Refused as exc:
            return _error(str(exc), 403)
        except FileNotFoundError as exc:
            return _error(f"{exc}", 404)
        except HwloopError as exc:
            msg = str(exc)
            return _error(msg, 404 if "does not exist" in msg else 422)
        except OSError as exc:
            return _error(f"cannot read the file ({exc})", 422)
        except (KeyError, ValueError, TypeError, IndexError) as exc:  # a log with unexpected content
            return _error(f"unexpected run log content ({type(exc).__name__}: {exc})", 422)

    return endpoint


def build_app(
    roots: Roots,
    *,
    token: str | None = None,
    loopback: bool = True,
    stall_s: float = rundata.DEFAULT_STALL_S,
    bound_host: str | None = None,
) -> Starlette:
    """The ASGI app serving ``roots``. With ``token`` every request must carry it; on a loopback bind
    only Host headers naming the loopback are accepted (no DNS rebinding from a web page)."""
    d = Dashboard(roots, stall_s=stall_s)
    get = ["GET"]
    routes = [
        Route("/", _guard(d.index, reads_logs=False), methods=get),
        Route("/static/{name}", _guard(d.static, reads_logs=False), methods=get),
        Route("/api/runs", _guard(d.runs), methods=get),
        Route("/api/run", _guard(d.run), methods=get),
        Route("/api/map", _guard(d.tile_map), methods=get),
        Route("/api/hist", _guard(d.hist), methods=get),
        Route("/api/compare", _guard(d.compare), methods=get),
    ]
    middleware = [Middleware(SecurityHeaders)]
    if loopback:
        hosts = [*LOOPBACK_HOSTS, *([bound_host] if bound_host and bound_host not in LOOPBACK_HOSTS else [])]
        middleware.append(Middleware(TrustedHostMiddleware, allowed_hosts=hosts))
    if token:
        middleware.append(Middleware(TokenGate, token=token))
    middleware.append(Middleware(GZipMiddleware, minimum_size=1024))
    app = Starlette(routes=routes, middleware=middleware)
    app.state.dashboard = d
    return app
