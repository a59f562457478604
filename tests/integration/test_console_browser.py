"""The web console end to end: a real server and agent, real headless chromium (Playwright).

Sign-in (wrong password, cookies), nodes, a shell session with a reason, typing, resizing
(``stty size`` follows the window), reloading the page (the same session goes on, its output
still there), terminating it from the sessions page, playing its recording, the audit entries
of all that, a network loss, the end of a session with its exit code, a user without
StartSession (no button, 403 from the API), CSRF refusal, sign-out and idle expiry. Screenshots
of each page go to ``test-artifacts/console/``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.browser import CHROMIUM, require_chromium, screenshot
from tests.integration.cluster import Cluster, wait_for
from tests.integration.proxy import CuttableProxy

PASSWORD = "Corr3ct-Horse-Battery"
ADMIN = "arn:aws:iam::aws:policy/AdministratorAccess"
READ_ONLY = "arn:aws:iam::aws:policy/ReadOnlyAccess"
TIMEOUT = 20_000  # ms, for things the page waits on


def _user(cluster: Cluster, name: str, policy: str) -> None:
    cluster.cli("iam", "create-user", "--user-name", name)
    cluster.cli("iam", "set-password", "--user-name", name, "--password", PASSWORD)
    cluster.cli("iam", "attach-user-policy", "--user-name", name, "--policy-arn", policy)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def users(cluster: Cluster) -> Cluster:
    _user(cluster, "web-admin", ADMIN)
    _user(cluster, "web-viewer", READ_ONLY)
    return cluster


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT)
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield page
    finally:
        context.close()
    # Nothing the pages did failed in the browser (scripts, CSP, resources); expected refusals
    # of the tests' own requests are answers, not errors.
    unexpected = [e for e in errors if "status of 40" not in e]
    assert not unexpected, unexpected


def sign_in(page: Any, endpoint: str, user: str, password: str = PASSWORD) -> None:
    page.goto(endpoint + "/")
    page.get_by_label("Username").fill(user)
    page.get_by_label("Password").fill(password)
    page.keyboard.press("Enter")


def terminal_text(page: Any) -> str:
    return str(page.locator(".xterm-rows").inner_text())


def wait_for_text(page: Any, pattern: str, timeout: float = 15) -> re.Match[str]:
    found: list[re.Match[str]] = []

    def seen() -> bool:
        match = re.search(pattern, terminal_text(page), re.M)
        if match:
            found.append(match)
        return match is not None

    wait_for(seen, timeout, 0.1, f"{pattern!r} in the terminal")
    return found[0]


def type_line(page: Any, text: str) -> None:
    page.locator(".xterm").first.click()
    page.keyboard.type(text + "\n")


def test_wrong_password_then_sign_in_with_strict_secure_cookies(
    page: Any, users: Cluster, node: str
) -> None:
    sign_in(page, users.endpoint, "web-admin", "not-the-password")
    page.get_by_text("Wrong user name or password.").wait_for()
    screenshot(page, "sign-in-refused")
    page.get_by_label("Password").fill(PASSWORD)
    page.keyboard.press("Enter")
    row = page.locator("tr", has_text=node)
    row.get_by_text("Online").wait_for()
    screenshot(page, "nodes")
    cookies = {c["name"]: c for c in page.context.cookies()}
    session = cookies["__Host-hatchway-session"]
    assert session["httpOnly"] and session["secure"] and session["sameSite"] == "Strict"
    assert not cookies["__Host-hatchway-csrf"]["httpOnly"]
    # The filter hides rows that do not match, and shows them again.
    page.get_by_label("Filter").fill("no-such-node")
    row.wait_for(state="detached")
    page.get_by_label("Filter").fill(node[:8])
    row.wait_for()


def test_shell_session_resize_reload_terminate_and_play(
    page: Any, users: Cluster, node: str
) -> None:
    sign_in(page, users.endpoint, "web-admin")
    row = page.locator("tr", has_text=node)
    row.get_by_role("button", name="Options").click()
    page.get_by_label("Reason").fill("console e2e check")
    page.get_by_role("button", name="Start", exact=True).click()
    page.locator(".xterm").first.wait_for()
    session_id = page.locator("#term-session").inner_text()
    assert session_id.startswith("web-admin-")
    page.get_by_text("connected", exact=True).wait_for()

    type_line(page, "echo hel''lo-$((6*7))")
    wait_for_text(page, r"^hello-42")
    type_line(page, "stty size")
    first = wait_for_text(page, r"^(\d+) (\d+)\s*$")
    screenshot(page, "terminal")

    page.set_viewport_size({"width": 900, "height": 600})
    type_line(page, "clear; stty size")

    def resized() -> bool:
        sizes = re.findall(r"^(\d+) (\d+)\s*$", terminal_text(page), re.M)
        return bool(sizes) and sizes[-1] != first.groups()

    wait_for(resized, 15, 0.1, "stty size to change")
    rows, cols = re.findall(r"^(\d+) (\d+)\s*$", terminal_text(page), re.M)[-1]
    assert int(cols) < int(first.group(2)) and int(rows) < int(first.group(1))

    # A reload continues the same session, with what was on the screen.
    type_line(page, "export MARK=before-reload")
    page.reload()
    page.locator(".xterm").first.wait_for()
    assert page.locator("#term-session").inner_text() == session_id
    wait_for_text(page, r"export MARK=before-reload")
    type_line(page, "echo still-$MARK")
    wait_for_text(page, r"^still-before-reload")

    # Terminate from the sessions page; the session then shows in the history.
    page.get_by_role("link", name="Sessions").click()
    session_row = page.locator("tr", has_text=session_id)
    session_row.get_by_text("console e2e check").wait_for()
    screenshot(page, "sessions")
    page.once("dialog", lambda dialog: dialog.accept())
    session_row.get_by_role("button", name="Terminate").click()
    wait_for(
        lambda: any(s["SessionId"] == session_id for s in users.sessions("History")),
        20,
        0.2,
        "the session in the history",
    )

    # Details and the recording: the player plays, seeks and changes speed.
    page.goto(f"{users.endpoint}/#/session/{session_id}")
    page.get_by_text("console e2e check").wait_for()
    page.locator("#player .ap-player").wait_for()
    page.evaluate("() => { window.hatchwayPlayer.play(); }")  # not awaiting its promise
    page.locator("#player").get_by_text("hello-42").first.wait_for()
    duration = page.evaluate("window.hatchwayPlayer.getDuration()")
    assert duration and duration > 0
    page.evaluate("window.hatchwayPlayer.seek(0)")
    page.get_by_label("Speed").select_option("2")
    page.locator("#player .ap-player").wait_for()
    screenshot(page, "recording")

    # The audit trail has the console's calls on the session, as the user who made them.
    page.get_by_role("link", name="Audit").click()
    page.get_by_label("Resource").fill(session_id)
    page.get_by_role("button", name="Filter").click()
    rows = page.locator("tbody tr")
    wait_for(
        lambda: rows.count() > 0 and rows.filter(has_not_text=session_id).count() == 0,
        15,
        0.1,
        "the audit page filtered by the session",
    )
    shown = rows.all_inner_texts()
    for name in ("SessionStarted", "TerminateSession", "SessionTerminated", "GetSessionRecording"):
        assert any(name in row and "web-admin" in row for row in shown), (name, shown)
    screenshot(page, "audit")


def test_a_user_without_start_session_sees_no_button_and_is_refused(
    page: Any, users: Cluster, node: str
) -> None:
    sign_in(page, users.endpoint, "web-viewer")
    row = page.locator("tr", has_text=node)
    row.get_by_text("not allowed").wait_for()
    assert row.get_by_role("button", name="Start session").count() == 0
    screenshot(page, "nodes-read-only")
    csrf = next(c["value"] for c in page.context.cookies() if c["name"].endswith("csrf"))
    refused = page.request.post(
        users.endpoint + "/api/sessions",
        data={"target": node},
        headers={"X-CSRF-Token": csrf},
    )
    assert refused.status == 403 and refused.json()["error"] == "AccessDeniedException"


def test_csrf_refusal_and_sign_out(page: Any, users: Cluster, node: str) -> None:
    sign_in(page, users.endpoint, "web-admin")
    page.locator("tr", has_text=node).wait_for()
    refused = page.request.post(users.endpoint + "/api/logout", data={})
    assert refused.status == 403 and refused.json()["error"] == "CsrfRefused"
    assert page.request.get(users.endpoint + "/api/me").status == 200
    page.get_by_role("button", name="Sign out").click()
    page.get_by_text("You have signed out.").wait_for()
    assert page.request.get(users.endpoint + "/api/me").status == 401
    screenshot(page, "signed-out")


def test_an_idle_sign_in_expires(browser: Any, fresh_cluster: Cluster) -> None:
    fresh_cluster.stop_server()
    fresh_cluster.start_server("--console-idle-timeout", "10")
    _user(fresh_cluster, "idle-user", READ_ONLY)
    context = browser.new_context(ignore_https_errors=True)
    try:
        page = context.new_page()
        page.set_default_timeout(TIMEOUT)
        sign_in(page, fresh_cluster.endpoint, "idle-user")
        page.get_by_role("heading", name="Nodes").wait_for()
        # The nodes page polls every 5 s; polling is use, so leave it for one that does not.
        page.get_by_role("link", name="Account").click()
        page.wait_for_timeout(11_000)  # the idle limit is the point of this test
        page.get_by_role("link", name="Sessions").click()
        page.get_by_text("Your sign-in has ended; sign in again.").wait_for()
        assert page.get_by_label("Username").is_visible()
    finally:
        context.close()


def test_a_network_loss_is_resumed_with_nothing_lost_or_doubled(
    page: Any, users: Cluster, node: str
) -> None:
    proxy = CuttableProxy(users.port)  # the browser reaches the server through it
    try:
        endpoint = f"https://127.0.0.1:{proxy.port}"
        sign_in(page, endpoint, "web-admin")
        page.locator("tr", has_text=node).get_by_role("button", name="Start session").click()
        page.get_by_text("connected", exact=True).wait_for()
        type_line(page, "for i in $(seq 1 1500); do echo n$i; sleep 0.002; done; echo do''ne")
        # Flowing: any of n200..n1399 on screen (one given line is on screen for a moment
        # only, which a poll can miss on a busy machine), so the cut comes mid-stream.
        wait_for_text(page, r"^n(?:[2-9]\d\d|1[0-3]\d\d)\s*$")
        page.evaluate(
            """() => {
                window.bannerLog = [];
                const banner = document.getElementById("banner");
                new MutationObserver(() => window.bannerLog.push(banner.textContent))
                    .observe(banner, {childList: true, characterData: true, subtree: true});
            }"""
        )
        proxy.drop()  # every connection ends, mid-stream
        wait_for(
            lambda: any("dropped" in t for t in page.evaluate("window.bannerLog")),
            10,
            0.05,
            "the banner saying the connection dropped: "
            + repr((page.evaluate("window.bannerLog"), proxy.accepted, terminal_text(page)[-300:])),
        )
        page.get_by_text("connected", exact=True).wait_for()
        wait_for_text(page, r"^done\s*$", timeout=30)
        lines = page.evaluate(
            """() => {
                const b = window.hatchwayTerminal.term.buffer.active;
                const out = [];
                for (let i = 0; i < b.length; i++) out.push(b.getLine(i).translateToString(true));
                return out;
            }"""
        )
        numbers = [int(line[1:]) for line in lines if re.fullmatch(r"n\d+", line)]
        assert numbers == list(range(1, 1501))
        screenshot(page, "terminal-after-network-loss")
        assert proxy.accepted >= 2  # it did reconnect
    finally:
        proxy.close()


def test_the_end_of_a_session_is_shown_with_its_exit_code_on_a_narrow_window(
    page: Any, users: Cluster, node: str
) -> None:
    page.set_viewport_size({"width": 420, "height": 760})
    sign_in(page, users.endpoint, "web-admin")
    row = page.locator("tr", has_text=node)
    row.get_by_role("button", name="Start session").wait_for()
    screenshot(page, "nodes-narrow")
    row.get_by_role("button", name="Start session").click()
    page.get_by_text("connected", exact=True).wait_for()
    type_line(page, "printf 'caf\\xc3\\xa9 \\xe2\\x9c\\x93\\n'; exit 3")
    wait_for_text(page, "^café ✓")
    page.get_by_text(re.compile(r"Session .* ended: .*\(exit code 3\)")).wait_for()
    assert page.get_by_role("button", name="End session").is_disabled()
    screenshot(page, "terminal-ended-narrow")
