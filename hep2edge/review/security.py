"""Who may use the review app: loopback by default, an access token elsewhere, CSRF checks on every POST.

- Bound to a loopback address, the app answers only requests whose Host is a loopback name (DNS rebinding).
- Any other address needs a token (given, or generated and printed once). A browser presents it once as
  `?token=...` (or through /login) and then carries it in an HttpOnly, SameSite=Strict cookie; scripts may
  send `Authorization: Bearer ...`.
- Every state-changing request must carry the CSRF token of its page (double-submit: a form field equal to
  a SameSite=Strict cookie) and, when the browser sends one, an Origin equal to the app's own.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from urllib.parse import urlsplit

from starlette.requests import Request

from hep2edge.errors import ConfigError

TOKEN_COOKIE = "h2e_token"
CSRF_COOKIE = "h2e_csrf"
REVIEWER_COOKIE = "h2e_reviewer"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
MIN_TOKEN_CHARS = 16
OPEN_PATHS = ("/login", "/static/", "/favicon.ico")
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self'; style-src 'self'; script-src 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # "no-referrer" would make browsers send `Origin: null` on our own POSTs
    "Cache-Control": "no-store",
}


def is_loopback(host: str) -> bool:
    """Whether binding to `host` keeps the app on this machine."""
    if host.strip("[]") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def resolve_token(host: str, token: str | None, new_token: bool) -> tuple[str | None, bool]:
    """(the token the app requires or None, whether it was generated); ConfigError when one is needed."""
    if token is not None:
        token = token.strip()
        if len(token) < MIN_TOKEN_CHARS:
            raise ConfigError(f"`token` must be at least {MIN_TOKEN_CHARS} characters (or use `new_token`)")
        return token, False
    if new_token:
        return secrets.token_urlsafe(24), True
    if not is_loopback(host):
        raise ConfigError(f"`host` {host} lets other machines reach the review app: it needs an access token "
                          "(`new_token` to generate one, or `token` TOKEN / HEP2EDGE_REVIEW_TOKEN)")
    return None, False


def allowed_hosts(host: str) -> list[str]:
    """Host header values the app answers: loopback names when bound to loopback, else any."""
    return list(LOOPBACK_HOSTS) if is_loopback(host) else ["*"]


def presented_token(request: Request) -> str:
    """The token a request carries (bearer header, else ?token=, else the cookie), or ''."""
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.query_params.get("token") or request.cookies.get(TOKEN_COOKIE, "")


def token_ok(expected: str, given: str) -> bool:
    return bool(given) and hmac.compare_digest(expected.encode(), given.encode())


def new_csrf() -> str:
    return secrets.token_urlsafe(24)


def csrf_problem(request: Request, form_token: str) -> str | None:
    """Why a state-changing request fails the CSRF checks, or None."""
    cookie = request.cookies.get(CSRF_COOKIE, "")
    if not cookie or not form_token or not hmac.compare_digest(cookie.encode(), form_token.encode()):
        return "the form's security token is missing or stale: reload the page and try again"
    origin = request.headers.get("origin")
    if origin and urlsplit(origin).netloc != request.headers.get("host", ""):
        return f"request from another site ({origin}) refused"
    return None
