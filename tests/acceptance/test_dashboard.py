"""The dashboard in a real browser: Debian's Chromium, headless, driven by Playwright.

Playwright's sync API runs in one worker thread (its objects belong to the
thread that made them); what must happen in the test's trio run (submitting
as another organisation, letting a gated job through) is called back with
``trio.from_thread.run``. Conditions in the page are awaited with
Playwright's auto-waiting expectations, never with sleeps.

Without Chromium or Playwright these tests are skipped, saying how to get
them; with ``ORCHESTRATOR_REQUIRE_BROWSER=1`` (set by .ci/run) they fail
instead. ``ORCHESTRATOR_SCREENSHOTS=DIR`` saves screenshots of the pages.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from orchestrator import JobContext, Principal
from tests.integration.helpers import ALICE, BOB, MALLORY_ADMIN, Size, make_orchestrator
from tests.integration.http_helpers import Served, serving

CHROMIUM = os.environ.get("ORCHESTRATOR_CHROMIUM", "/usr/bin/chromium")
REQUIRE_ENV = "ORCHESTRATOR_REQUIRE_BROWSER"
SCREENSHOTS_ENV = "ORCHESTRATOR_SCREENSHOTS"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]  # fmt: skip
TIMEOUT_MS = 20_000


def browser_missing() -> str | None:
    """Why the browser tests cannot run here, or ``None``."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright for Python is not installed: `make .venv/.installed` (the test extra)"
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        return f"no Chromium at {CHROMIUM}: as root, `apt-get update && apt-get install -y chromium` (make test does it)"
    return None


@pytest.fixture
def browser_available() -> None:
    reason = browser_missing()
    if reason is None:
        return
    if os.environ.get(REQUIRE_ENV):
        pytest.fail(f"{REQUIRE_ENV} is set but the browser tests cannot run: {reason}")
    pytest.skip(f"browser tests skipped: {reason}")


@contextmanager
def chromium_page() -> Iterator[Any]:
    """A page in a fresh headless Chromium profile."""
    from playwright.sync_api import expect, sync_playwright

    plain_asyncio_in_this_thread()
    expect.set_options(timeout=TIMEOUT_MS)
    profile = tempfile.mkdtemp(prefix="orchestrator-chromium-")
    try:
        with sync_playwright() as p:
            context = p.chromium.launch_persistent_context(
                profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
                viewport={"width": 1360, "height": 900},
            )  # fmt: skip
            try:
                page = context.pages[0] if context.pages else context.new_page()
                page.set_default_timeout(TIMEOUT_MS)
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                try:
                    yield page
                except BaseException:
                    screenshot(page, "failure")
                    raise
                finally:
                    assert not errors, f"the page raised: {errors}"
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def plain_asyncio_in_this_thread() -> None:
    """Let Playwright make a plain asyncio loop in this (worker) thread.

    Importing trio_asyncio (the store does) installs a loop policy for the
    process whose loops cannot run beside trio; it honours a per-thread
    override, which is set here for this thread alone.
    """
    import asyncio

    from trio_asyncio import _loop

    _loop._faked_policy.policy = asyncio.DefaultEventLoopPolicy()


def screenshot(page: Any, name: str) -> None:
    folder = os.environ.get(SCREENSHOTS_ENV)
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


def sign_in(page: Any, served: Served, token: str) -> None:
    from playwright.sync_api import expect

    page.goto(served.url + "/")
    page.fill("#token", token)
    page.click("#login-form button[type=submit]")
    expect(page.locator("#live")).to_have_text("live")


def dashboard_orchestrator(url: str) -> Any:
    orch = make_orchestrator(url)

    @orch.job("boom")
    async def boom(ctx: JobContext, payload: Size) -> None:
        raise RuntimeError(f"width {payload.w} is not supported")

    @orch.job("stepped", queue="reports")
    async def stepped(ctx: JobContext, payload: Size) -> dict[str, int]:
        for step in range(1, payload.w):
            await ctx.progress(step / payload.w)
        return {"steps": payload.w}

    return orch


async def in_browser(fn: Callable[[], None]) -> None:
    await trio.to_thread.run_sync(fn)


