"""The web page and dashboard in a real browser: headless Chromium (Debian's package, driven by
Playwright) against `promptrec serve` on the amazon-beauty slice.

The flow a person follows: enter the API key, pick a user, Recommend, type a query, click an
item, see it leave the list and top the history, then open the dashboard. Chromium comes from
the system (``apt-get install chromium``), never from Playwright's downloads; set
``PROMPTREC_CHROMIUM`` to use another binary.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from promptrec.cli.main import main
from promptrec.service.process import LiveServer

CHROMIUM = os.environ.get("PROMPTREC_CHROMIUM", "/usr/bin/chromium")
KEY = "test-key"  # LiveServer's key
QUERY = "nail polish"
TIMEOUT_MS = 20_000  # for any one thing to show up on a page
SHOTS = os.environ.get("PROMPTREC_BROWSER_SHOTS")  # a folder for screenshots of the pages


def _chromium() -> str:
    path = shutil.which(CHROMIUM)
    if path is None:
        pytest.fail(
            f"Chromium is missing: expected it at {CHROMIUM} (Debian: `apt-get install -y "
            "chromium`; or set PROMPTREC_CHROMIUM to a Chromium binary)",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="module")
def evaluation(slice_files, tmp_path_factory) -> Path:
    """A real `promptrec evaluate --output` JSON on the slice (the cheap strategies, test split)."""
    catalog, events = slice_files
    out = tmp_path_factory.mktemp("evaluation") / "results.json"
    args = ["evaluate", "--catalog", str(catalog), "--events", str(events)]
    args += ["--strategies", "popularity,itemknn", "--splits", "test", "--output", str(out)]
    try:
        main(args)
    except SystemExit as exc:
        assert exc.code in (0, None)
    assert out.is_file()
    return out


def _watch(page, problems: list[str]) -> None:
    """Collect console errors, uncaught exceptions and failed or refused requests."""

    def console(message) -> None:
        if message.type == "error":
            problems.append(f"console error: {message.text} ({message.location})")

    def response(r) -> None:
        if r.status >= 400:
            problems.append(f"HTTP {r.status} for {r.request.method} {r.url}")

    page.on("console", console)
    page.on("pageerror", lambda error: problems.append(f"uncaught exception: {error}"))
    page.on("response", response)
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url} {r.failure}"))


def _shot(page, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / f"{name}.png"), full_page=True)


def _ids(page, selector: str) -> list[str]:
    return page.eval_on_selector_all(selector, "els => els.map((e) => e.dataset.itemId)")


def _submit_and_wait(page, expect) -> None:
    """Press Recommend and wait until the new list and the history are shown."""
    items = page.locator("#items")
    before = items.get_attribute("data-request-id")
    page.click("#go")
    if before is not None:
        expect(items).not_to_have_attribute("data-request-id", before)
    expect(page.locator("#status")).to_have_attribute("data-state", "ok")
    expect(items.locator("li").first).to_be_visible()


def test_recommend_click_and_dashboard_in_chromium(slice_files, evaluation, tmp_path) -> None:
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        pytest.fail("Playwright is missing: pip install 'playwright==1.65.2'", pytrace=False)
    chromium = _chromium()
    catalog, events = slice_files
    args = ["--db", str(tmp_path / "browser.db"), "--catalog", str(catalog)]
    args += ["--events", str(events), "--evaluation", str(evaluation)]
    server = LiveServer(args, tmp_path / "server.log").start()
    problems: list[str] = []  # console errors, uncaught exceptions, failed requests
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, headless=True)
            page = browser.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            expect.set_options(timeout=TIMEOUT_MS)
            _watch(page, problems)

            # ---------------------------------------------- a user's list, with explanations
            page.goto(f"{server.url}/")
            page.fill("#key", KEY)
            options = page.locator("#users option")
            expect(options.nth(1)).to_be_attached()  # the picker is filled from GET /users
            user = options.nth(1).get_attribute("value")
            assert user, "the user picker has an empty option"
            page.fill("#user", user)
            _submit_and_wait(page, expect)
            expect(page.locator("#status")).to_have_text(f"10 items for {user}")
            expect(page.locator("#meta")).to_contain_text("arm main, mean-of-items")
            first_list = _ids(page, "#items li")
            assert len(first_list) == 10
            whys = page.locator("#items li .why").all_inner_texts()
            assert len(whys) == 10 and all(whys), f"an item has no explanation: {whys}"
            assert any(w.startswith("similar to ") for w in whys), whys
            expect(page.locator("#history li").first).to_be_visible()
            history_before = _ids(page, "#history li")
            assert not set(first_list) & set(history_before), "the list repeats history items"

            # ---------------------------------------------- a live query changes the list
            page.fill("#query", QUERY)
            _submit_and_wait(page, expect)
            expect(page.locator("#status")).to_have_text(f'10 items for {user} and "{QUERY}"')
            query_list = _ids(page, "#items li")
            assert query_list != first_list, "the query did not change the list"
            terms = page.eval_on_selector_all(
                "#items li", "els => els.map((e) => e.dataset.queryTerms)"
            )
            matched = [t for t in terms if t]
            assert matched, f"no item matched a query term: {terms}"
            assert set(" ".join(matched).split()) <= set(QUERY.split())
            hit = page.locator("#items li").nth(terms.index(matched[0]))
            expect(hit.locator(".why")).to_contain_text("matches '")
            marks = hit.locator("a.title mark").all_inner_texts()
            assert all(m.lower() in QUERY.split() for m in marks), marks

            # ---------------------------------------------- a click is recorded and shown
            clicked = query_list[0]
            page.locator("#items li a.title").first.click()
            expect(page.locator("#status")).to_have_text(
                f"recorded a click on {clicked}; list updated"
            )
            expect(page.locator("#status")).to_have_attribute("data-state", "ok")
            after = _ids(page, "#items li")
            assert clicked not in after and len(after) == 10, after
            top = page.locator("#history li").first
            expect(top).to_have_attribute("data-item-id", clicked)
            expect(top).to_have_attribute("data-event", "click")
            expect(top).to_contain_text("(click)")

            _shot(page, "recommendations")
            # the key lives in this tab's session only, never in persistent storage
            assert page.evaluate("sessionStorage.getItem('promptrec.key')") == KEY
            assert page.evaluate("localStorage.length") == 0

            # ---------------------------------------------- the dashboard
            page.goto(f"{server.url}/dashboard")
            expect(page.locator("body")).to_have_attribute("data-loaded", "true")
            for plot in ("ctr", "latency"):
                page.wait_for_function(
                    "(id) => { const i = document.getElementById(id); "
                    "return i.src.startsWith('blob:') && i.complete && i.naturalWidth > 0; }",
                    arg=plot,
                )
            row = page.locator("#online tbody tr[data-arm='main']")
            expect(row).to_have_count(1)
            cells = row.locator("td").all_inner_texts()
            # arm, model, strategy, lists, clicked, CTR, conversion: three lists, one clicked
            assert cells[0] == "main" and cells[2] == "mean-of-items", cells
            assert cells[3:6] == ["3", "1", "33.3%"], cells
            offline = page.locator("#offline tbody tr")
            expect(offline).to_have_count(2)
            strategies = page.eval_on_selector_all(
                "#offline tbody tr", "els => els.map((e) => e.dataset.strategy)"
            )
            assert sorted(strategies) == ["itemknn", "popularity"]
            for line in offline.all():
                ndcg = float(line.locator("td").nth(1).inner_text())
                assert 0.0 <= ndcg <= 1.0
            expect(page.locator("#nooffline")).to_be_hidden()
            expect(page.locator("#status")).to_be_hidden()  # the dashboard's error line
            # small rates keep two significant digits
            assert page.evaluate("[pct(0.00042), pct(0.0123), pct(0.5), pct(0)]") == [
                "0.042%",
                "1.2%",
                "50.0%",
                "0%",
            ]
            _shot(page, "dashboard")

            # ---------------------------------------------- the API docs, with no network
            page.goto(f"{server.url}/docs")
            expect(page.locator(".swagger-ui .opblock").first).to_be_visible()
            assert page.locator(".swagger-ui .opblock").count() >= 10
            browser.close()
    finally:
        server.stop()
    assert not problems, "the browser saw errors:\n" + "\n".join(problems)
