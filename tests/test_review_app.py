"""The review web app at the HTTP level (FastAPI TestClient): worklist, specimen page, reviews, security."""

from __future__ import annotations

import json
import os
import re
import sqlite3
from pathlib import Path

import pytest
from review_support import form_fields, results_fixture, review_template_fixture, reviews  # noqa: F401
from runtime_support import start

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient

from hep2edge.review.app import AppSettings, create_app
from hep2edge.review.db import ResultsDB
from hep2edge.review.reviews import ReviewRequest, record_review

TOKEN = "a-long-enough-test-token"


def _client(results: Path, token: str | None = None) -> TestClient:
    return TestClient(create_app(AppSettings(results, token)), base_url="http://127.0.0.1")


@pytest.fixture
def client(results: Path) -> TestClient:
    return _client(results)


def _post(client: TestClient, key: str, **fields: object) -> tuple[int, str, str]:
    """Open the specimen page, then post its form with `fields` on top; (status, location, body)."""
    form: dict[str, object] = {**form_fields(client.get(f"/specimen/{key}").text), "reviewer": "alice",
                               "action": "confirm", **fields}
    response = client.post(f"/specimen/{key}/review", data=form, follow_redirects=False)
    return response.status_code, response.headers.get("location", ""), response.text


def test_worklist_lists_every_specimen_with_verdict_flags_and_filters(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    for key in ("00001", "00002", "00003", "00004", "slide_a"):
        assert f'data-key="{key}"' in page.text
    row = page.text.split('data-key="00004"')[1].split("</tr>")[0]
    assert "incomplete" in row and "new" in row and '"num">3<' in row
    assert _post(client, "00001")[0] == 303
    confirmed = client.get("/rows?status=confirmed").text
    assert 'data-key="00001"' in confirmed and 'data-key="00002"' not in confirmed
    assert 'data-key="00001"' not in client.get("/rows?status=new").text
    assert client.get("/rows").headers["X-Worklist"] == "rows"


def test_worklist_is_newest_first(client: TestClient, results: Path) -> None:
    with sqlite3.connect(results / "results.db") as db:
        db.execute("UPDATE results SET analysed_at = '2099-01-01T00:00:00+00:00' WHERE stem = '00002_p1'")
    assert re.findall(r'data-key="([^"]+)"', client.get("/rows").text)[0] == "00002"
    with sqlite3.connect(results / "results.db") as db:
        db.execute("UPDATE results SET analysed_at = '2100-01-01T00:00:00+00:00' WHERE stem = 'slide_a'")
    assert re.findall(r'data-key="([^"]+)"', client.get("/rows").text)[:2] == ["slide_a", "00002"]


def test_specimen_page_shows_overlays_masks_probabilities_and_tile_evidence(client: TestClient) -> None:
    page = client.get("/specimen/00001").text
    assert page.count('class="zoomable overlay"') == 4 and page.count('class="zoomable mask"') == 4
    assert "Per-tile evidence" in page and "<meter" in page and "AC-2,4,5" in page
    assert client.get("/files/00001_p1_overlay.png").headers["content-type"] == "image/png"
    assert client.get("/specimen/nope").status_code == 404


def test_confirm_and_corrections_are_appended_never_updated(client: TestClient, results: Path) -> None:
    status, location, _ = _post(client, "00001", comment="looks right")
    assert status == 303 and location.startswith("/specimen/") and "saved=1" in location
    status, _, _ = _post(client, "00002", action="correct", pattern=["speckled", "nucleolar"],
                         order="nucleolar,speckled", intensity="positive")
    assert status == 303
    status, _, _ = _post(client, "00001", action="correct", pattern=["golgi"], intensity="intermediate",
                         reviewer="bob")
    assert status == 303
    rows = reviews(results)
    assert [(r[0], r[1], r[2]) for r in rows] == [("00001", "alice", "confirmed"), ("00002", "alice", "corrected"),
                                                  ("00001", "bob", "corrected")]
    assert json.loads(rows[1][3]) == {"patterns": ["nucleolar", "speckled"], "intensity": "positive"}
    page = client.get("/specimen/00001").text
    assert "Audit trail" in page and "bob" in page and "alice" in page
    with sqlite3.connect(results / "results.db") as db, pytest.raises(sqlite3.IntegrityError, match="append-only"):
        db.execute("UPDATE reviews SET reviewer = 'mallory'")


def test_a_second_reviewer_on_the_same_specimen_gets_a_conflict(client: TestClient, results: Path) -> None:
    first = form_fields(client.get("/specimen/00003").text)
    second = dict(first)
    assert client.post("/specimen/00003/review", data={**first, "reviewer": "alice", "action": "confirm"},
                       follow_redirects=False).status_code == 303
    late = client.post("/specimen/00003/review", data={**second, "reviewer": "bob", "action": "correct",
                                                       "pattern": "golgi", "intensity": "positive"})
    assert late.status_code == 409
    assert "was confirmed by alice" in late.text and "not saved" in late.text
    assert len(reviews(results)) == 1


def test_a_verdict_that_changed_since_the_page_was_made_is_a_conflict(client: TestClient) -> None:
    status, _, body = _post(client, "00001", verdict_at="1.0")
    assert status == 409 and "re-analysed" in body


@pytest.mark.parametrize("fields, line", [
    ({"action": "correct", "pattern": "speckeld", "intensity": "positive"}, "unknown pattern &#39;speckeld&#39;"),
    ({"action": "correct", "pattern": "3", "intensity": "positive"}, "unknown pattern &#39;3&#39;"),
    ({"action": "correct", "pattern": "golgi", "intensity": ""}, "choose an intensity"),
    ({"reviewer": "  "}, "a reviewer name is required"),
])
def test_a_bad_form_is_one_line_and_writes_nothing(client: TestClient, results: Path,
                                                   fields: dict[str, str], line: str) -> None:
    status, _, body = _post(client, "00001", **fields)
    assert status == 400 and line in body
    assert reviews(results) == []


def test_a_specimen_still_waiting_for_images_can_be_corrected_not_confirmed(client: TestClient,
                                                                            results: Path) -> None:
    with sqlite3.connect(results / "results.db") as db:  # as in `watch`: no verdict before the 4th field
        db.execute("DELETE FROM specimens WHERE specimen = '00004'")
    assert "waiting for images" in client.get("/rows").text.split('data-key="00004"')[1].split("</tr>")[0]
    status, _, body = _post(client, "00004")
    assert status == 400 and "no model verdict yet" in body
    status, _, _ = _post(client, "00004", action="correct", pattern="numem", intensity="positive")
    assert status == 303


def test_state_changes_need_the_csrf_token_and_a_same_origin(client: TestClient, results: Path) -> None:
    fields = {**form_fields(client.get("/specimen/00001").text), "reviewer": "alice", "action": "confirm"}
    for bad in ({**fields, "csrf": ""}, {**fields, "csrf": "forged"}):
        assert client.post("/specimen/00001/review", data=bad).status_code == 403
    foreign = client.post("/specimen/00001/review", data=fields, headers={"Origin": "http://evil.example"})
    assert foreign.status_code == 403 and "another site" in foreign.text
    fresh = TestClient(client.app, base_url="http://127.0.0.1")  # no cookie: a cross-site form post
    assert fresh.post("/specimen/00001/review", data=fields).status_code == 403
    assert reviews(results) == []


@pytest.mark.parametrize("name", ["..%2Fresults.db", "..%2F..%2Fetc%2Fpasswd", "results.db", "00001_p1.json",
                                  "%2e%2e", "outside_overlay.png", "missing_overlay.png", "%2Fetc%2Fpasswd",
                                  ".%2F00001_p1_overlay.png"])
def test_only_overlays_and_masks_inside_results_are_served(client: TestClient, results: Path,
                                                           name: str) -> None:
    (results.parent / "secret_overlay.png").write_bytes((results / "00001_p1_overlay.png").read_bytes())
    os.symlink(results.parent / "secret_overlay.png", results / "outside_overlay.png")
    assert client.get(f"/files/{name}").status_code == 404


def test_served_file_names_only_flat_pngs_inside_results(results: Path) -> None:
    from hep2edge.review.files import served_file

    assert served_file(results, "00001_p1_mask.png") == (results / "00001_p1_mask.png").resolve()
    for name in ("..", "../R/00001_p1_mask.png", "/etc/passwd", "sub/x_mask.png", ".hidden_mask.png",
                 "00001_p1_mask.png/..", "results.db"):
        assert served_file(results, name) is None, name


def test_a_corrupt_overlay_is_one_line_on_the_page(client: TestClient, results: Path) -> None:
    overlay = results / "00001_p2_overlay.png"
    overlay.write_bytes(overlay.read_bytes()[:200])
    page = client.get("/specimen/00001").text
    assert "00001_p2_overlay.png: truncated PNG" in page
    assert page.count('class="zoomable overlay"') == 3
    assert client.get("/files/00001_p2_overlay.png").status_code == 422


def test_a_token_is_asked_once_then_kept_in_a_cookie(results: Path) -> None:
    client = _client(results, TOKEN)
    refused = client.get("/", follow_redirects=False)
    assert refused.status_code == 303 and refused.headers["location"].startswith("/login")
    assert client.post("/specimen/00001/review", data={}).status_code == 401
    entered = client.get(f"/?token={TOKEN}&status=new", follow_redirects=False)
    assert entered.status_code == 303 and entered.headers["location"] == "/?status=new"
    assert "httponly" in entered.headers["set-cookie"].lower()
    assert 'data-key="00001"' in client.get("/").text
    bearer = _client(results, TOKEN).get("/rows", headers={"Authorization": f"Bearer {TOKEN}"})
    assert bearer.status_code == 200 and 'data-key="00001"' in bearer.text
    other = _client(results, TOKEN)
    login = other.get("/login?next=/specimen/00001")
    wrong = other.post("/login", data={**form_fields(login.text), "token": "nope", "next": "/specimen/00001"})
    assert wrong.status_code == 401 and "wrong access token" in wrong.text
    right = other.post("/login", data={**form_fields(login.text), "token": TOKEN, "next": "//evil.example/"},
                       follow_redirects=False)
    assert right.status_code == 303 and right.headers["location"] == "/"


def test_a_foreign_host_header_is_refused_on_loopback(client: TestClient) -> None:
    assert client.get("/", headers={"Host": "evil.example"}).status_code == 400
    assert client.get("/", headers={"Host": "localhost:8765"}).status_code == 200


def test_every_page_carries_the_security_headers(client: TestClient) -> None:
    headers = client.get("/").headers
    assert "script-src 'self'" in headers["content-security-policy"] and headers["x-frame-options"] == "DENY"


def test_reviews_and_the_worklist_keep_working_while_watch_writes(results: Path,
                                                                   review_template: tuple[Path, Path, Path]) -> None:
    """The real watcher (its flock held, its transactions committing) and the review side share results.db."""
    _, model, more = review_template
    watcher = start("watch", str(more), "--model", str(model), "--out", str(results), "--existing", "--max-files",
                    "4", cwd=results.parent)
    client, store, saved = _client(results), ResultsDB(results), 0
    while watcher.poll() is None or saved < 6:
        assert 'data-key="00001"' in client.get("/rows").text
        record_review(store, ReviewRequest("00001" if saved % 2 else "00002", f"reviewer {saved}"))
        saved += 1
    _, err = watcher.communicate(timeout=60)
    assert watcher.returncode == 0, err[-2000:]
    assert len(reviews(results)) == saved and 'data-key="00005"' in client.get("/rows").text