async def test_submit_and_watch_a_job_complete_without_reloading(database_url: str, browser_available: None) -> None:
    from playwright.sync_api import expect

    orch = dashboard_orchestrator(database_url)
    async with serving(orch) as served:
        token = await served.token(ALICE)
        # Some history for the counts, the chart and the screenshots.
        for w in (2, 3, 4):
            await orch.wait((await orch.submit("stepped", {"w": w}, owner=ALICE)).id, by=ALICE)
        await orch.wait((await orch.submit("boom", {"w": 7}, owner=BOB)).id, by=BOB)
        await orch.submit("double", {"w": 1}, owner=BOB, delay=3600)

        def scenario() -> None:
            with chromium_page() as page:
                sign_in(page, served, token)
                expect(page.get_by_test_id("who")).to_have_text("alice @ acme")
                expect(page.get_by_test_id("total-completed").locator("b")).to_have_text("3")
                expect(page.get_by_test_id("total-failed").locator("b")).to_have_text("1")
                page.evaluate("window.__notReloaded = true")
                page.select_option("#submit-kind", "double")
                page.fill("#submit-payload", '{"w": 21}')
                page.click("#submit-form button[type=submit]")
                link = page.locator("#submit-result a")
                expect(link).to_be_visible()
                short = link.inner_text()
                row = page.locator("#jobs tbody tr", has=page.locator(f"a:text-is('{short}')"))
                expect(row.get_by_test_id("state")).to_have_text("completed")
                expect(page.get_by_test_id("total-completed").locator("b")).to_have_text("4")
                assert page.evaluate("window.__notReloaded") is True, "the page was reloaded"
                screenshot(page, "dashboard")
                # A bad payload is refused, naming the field.
                page.fill("#submit-payload", '{"w": "wide"}')
                page.click("#submit-form button[type=submit]")
                expect(page.locator("#submit-result")).to_contain_text("payload.w")
                # The job's page: its timeline and result.
                row.locator("a").click()
                expect(page.locator("#job-card .timeline").first).to_contain_text("Completed")
                expect(page.locator("#job-card")).to_contain_text('"w": 42')
                failed = page.locator("#jobs tbody tr").filter(has_text="boom")
                page.go_back()
                failed.locator("a").click()
                expect(page.locator("#job-card pre.error")).to_contain_text("width 7 is not supported")
                screenshot(page, "job-failed")

        await in_browser(scenario)


async def test_cancel_a_running_job_and_see_it_cancelled(database_url: str, browser_available: None) -> None:
    from playwright.sync_api import expect

    orch = dashboard_orchestrator(database_url)
    async with serving(orch) as served:
        token = await served.token(ALICE)
        theirs = await orch.submit("gated", {"w": 2}, owner=BOB, delay=3600)
        mine = await orch.submit("gated", {"w": 1}, owner=ALICE)
        await orch.gate.started.wait()

        def scenario() -> None:
            with chromium_page() as page:
                sign_in(page, served, token)
                my_row = page.locator(f"#jobs tr[data-job='{mine.id}']")
                their_row = page.locator(f"#jobs tr[data-job='{theirs.id}']")
                expect(my_row.get_by_test_id("state")).to_have_text("active")
                expect(their_row.get_by_test_id("state")).to_have_text("queued")
                # A member sees the button on their own jobs only.
                expect(their_row.get_by_test_id("cancel")).to_have_count(0)
                my_row.locator("a").click()
                expect(page.get_by_test_id("job-id")).to_have_text(str(mine.id))
                screenshot(page, "job-running")
                card = page.locator("#job-card")
                card.get_by_test_id("cancel").click()
                expect(page.locator("#job-card").get_by_test_id("state")).to_have_text("cancelled")
                expect(page.locator("#job-card .timeline").first).to_contain_text("Cancelled")
                expect(card.get_by_test_id("cancel")).to_have_count(0)
                page.go_back()
                expect(my_row.get_by_test_id("state")).to_have_text("cancelled")
                expect(my_row.get_by_test_id("cancel")).to_have_count(0)

        await in_browser(scenario)
        final = await orch.get(mine.id, by=ALICE)
        untouched = await orch.get(theirs.id, by=BOB)
    assert orch.gate.cancelled
    assert final.state.value == "cancelled" and untouched.state.value == "queued"


async def test_another_organisations_jobs_never_appear(database_url: str, browser_available: None) -> None:
    from playwright.sync_api import expect

    orch = dashboard_orchestrator(database_url)
    evil = Principal(user_id="eve-outsider", org_id="evil-corp")
    async with serving(orch) as served:
        token = await served.token(ALICE)
        before = await orch.submit("double", {"w": 5}, owner=MALLORY_ADMIN, delay=3600)

        async def submit_live() -> tuple[str, str]:
            theirs = await orch.submit("stepped", {"w": 3}, owner=evil)
            await orch.wait(theirs.id, by=evil)
            # Ours goes last: once it shows, theirs had its chance to.
            ours = await orch.submit("double", {"w": 6}, owner=ALICE)
            await orch.wait(ours.id, by=ALICE)
            return str(theirs.id), str(ours.id)

        def scenario() -> None:
            with chromium_page() as page:
                sign_in(page, served, token)
                expect(page.locator("#jobs tbody")).to_contain_text("No jobs.")
                theirs, ours = trio.from_thread.run(submit_live)
                expect(page.locator(f"#jobs tr[data-job='{ours}']").get_by_test_id("state")).to_have_text("completed")
                content = page.content()
                for foreign in (str(before.id), theirs, "evil-corp", "eve-outsider", "mallory"):
                    assert foreign[:8] not in content and foreign not in content, foreign
                expect(page.locator("#jobs tbody tr")).to_have_count(1)
                # The counts are the organisation's own: one job, completed.
                for state, count in (("completed", "1"), ("queued", "0"), ("active", "0"), ("failed", "0")):
                    expect(page.get_by_test_id(f"total-{state}").locator("b")).to_have_text(count)
                # Asking for their job by id says it does not exist.
                page.goto(f"{served.url}/#/jobs/{before.id}")
                expect(page.locator("#job-card")).to_contain_text("No such job in your organisation.")

        await in_browser(scenario)
