"""The review web app (FastAPI, server-rendered Jinja2 pages, no build step): `create_app(AppSettings)`.

Routes live in hep2edge.review.pages; this module wires the middleware: the Host check, the access token,
the CSRF cookie and the security headers on every response.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlencode

import python_multipart  # noqa: F401 - starlette parses forms with it, lazily; a missing one is said here
from fastapi import FastAPI
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from hep2edge.review.db import ResultsDB
from hep2edge.review.icap import describe, icap_label
from hep2edge.review.security import (
    CSRF_COOKIE,
    LOOPBACK_HOSTS,
    OPEN_PATHS,
    SECURITY_HEADERS,
    TOKEN_COOKIE,
    new_csrf,
    presented_token,
    token_ok,
)
from hep2edge.review.worklist import LOW_CONFIDENCE

HERE = Path(__file__).parent
DEFAULT_POLL_MS = 2000


@dataclass(frozen=True)
class AppSettings:
    """What the app serves and how: RESULTS, the access token (None: none needed), Host names, thresholds."""

    results: Path
    token: str | None = None
    allowed_hosts: tuple[str, ...] = LOOPBACK_HOSTS
    low_confidence: float = LOW_CONFIDENCE
    poll_ms: int = DEFAULT_POLL_MS


def _when(epoch: float | None) -> str:
    if not epoch:
        return ""
    return dt.datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M:%S")


def _pct(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.0f}%"


def make_templates() -> Jinja2Templates:
    """Jinja2 templates (autoescaped) with the filters the pages use."""
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.filters.update(when=_when, pct=_pct, icap=icap_label, describe=describe,
                                 path=lambda value: quote(str(value), safe=""))
    return templates


def create_app(settings: AppSettings) -> FastAPI:
    """The app over `settings.results` (checked now: a bad RESULTS raises ConfigError before anything runs)."""
    from hep2edge.review.pages import router

    app = FastAPI(title="hep2edge review", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.settings = settings
    app.state.store = ResultsDB(settings.results)
    app.state.templates = make_templates()
    app.middleware("http")(_guard)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(settings.allowed_hosts))  # outermost
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    app.include_router(router)
    return app


async def _guard(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    """The access token (when one is set), then the CSRF cookie and the security headers."""
    settings: AppSettings = request.app.state.settings
    if settings.token and not request.url.path.startswith(OPEN_PATHS):
        refused = _check_token(request, settings.token)
        if refused is not None:
            return refused
    csrf = request.cookies.get(CSRF_COOKIE) or new_csrf()
    request.state.csrf = csrf
    response = await call_next(request)
    if request.cookies.get(CSRF_COOKIE) != csrf:
        response.set_cookie(CSRF_COOKIE, csrf, httponly=True, samesite="strict")
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def _check_token(request: Request, token: str) -> Response | None:
    """None if the request carries the token; a token in the URL becomes a cookie (and leaves the URL)."""
    if not token_ok(token, presented_token(request)):
        if request.method == "GET":
            return RedirectResponse(f"/login?{urlencode({'next': request.url.path})}", status_code=303)
        return PlainTextResponse("access token required: open the app's link or /login", status_code=401)
    if "token" in request.query_params:
        rest = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
        response = RedirectResponse(request.url.path + (f"?{urlencode(rest)}" if rest else ""), status_code=303)
        set_token_cookie(response, token)
        return response
    return None


def set_token_cookie(response: Response, token: str) -> None:
    response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict")
