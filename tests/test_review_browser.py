"""The review app's flows in a real headless browser: Playwright driving Debian's Chromium (/usr/bin/chromium).

Worklist (live rows, keyboard), confirm, correct (mixed patterns, by keyboard), conflict between two reviewers,
access token. The test run also takes the README's screenshots: HEP2EDGE_UPDATE_SCREENSHOTS=1 copies them to
docs/. In CI (CI set) a missing browser fails the run instead of skipping it.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import pytest
from review_support import analyze_more, results_fixture, review_template_fixture, reviews  # noqa: F401

pytest.importorskip("fastapi")
playwright = pytest.importorskip("playwright.sync_api")

from hep2edge.review.app import AppSettings, create_app  # noqa: E402
from hep2edge.review.db import ResultsDB  # noqa: E402
from hep2edge.review.reviews import ReviewRequest, record_review  # noqa: E402
from hep2edge.review.server import bind, make_server  # noqa: E402

pytestmark = pytest.mark.browser
REPO = Path(__file__).resolve().parents[1]
TOKEN = "browser-test-token-0123456789"
expect = playwright.expect


def _chromium() -> str | None:
    return next((found for name in ("chromium", "chromium-browser") if (found := shutil.which(name))), None)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    executable = _chromium()
    if executable is None:
        message = "no Chromium here: apt-get install chromium (.ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with playwright.sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield launched
        launched.close()


Serve = Callable[..., str]


@pytest.fixture
def serve(results: Path) -> Iterator[Serve]:
    """`serve(token=None)` starts the app over `results` on a free port in a thread; returns its URL."""
    servers: list[tuple[Any, threading.Thread]] = []

    def start(token: str | None = None) -> str:
        sock = bind("127.0.0.1", 0)
        server = make_server(create_app(AppSettings(results, token, poll_ms=300)))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        servers.append((server, thread))
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline, "the review server did not start"
            time.sleep(0.02)
        return f"http://127.0.0.1:{sock.getsockname()[1]}"

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(10)


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1200, "height": 720})
    yield context.new_page()
    context.close()


def _screenshot(page: Any, tmp_path: Path, name: str, height: int) -> None:
    """Take a README screenshot (the top `height` pixels); check it shows something; copy it to docs/ if asked."""
    path = tmp_path / name
    page.screenshot(path=str(path), clip={"x": 0, "y": 0, "width": 1200, "height": height})
    image = cv2.imread(str(path))
    assert image is not None and image.shape[:2] == (height, 1200) and image.std() > 10, f"{name} looks blank"
    if os.environ.get("HEP2EDGE_UPDATE_SCREENSHOTS") == "1":
        from PIL import Image  # a 256-colour palette keeps the committed PNGs small

        Image.open(path).convert("RGB").quantize(256).save(REPO / "docs" / name, optimize=True)


def _review_two(results: Path) -> None:
    store = ResultsDB(results)
    record_review(store, ReviewRequest("00001", "alice"))
    record_review(store, ReviewRequest("00002", "bob", ("speckled", "nucleolar"), "positive", "mixed"))


def test_worklist_updates_live_and_opens_specimens_by_keyboard(
        page: Any, serve: Serve, results: Path, review_template: tuple[Path, Path, Path], tmp_path: Path) -> None:
    _review_two(results)
    url = serve()
    page.goto(url + "/")
    rows = page.locator("#rows tr.row")
    expect(rows).to_have_count(5)
    expect(page.locator('tr[data-key="00004"]')).to_contain_text("incomplete")
    expect(page.locator('tr[data-key="00002"] .badge')).to_have_text("corrected")
    expect(page.locator("#live")).to_contain_text("live ·")
    _screenshot(page, tmp_path, "review-worklist.png", 430)
    page.evaluate("window.notReloaded = true")
    analyze_more(review_template, results)  # the real pipeline adds specimen 00005 while the page is open
    expect(page.locator('tr[data-key="00005"]')).to_have_count(1, timeout=30_000)
    assert page.evaluate("window.notReloaded") is True
    first = rows.first.get_attribute("data-key")
    page.keyboard.press("j")
    page.keyboard.press("Enter")
    page.wait_for_url(f"**/specimen/{first}")
    following = page.locator("#next").get_attribute("href")
    page.keyboard.press("j")
    page.wait_for_url(f"**{following}")


def test_confirm_with_the_keyboard(page: Any, serve: Serve, results: Path) -> None:
    url = serve()
    page.goto(url + "/specimen/00003")
    expect(page.locator("#hint")).to_have_text("Enter confirms the result shown")
    page.fill("#reviewer", "alice")
    page.keyboard.press("Enter")
    page.wait_for_url(lambda target: "/specimen/00003" not in target)
    assert [r[:3] for r in reviews(results)] == [("00003", "alice", "confirmed")]
    expect(page.locator("#flash")).to_contain_text("00003 confirmed by alice")
    page.goto(url + "/?status=confirmed")
    expect(page.locator("#rows tr.row")).to_have_count(1)
    expect(page.locator('tr[data-key="00003"] .badge')).to_have_text("confirmed")


def test_correct_mixed_patterns_and_intensity_with_the_keyboard(
        page: Any, serve: Serve, results: Path, tmp_path: Path) -> None:
    url = serve()
    page.goto(url + "/specimen/00002")
    page.fill("#reviewer", "bob")
    page.locator("h1").click()  # out of the text field: digits now toggle patterns
    for box in page.locator("input[name=pattern]:checked").all():
        page.keyboard.press(box.get_attribute("data-key"))
    page.keyboard.press("3")  # nucleolar first: the primary pattern
    page.keyboard.press("2")  # speckled
    page.check("input[name=intensity][value=intermediate]")
    page.fill("textarea[name=comment]", "nucleolar with fine speckles")
    expect(page.locator("#hint")).to_have_text("Enter saves the correction: nucleolar + speckled / intermediate")
    page.set_viewport_size({"width": 1200, "height": 900})
    _screenshot(page, tmp_path, "review-specimen.png", 900)
    page.locator("h1").click()
    page.keyboard.press("Enter")
    page.wait_for_url(lambda target: "/specimen/00002" not in target)
    (specimen, reviewer, action, after), = reviews(results)
    assert (specimen, reviewer, action) == ("00002", "bob", "corrected")
    assert json.loads(after) == {"patterns": ["nucleolar", "speckled"], "intensity": "intermediate"}


def test_a_second_reviewer_sees_a_conflict_not_a_silent_overwrite(browser: Any, serve: Serve,
                                                                  results: Path) -> None:
    url = serve()
    first, second = browser.new_context(), browser.new_context()
    try:
        alice, bob = first.new_page(), second.new_page()
        alice.goto(url + "/specimen/00001")
        bob.goto(url + "/specimen/00001")
        alice.fill("#reviewer", "alice")
        alice.keyboard.press("Enter")
        alice.wait_for_url(lambda target: "/specimen/00001" not in target)
        bob.fill("#reviewer", "bob")
        bob.locator("h1").click()
        bob.keyboard.press("1")
        bob.keyboard.press("Enter")
        expect(bob.locator("#message")).to_contain_text("was confirmed by alice")
        expect(bob.locator("#message")).to_contain_text("your change was not saved")
        assert [r[:3] for r in reviews(results)] == [("00001", "alice", "confirmed")]
    finally:
        first.close()
        second.close()


def test_an_access_token_is_asked_for_once(browser: Any, serve: Serve, results: Path) -> None:
    url = serve(token=TOKEN)
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(url + "/")
        page.wait_for_url("**/login?next=%2F")
        page.fill("#token", "not-the-token")
        page.keyboard.press("Enter")
        expect(page.locator("#login-error")).to_have_text("wrong access token")
        page.fill("#token", TOKEN)
        page.keyboard.press("Enter")
        expect(page.locator("#rows tr.row")).to_have_count(5)
        page.goto(url + "/specimen/00004")
        page.fill("#reviewer", "carol")
        page.keyboard.press("Enter")
        page.wait_for_url(lambda target: "/specimen/00004" not in target)
        assert [r[:3] for r in reviews(results)] == [("00004", "carol", "confirmed")]
    finally:
        context.close()
    linked = browser.new_context()
    try:
        page = linked.new_page()
        page.goto(f"{url}/?token={TOKEN}")
        expect(page.locator("#rows tr.row")).to_have_count(5)
        assert "token" not in page.url
    finally:
        linked.close()
