"""The web console in a real browser: headless Chromium (the system package)
driven by Playwright, against a service started with --console-listen.

Skipped only when no Chromium is installed and CI is not "true" (CI
installs it). SAYIIR_CONSOLE_SCREENSHOTS=docs/console keeps a screenshot of
each page there (the README shows them); otherwise they go to a temporary
folder.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import start_service
from fixtures.operator_seed import STEP1, empty_tables, seed
from sayiir_client import AtTask, TaskId, WorkflowSnapshot, connect
from sayiir_grpc.app import RunningServer

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None and os.environ.get("CI") != "true":
    pytest.skip("no Chromium installed (apt-get install chromium); CI installs it", allow_module_level=True)

from playwright.async_api import Browser, Page, async_playwright, expect  # noqa: E402

READER = "reader-console-token-0123456789"
OPERATOR = "operator-console-token-0123456789"
XSS = "<script>window.__xss = 1</script>"
XSS_ID = 'xss-<b>"bold"</b>'
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
async def console(
    make_database: Callable[[], Awaitable[str]], tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[RunningServer, str]]:
    tokens = tmp_path_factory.mktemp("console") / "tokens"
    tokens.write_text(f"{READER} reader\n{OPERATOR} operator\n")
    url = await make_database()
    running = await start_service(url, console_listen="127.0.0.1:0", auth_tokens_file=str(tokens))
    assert running.console is not None
    yield running, url
    await running.stop(grace=1)


@pytest.fixture
async def base(console: tuple[RunningServer, str]) -> AsyncIterator[str]:
    """The console's address, on freshly seeded workflows plus one carrying markup everywhere."""
    running, url = console
    await empty_tables(url)
    async with connect(f"127.0.0.1:{running.port}", token=OPERATOR, watch_wakeups=False) as backend:
        await seed(backend)
        hostile = WorkflowSnapshot.new(XSS_ID, "def-x")
        hostile.mark_task_completed(TaskId.sha256("render"), XSS.encode())
        hostile.update_position(AtTask(STEP1))
        await backend.save_snapshot(hostile)
        await backend.send_event(XSS_ID, XSS, b"{}")
    assert running.console is not None
    yield f"http://127.0.0.1:{running.console.port}"


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        yield launched
        await launched.close()


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    opened = await context.new_page()
    yield opened
    await context.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    chosen = os.environ.get("SAYIIR_CONSOLE_SCREENSHOTS")
    folder = Path(chosen) if chosen else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


async def sign_in(page: Page, base: str, token: str) -> None:
    await page.goto(base + "/")
    await expect(page).to_have_url(base + "/login")
    await page.fill("#token", token)
    await page.click("button[type=submit]")
    await expect(page).to_have_url(base + "/")


async def test_overview_list_workflow_and_cancel(page: Page, base: str, shots: Path) -> None:
    await page.goto(base + "/")
    await expect(page).to_have_url(base + "/login")
    await page.screenshot(path=str(shots / "login.png"))
    await page.fill("#token", "not-a-token-at-all-0123")
    await page.click("button[type=submit]")
    await expect(page.locator("#error")).to_have_text("unknown token")

    await page.fill("#token", OPERATOR)
    await page.click("button[type=submit]")
    await expect(page).to_have_url(base + "/")
    await expect(page.locator("#role")).to_contain_text("operator")
    await expect(page.locator("[data-status=InProgress] .n")).to_have_text("4")
    await expect(page.locator("[data-status=Failed] .n")).to_have_text("1")
    await expect(page.locator("#runnable .n")).to_have_text("2")
    await expect(page.locator("#failures")).to_contain_text("Payment gateway TIMEOUT")
    await page.screenshot(path=str(shots / "overview.png"), full_page=True)

    # Filter the list.
    await page.click("text=Workflows")
    await expect(page.locator("#workflows tr")).to_have_count(1 + 7)
    await page.check("input[name=status][value=InProgress]")
    await page.fill("input[name=tag]", "gpu")
    await page.click("#apply-filters")
    rows = page.locator("#workflows tr")
    await expect(rows).to_have_count(2)
    await expect(rows.nth(1)).to_contain_text("op-a-01")
    await page.uncheck("input[name=status][value=InProgress]")
    await page.fill("input[name=tag]", "")
    await page.check("input[name=status][value=InProgress]")
    await page.click("#apply-filters")
    await expect(rows).to_have_count(1 + 4)
    await page.screenshot(path=str(shots / "workflows.png"), full_page=True)

    # Open one: its history, outputs, events.
    await page.click("a:text-is('op-a-01')")
    await expect(page).to_have_url(base + "/workflows/op-a-01")
    await expect(page.locator("#status")).to_have_text("InProgress")
    await expect(page.locator("#position")).to_have_text("AtTask")
    await expect(page.locator("#history li")).to_have_count(1)
    await expect(page.locator("#tasks pre.output")).to_have_text('{\n  "x": 1\n}')
    await expect(page.locator("#events")).to_contain_text("approval")
    await page.screenshot(path=str(shots / "workflow.png"), full_page=True)

    # Cancel it: confirmed first, then its state changes.
    await page.click("#action-cancel")
    await expect(page.locator("#confirm-text")).to_contain_text("cancel op-a-01")
    await page.click("#confirm")
    await expect(page).to_have_url(base + "/workflows/op-a-01")
    await expect(page.locator("#status")).to_have_text("Cancelled")
    await expect(page.locator("#flash")).to_contain_text("applied 1")
    await expect(page.locator("#history li")).to_have_count(2)

    # Send an event to the workflow parked at a signal: it moves on.
    await page.goto(base + "/workflows/op-c-02")
    await expect(page.locator("#position")).to_have_text("AtSignal")
    await page.fill("#send-event input[name=signal_name]", "approval")
    await page.fill("#send-event input[name=payload]", '{"approved": true}')
    await page.click("#action-send-event")
    await page.click("#confirm")
    await expect(page.locator("#position")).to_have_text("AtTask")


