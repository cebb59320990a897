"""Fixtures of the demo page tests: Chromium driven by Playwright, a real
``tornchat serve`` subprocess with the demo on, and :class:`DemoPage`, one
person's browser window on the demo, found only by its ``data-testid`` hooks
(the documented contract of docs/demo.md).

Every window records uncaught page errors and console errors; the fixture
that opened it fails the test if any was seen, unless the test declared it
expected (``DemoPage.tolerate``).
"""

from __future__ import annotations

import json
import os
import re
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.server import ServerProcess

try:
    from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright
except ImportError:  # the fixture below says what to install
    sync_playwright = None

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
ARTIFACTS = Path(__file__).with_name("artifacts")
API_KEY = "demo-test-api-key-0123456789abcdef012345"  # 40 characters
WIDE = {"width": 1100, "height": 700}
PHONE = {"width": 375, "height": 740}
#: Playwright's expect() waits this long (ms) unless a test says otherwise
EXPECT_TIMEOUT_MS = 10_000


def _unavailable(reason: str) -> None:
    """In CI a missing browser is a broken build; on a workstation, a skip."""
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Per module, not per session: Playwright's sync API keeps an asyncio loop
    running in this thread until it stops, and the Tornado tests that run
    after this folder could not run theirs meanwhile."""
    if sync_playwright is None:
        _unavailable("playwright is not installed: pip install playwright")
    if not os.path.exists(CHROMIUM):
        _unavailable(f"{CHROMIUM} not found: the demo page tests drive the system Chromium")
    expect.set_options(timeout=EXPECT_TIMEOUT_MS)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def demo_server(directory: Path, port: int | None = None) -> ServerProcess:
    """A started server on SQLite in ``directory`` with the demo, dev tokens and the
    server API on; the same ``directory`` and ``port`` give a restart of it."""
    env = {"DATABASE_URL": f"sqlite:///{directory / 'chat.db'}", "TORNCHAT_ENV": "development",
           "TORNCHAT_DEMO": "1", "TORNCHAT_API_KEY": API_KEY}
    return ServerProcess(env=env, cwd=str(directory), port=port).start()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for the tests of a module that do not restart it (each uses its
    own user ids, so they do not see each other's conversations)."""
    running = demo_server(tmp_path_factory.mktemp("demo"))
    yield running
    running.stop()


def post_as(server: ServerProcess, sender: str, content: str, *,
            recipients: list[str] | None = None, conversation_id: str | None = None
            ) -> dict[str, Any]:
    """Post a message through the server API (PROTOCOL §15); the stored MESSAGE."""
    body: dict[str, Any] = {"senderId": sender, "content": content}
    if conversation_id is not None:
        body["conversationId"] = conversation_id
    else:
        body["recipientIds"] = recipients
    request = urllib.request.Request(
        server.http_url + "/api/v1/server/messages", data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "X-API-Key": API_KEY}, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        return dict(json.loads(response.read())["message"])


class DemoPage:
    """One person's window on /demo."""

    def __init__(self, page: Page, base_url: str) -> None:
        self.page = page
        self.base_url = base_url
        self.errors: list[str] = []
        self.tolerated: list[re.Pattern[str]] = []
        page.on("pageerror", lambda error: self.errors.append(f"pageerror: {error}"))
        page.on("console", lambda message: message.type == "error"
                and self.errors.append(f"console.error: {message.text}"))

    def tolerate(self, pattern: str) -> None:
        """Console errors matching ``pattern`` are expected (a server that is down)."""
        self.tolerated.append(re.compile(pattern))

    def unexpected_errors(self) -> list[str]:
        return [error for error in self.errors
                if not any(pattern.search(error) for pattern in self.tolerated)]

    # -- the hooks

    def hook(self, testid: str) -> Locator:
        return self.page.get_by_test_id(testid)

    @property
    def status(self) -> Locator:
        return self.hook("connection-status")

    @property
    def messages(self) -> Locator:
        return self.hook("message")

    @property
    def conversations(self) -> Locator:
        return self.hook("conversation")

    def conversation(self, conversation_id: str) -> Locator:
        return self.page.locator(f'[data-testid="conversation"]'
                                 f'[data-conversation-id="{conversation_id}"]')

    def message(self, seq: int) -> Locator:
        return self.page.locator(f'[data-testid="message"][data-seq="{seq}"]')

    def seqs(self) -> list[int]:
        return [int(seq) for seq in self.messages.evaluate_all(
            "nodes => nodes.map(node => node.dataset.seq)")]

    def texts(self) -> list[str]:
        return self.page.locator('[data-testid="message"] .bubble').all_text_contents()

    def open_conversation_id(self) -> str:
        selected = self.page.locator('[data-testid="conversation"][aria-selected="true"]')
        expect(selected).to_have_count(1)
        conversation_id = selected.get_attribute("data-conversation-id")
        assert conversation_id
        return conversation_id

    # -- what a person does

    def sign_in(self, user_id: str) -> DemoPage:
        self.page.goto(self.base_url + "/demo")
        self.hook("login-user").fill(user_id)
        self.hook("login-submit").click()
        expect(self.status).to_have_text("connected")
        return self

    def start_chat(self, *user_ids: str) -> str:
        self.hook("new-chat-users").fill(", ".join(user_ids))
        self.hook("new-chat-submit").click()
        expect(self.hook("composer")).to_be_focused()
        return self.open_conversation_id()

    def send(self, text: str) -> None:
        """Type into the composer and press Enter, as a person does."""
        composer = self.hook("composer")
        composer.fill(text)
        composer.press("Enter")
        expect(composer).to_have_value("")
        expect(composer).to_be_focused()

    def screenshot(self, name: str) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / name))


@pytest.fixture
def person(browser: Browser) -> Iterator[Callable[..., DemoPage]]:
    """Factory: ``person(base_url, viewport=WIDE)`` opens a window in a browser context
    of its own (its own storage: another person); at the end, no window may have
    seen an unexpected page or console error."""
    opened: list[tuple[Any, DemoPage]] = []

    def open_window(base_url: str, viewport: dict[str, int] | None = None) -> DemoPage:
        context = browser.new_context(viewport=viewport or WIDE)
        window = DemoPage(context.new_page(), base_url)
        opened.append((context, window))
        return window

    yield open_window
    errors = [error for _, window in opened for error in window.unexpected_errors()]
    for context, _ in opened:
        context.close()
    assert not errors, "the demo page reported errors:\n" + "\n".join(errors)
