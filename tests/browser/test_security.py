"""The dashboard's defences in a real browser: a page that rebinds its own domain name to the
dashboard's address gets nothing, no other site may frame it, and its own pages work whole under
its Content-Security-Policy."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, Page, Playwright, expect

from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS, Dashboard
from tests.e2e.flows import create, flow, wait_for_phase, work
from tests.operator_process import OperatorProcess

# A name of the attacker's that their DNS answers with 127.0.0.1 once the page has loaded: the
# browser then sends the page's requests to the dashboard, as the same origin as the page.
REBOUND = "rebound.example"

# Every Content-Security-Policy violation on the page, as the browser reports it.
RECORD_VIOLATIONS = """
window.cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.cspViolations.push(`${event.violatedDirective}: ${event.blockedURI} ${event.sample}`);
});
"""


@pytest.fixture(scope="module")
def rebinding_browser(playwright: Playwright) -> Iterator[Browser]:
    """Chromium whose resolver answers REBOUND with 127.0.0.1, as a rebinding DNS server does."""
    launched = playwright.chromium.launch(
        executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, f"--host-resolver-rules=MAP {REBOUND} 127.0.0.1"]
    )
    yield launched
    launched.close()


def test_a_page_that_rebinds_its_domain_to_the_dashboard_gets_nothing(
    dashboard: Dashboard,
    rebinding_browser: Browser,
    namespace: str,
    running_operator: OperatorProcess,
) -> None:
    create(flow("private-flow", [work("private-step", duration="1s")]), namespace)
    wait_for_phase(namespace, "private-flow", timeout=120)
    port = urlsplit(dashboard.url).port
    context = rebinding_browser.new_context()
    page = context.new_page()

    answer = page.goto(f"http://{REBOUND}:{port}/#/ns/{namespace}")
    assert answer is not None and answer.status == 421
    assert "private-flow" not in page.content()
    # The attacker's script, now same-origin with the dashboard's address, asks for the data.
    api = f"/api/namespaces/{namespace}/flows"
    for path in (api, f"{api}/private-flow", f"/api/namespaces/{namespace}/stream", "/api/config"):
        status, text = page.evaluate(
            "async (path) => { const r = await fetch(path); return [r.status, await r.text()]; }", path
        )
        assert status == 421, (path, status)
        assert "private" not in text, path
    context.close()

    # A page of another origin that asks the dashboard directly (CORS) is refused as well.
    for origin in (f"http://{REBOUND}:{port}", "http://localhost:3000", "null"):
        refused = httpx.get(f"{dashboard.url}{api}", headers={"Origin": origin}, timeout=30)
        assert refused.status_code == 403, origin
        assert "private-flow" not in refused.text
    assert httpx.get(f"{dashboard.url}{api}", timeout=30).status_code == 200


def test_pages_work_under_the_content_security_policy_and_no_site_frames_them(
    dashboard: Dashboard, page: Page, namespace: str, running_operator: OperatorProcess
) -> None:
    """The policy forbids inline code and styles, other origins and framing: the flows page (with
    its progress bars), the graph and a work's panel all work with no violation reported."""
    create(flow("guarded", [work("first", duration="1s"), work("second", "first")]), namespace)
    wait_for_phase(namespace, "guarded", timeout=120)
    page.add_init_script(RECORD_VIOLATIONS)

    answer = page.goto(f"{dashboard.url}/#/ns/{namespace}")
    assert answer is not None
    policy = answer.headers.get("content-security-policy", "")
    assert "frame-ancestors 'none'" in policy and "script-src 'self'" in policy, policy
    row = page.locator('tr[data-flow="guarded"]')
    expect(row.locator(".phase").first).to_have_text("Succeeded")
    bar = row.locator(".progress .bar span")
    assert bar.evaluate("span => span.getBoundingClientRect().width") > 0, "the progress bar is empty"

    page.goto(f"{dashboard.url}/#/ns/{namespace}/flows/guarded")
    page.wait_for_selector("body[data-ready=graph]")
    expect(page.locator("g.node")).to_have_count(2)
    page.locator('g.node[data-work="second"]').click()
    expect(page.locator("#panel[data-loaded='1'][data-work='second']")).to_be_visible()
    head_bar = page.locator("#flow-head .progress .bar span")
    assert head_bar.evaluate("span => span.getBoundingClientRect().width") > 0
    assert page.evaluate("window.cspViolations") == []

    # Another page that frames the dashboard shows nothing of it.
    page.set_content(f'<iframe id="framed" src="{dashboard.url}/#/ns/{namespace}"></iframe>')
    page.wait_for_timeout(2000)
    framed = page.frame_locator("#framed")
    expect(framed.locator("#view")).to_have_count(0)
    expect(framed.locator("body")).not_to_contain_text("guarded")
