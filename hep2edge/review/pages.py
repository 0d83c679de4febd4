"""The review app's routes: worklist (+ its live rows), specimen page, review form, files, login."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, unquote, urlencode

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, RedirectResponse, Response

from hep2edge.errors import ConfigError
from hep2edge.labels import INTENSITIES, PATTERNS
from hep2edge.review.app import AppSettings, set_token_cookie
from hep2edge.review.db import ResultsDB
from hep2edge.review.files import png_problem, served_file
from hep2edge.review.reviews import ConflictError, ReviewRequest, UnknownSpecimenError, record_review
from hep2edge.review.security import REVIEWER_COOKIE, csrf_problem, token_ok
from hep2edge.review.verdicts import parse_intensity_name, parse_patterns
from hep2edge.review.views import next_to_review, saved_review, specimen_view
from hep2edge.review.worklist import SORTS, STATUSES, entries

router = APIRouter()
REVIEWER_COOKIE_DAYS = 30


def _store(request: Request) -> ResultsDB:
    return request.app.state.store  # type: ignore[no-any-return]


def _settings(request: Request) -> AppSettings:
    return request.app.state.settings  # type: ignore[no-any-return]


def render(request: Request, name: str, context: dict[str, Any], status_code: int = 200) -> Response:
    """A page, with what every page needs (RESULTS, the CSRF token)."""
    base = {"results": str(_store(request).results), "csrf": request.state.csrf}
    return request.app.state.templates.TemplateResponse(  # type: ignore[no-any-return]
        request, name, {**base, **context}, status_code=status_code)


def message(request: Request, status_code: int, title: str, line: str, **extra: Any) -> Response:
    return render(request, "message.html", {"title": title, "line": line, **extra}, status_code)


def _filters(status: str, pattern: str, sort: str) -> dict[str, str]:
    """The worklist filters, unknown values dropped."""
    return {"status": status if status in STATUSES else "", "pattern": pattern if pattern in PATTERNS else "",
            "sort": sort if sort in SORTS else "newest"}


def _rows_context(request: Request, filters: dict[str, str]) -> dict[str, Any]:
    settings = _settings(request)
    with _store(request).connect() as db:
        found = entries(db, **filters)
    return {"entries": found, "low_confidence": settings.low_confidence,
            "filtered": bool(filters["status"] or filters["pattern"])}


@router.get("/")
def worklist(request: Request, status: str = "", pattern: str = "", sort: str = "newest",
             saved: int = 0) -> Response:
    filters = _filters(status, pattern, sort)
    context = {**_rows_context(request, filters), **filters, "statuses": STATUSES, "patterns": PATTERNS,
               "sorts": SORTS, "query": urlencode(filters), "poll_ms": _settings(request).poll_ms,
               "saved": saved_review(_store(request), saved)}
    return render(request, "worklist.html", context)


@router.get("/rows")
def worklist_rows(request: Request, status: str = "", pattern: str = "", sort: str = "newest") -> Response:
    response = render(request, "rows.html", _rows_context(request, _filters(status, pattern, sort)))
    response.headers["X-Worklist"] = "rows"
    return response


@router.get("/specimen/{key}")
def specimen(request: Request, key: str, saved: int = 0) -> Response:
    view = specimen_view(_store(request), key)
    if view is None:
        return message(request, 404, "Not found", f"no specimen {key!r} in this RESULTS folder")
    current = view.entry.final
    context = {"view": view, "e": view.entry, "current": current, "patterns": PATTERNS, "intensities": INTENSITIES,
               "reviewer": _reviewer(request), "low_confidence": _settings(request).low_confidence,
               "base": view.entry.review.id if view.entry.review else 0,
               "verdict_at": f"{view.entry.verdict_at or 0.0:.6f}", "saved": saved_review(_store(request), saved)}
    return render(request, "specimen.html", context)


@router.post("/specimen/{key}/review")
async def review(request: Request, key: str) -> Response:
    form = await request.form()
    problem = csrf_problem(request, str(form.get("csrf", "")))
    if problem:
        return message(request, 403, "Refused", problem)
    store = _store(request)
    try:
        recorded = await run_in_threadpool(record_review, store, _review_request(key, form))
    except ConflictError as exc:
        return message(request, 409, "Conflict", str(exc), reload=f"/specimen/{quote(key, safe='')}")
    except UnknownSpecimenError as exc:
        return message(request, 404, "Not found", str(exc))
    except ConfigError as exc:
        return message(request, 400, "Not saved", str(exc), reload=f"/specimen/{quote(key, safe='')}")
    following = await run_in_threadpool(next_to_review, store, recorded.specimen)
    target = f"/specimen/{quote(following, safe='')}" if following else "/"
    response = RedirectResponse(f"{target}?saved={recorded.id}", status_code=303)
    response.set_cookie(REVIEWER_COOKIE, quote(recorded.reviewer), max_age=REVIEWER_COOKIE_DAYS * 86400,
                        httponly=True, samesite="strict")
    return response


def _review_request(key: str, form: FormData) -> ReviewRequest:
    """The form as a ReviewRequest; ConfigError for a malformed or unknown value."""
    try:
        base = int(str(form.get("base", "")))
        verdict_at = float(str(form.get("verdict_at", "")))
    except ValueError:
        raise ConfigError("the form is incomplete (base review or verdict time missing): reload the page") from None
    patterns: tuple[str, ...] = ()
    intensity = ""
    if form.get("action") == "correct":
        checked = [str(v) for v in form.getlist("pattern")]
        order = [p for p in str(form.get("order", "")).split(",") if p in checked]
        patterns = parse_patterns(order + [p for p in checked if p not in order])
        if not form.get("intensity"):
            raise ConfigError("choose an intensity")
        intensity = parse_intensity_name(str(form.get("intensity")))
    return ReviewRequest(key, str(form.get("reviewer", "")), patterns, intensity, str(form.get("comment", "")),
                         base, verdict_at)


def _reviewer(request: Request) -> str:
    return unquote(request.cookies.get(REVIEWER_COOKIE, ""))


@router.get("/files/{name}")
def files(request: Request, name: str) -> Response:
    path = served_file(_store(request).results, name)
    if path is None:
        return PlainTextResponse("not found", status_code=404)
    problem = png_problem(path)
    if problem:
        return PlainTextResponse(f"{name}: {problem}", status_code=422)
    return FileResponse(path, media_type="image/png", headers={"Cache-Control": "private, max-age=5"})


@router.get("/favicon.ico")
def favicon() -> Response:
    return Response(status_code=204)


@router.get("/login")
def login_page(request: Request, next: str = "/") -> Response:
    return render(request, "login.html", {"next": _local(next), "error": ""})


@router.post("/login")
async def login(request: Request) -> Response:
    form = await request.form()
    target = _local(str(form.get("next", "/")))
    problem = csrf_problem(request, str(form.get("csrf", "")))
    token = _settings(request).token
    if problem:
        return render(request, "login.html", {"next": target, "error": problem}, 403)
    if token is None:
        return RedirectResponse(target, status_code=303)
    if not token_ok(token, str(form.get("token", "")).strip()):
        return render(request, "login.html", {"next": target, "error": "wrong access token"}, 401)
    response = RedirectResponse(target, status_code=303)
    set_token_cookie(response, token)
    return response


def _local(target: str) -> str:
    """A redirect target on this app only (no scheme, no host, no `//`)."""
    return target if target.startswith("/") and not target.startswith("//") and "\\" not in target else "/"