async def test_bulk_action_shows_the_dry_run_count_first(page: Page, base: str) -> None:
    await sign_in(page, base, OPERATOR)
    await page.goto(base + "/workflows?status=InProgress")
    await page.select_option("#bulk-action", "pause")
    await page.click("#bulk-submit")
    await expect(page.locator("#matched")).to_have_text("4")
    # Nothing changed yet.
    await page.goto(base + "/workflows?status=Paused")
    await expect(page.locator("#workflows tr")).to_have_count(1 + 1)
    await page.go_back()
    await page.click("#confirm")
    await expect(page.locator("#flash")).to_contain_text("matched 4, applied 4")
    await page.goto(base + "/workflows?status=Paused")
    # op-a-02 is claimed: its pause waits for its worker; the three others are paused now.
    await expect(page.locator("#workflows tr")).to_have_count(1 + 1 + 3)


async def test_claims_page(page: Page, base: str, shots: Path) -> None:
    await sign_in(page, base, OPERATOR)
    await page.click("text=Claims")
    await expect(page.locator("#claims")).to_contain_text("worker-1")
    await expect(page.locator("#claims")).to_contain_text("live")
    await page.screenshot(path=str(shots / "claims.png"), full_page=True)
    await page.click("#claims button:text('Release…')")
    await page.click("#confirm")
    await expect(page.locator("#flash")).to_contain_text("released worker-1's claim on op-a-02")
    await expect(page.locator("#claims")).to_contain_text("No claims")


async def test_a_reader_sees_but_cannot_act(page: Page, base: str) -> None:
    await sign_in(page, base, READER)
    await expect(page.locator("#role")).to_contain_text("reader")
    await page.goto(base + "/workflows/op-a-01")
    await expect(page.locator("#status")).to_have_text("InProgress")
    await expect(page.locator("#actions")).to_have_count(0)
    await page.goto(base + "/workflows")
    await expect(page.locator("#bulk")).to_have_count(0)
    # Posting by hand, even with the session's CSRF token, is refused.
    csrf = await page.locator("input[name=csrf]").first.get_attribute("value")
    response = await page.request.post(
        base + "/act", form={"csrf": csrf or "", "action": "cancel", "instance_id": "op-a-01", "confirm": "yes"}
    )
    assert response.status == 403
    await page.goto(base + "/workflows/op-a-01")
    await expect(page.locator("#status")).to_have_text("InProgress")


async def test_forms_need_the_csrf_token_and_the_cookie_is_strict(page: Page, base: str) -> None:
    await sign_in(page, base, OPERATOR)
    response = await page.request.post(
        base + "/act", form={"csrf": "forged", "action": "delete", "instance_id": "op-b-01", "confirm": "yes"}
    )
    assert response.status == 403
    [cookie] = await page.context.cookies()
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
    await page.goto(base + "/workflows/op-b-01")
    await expect(page.locator("#status")).to_have_text("Failed")
    # Signed out: back to the sign-in page.
    await page.click("text=Sign out")
    await expect(page).to_have_url(base + "/login")
    await page.goto(base + "/workflows")
    await expect(page).to_have_url(base + "/login")


