"""Browser tests of the dashboard: `dagflow ui` against the local cluster with the real operator,
driven by Playwright in Debian's headless Chromium (/usr/bin/chromium; Playwright never downloads a
browser of its own here)."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, Playwright, sync_playwright

# The operator, as the end-to-end tests have it.
from tests.e2e.conftest import operator, running_operator
from tests.kube import REPO_ROOT, VENV_BIN, fresh_namespace, wait_for

__all__ = ["operator", "running_operator"]

CHROMIUM = os.environ.get("DAGFLOW_CHROMIUM", "/usr/bin/chromium")
# Headless, and nothing that reaches for the network: the machine may be offline.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1280, "height": 720}


@dataclass
class Dashboard:
    """A running `dagflow ui`."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def api(self, path: str, token: str | None = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.get(f"{self.url}{path}", headers=headers, timeout=30)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_dashboard(log_dir: Path, *args: str) -> Dashboard:
    port = free_port()
    log = log_dir / f"dashboard-{port}.log"
    process = subprocess.Popen(
        [str(VENV_BIN / "dagflow"), "ui", "--port", str(port), *args],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        cwd=REPO_ROOT,
    )
    dashboard = Dashboard(f"http://127.0.0.1:{port}", process, log)

    def healthy() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"dagflow ui exited:\n{log.read_text()}")
        try:
            return dashboard.api("/healthz").status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(healthy, timeout=30, what="the dashboard to answer")
    return dashboard


def stop_dashboard(dashboard: Dashboard) -> None:
    dashboard.process.terminate()
    try:
        dashboard.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        dashboard.process.kill()


@pytest.fixture(scope="package")
def dashboard(cluster: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    """`dagflow ui` as a person starts it: with their kubeconfig (the cluster's admin here)."""
    started = start_dashboard(tmp_path_factory.mktemp("dashboard"))
    yield started
    stop_dashboard(started)


@pytest.fixture(scope="package")
def bearer_dashboard(cluster: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    """The dashboard as the chart runs it in the cluster: each request reads with its bearer token."""
    started = start_dashboard(tmp_path_factory.mktemp("bearer-dashboard"), "--auth", "bearer")
    yield started
    stop_dashboard(started)


@pytest.fixture(scope="package")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="package")
def browser(playwright: Playwright) -> Iterator[Browser]:
    # Playwright starts Chromium with a new, empty profile directory of its own every time.
    launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield launched
    launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport=VIEWPORT)
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    yield opened
    context.close()
    assert not errors, f"the page threw: {errors}"


@pytest.fixture
def other_namespace(cluster: object) -> Iterator[str]:
    """A second fresh namespace, deleted afterwards without waiting."""
    with fresh_namespace("t") as name:
        yield name