async def test_markup_in_ids_and_payloads_is_shown_as_text(page: Page, base: str) -> None:
    await sign_in(page, base, OPERATOR)
    await page.goto(base + "/workflows")
    link = page.locator("#workflows a", has_text=XSS_ID)
    await expect(link).to_have_count(1)
    await link.click()
    await expect(page.locator("#instance-id")).to_have_text(XSS_ID)
    await expect(page.locator("#tasks pre.output")).to_have_text(XSS)
    await expect(page.locator("#events")).to_contain_text(XSS)
    flag: Any = await page.evaluate("window.__xss")
    assert flag is None
    assert await page.locator("b").count() == 0


async def test_under_tls_the_console_is_served_over_tls(
    make_database: Callable[[], Awaitable[str]], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Same certificate as the gRPC port; the session cookie is Secure; plain HTTP gets nothing."""
    import asyncio
    import ssl
    import subprocess
    import urllib.error
    import urllib.request

    pki = tmp_path_factory.mktemp("console-pki")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=pki, check=True, capture_output=True, timeout=60)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=console-test-ca")  # fmt: skip
    (pki / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=s")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "server.pem", "-days", "2", "-extfile", "san.ext")  # fmt: skip
    running = await start_service(
        await make_database(),
        console_listen="127.0.0.1:0",
        tls_cert_file=str(pki / "server.pem"),
        tls_key_file=str(pki / "server.key"),
    )
    try:
        assert running.console is not None
        port = running.console.port
        trusted = ssl.create_default_context(cafile=str(pki / "ca.pem"))

        def fetch(url: str, context: ssl.SSLContext | None) -> tuple[int, str]:
            with urllib.request.urlopen(url, context=context, timeout=10) as response:
                return response.status, response.headers.get("Set-Cookie", "")

        status, cookie = await asyncio.to_thread(fetch, f"https://127.0.0.1:{port}/", trusted)
        assert status == 200
        assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            await asyncio.to_thread(fetch, f"http://127.0.0.1:{port}/", None)
    finally:
        await running.stop(grace=1)


async def test_the_list_pages(page: Page, base: str, console: tuple[RunningServer, str]) -> None:
    running, _ = console
    async with connect(f"127.0.0.1:{running.port}", token=OPERATOR, watch_wakeups=False) as backend:
        for n in range(60):
            await backend.save_snapshot(WorkflowSnapshot.new(f"paged-{n:02d}", "paged"))
    await sign_in(page, base, OPERATOR)
    await page.goto(base + "/workflows?status=InProgress")
    rows = page.locator("#workflows tr")
    await expect(rows).to_have_count(1 + 50)
    seen = await page.locator("#workflows td:first-child").all_inner_texts()
    await page.click("#next-page")
    await expect(rows).to_have_count(1 + 64 - 50)
    seen += await page.locator("#workflows td:first-child").all_inner_texts()
    assert len(seen) == len(set(seen)) == 64
    assert seen == sorted(seen)
    await expect(page.locator("#next-page")).to_have_count(0)
    # The filter is kept across pages.
    assert "status=InProgress" in page.url


@pytest.mark.parametrize(
    "query",
    ["status=sleeping", "definition=zz", "created_after=yesterday", "status=in_progress&task=12"],
)
async def test_a_bad_filter_is_a_400_page_naming_the_field(page: Page, base: str, query: str) -> None:
    await sign_in(page, base, READER)
    response = await page.goto(f"{base}/workflows?{query}")
    assert response is not None and response.status == 400
    field = query.rsplit("&", 1)[-1].split("=")[0]
    await expect(page.locator("#error")).to_contain_text(field)
    await expect(page.locator("form.filters")).to_have_count(1)


@pytest.mark.parametrize(
    "path",
    [
        "/workflows?after=%00",
        "/workflows?tag=a%00",
        "/workflows?error=%00",
        "/workflows?definition=%00",
        "/claims?after=%00",
        "/workflows/a%00b",
    ],
)
async def test_a_nul_anywhere_is_a_400_naming_it(page: Page, base: str, path: str) -> None:
    await sign_in(page, base, OPERATOR)
    response = await page.request.get(base + path)
    assert response.status == 400
    assert "must not contain NUL characters" in await response.text()


async def test_a_nul_in_an_action_form_is_a_400_and_changes_nothing(page: Page, base: str) -> None:
    await sign_in(page, base, OPERATOR)
    await page.goto(base + "/workflows/op-c-02")
    csrf = await page.locator("input[name=csrf]").first.get_attribute("value")
    form = {"csrf": csrf or "", "action": "pause", "instance_id": "op-c-02\x00", "confirm": "yes"}
    response = await page.request.post(base + "/act", form=form)
    assert response.status == 400
    assert "instance_id: must not contain NUL characters" in await response.text()
    await page.goto(base + "/workflows/op-c-02")
    await expect(page.locator("#status")).to_have_text("InProgress")
