"""A person without read access to a namespace sees nothing of it: the dashboard, as the chart runs
it in the cluster, reads with each request's bearer token and nothing else."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser.conftest import Dashboard
from tests.e2e.flows import create, flow, work
from tests.kube import service_account_token
from tests.operator_process import OperatorProcess

VIEWER = "viewer"
READ_ONLY = [
    {"apiGroups": ["dagflow.dev"], "resources": ["dagflows"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get", "list"]},
    {"apiGroups": [""], "resources": ["pods", "pods/log", "events"], "verbs": ["get", "list"]},
]


def viewer_token(namespace: str) -> str:
    """A ServiceAccount that may read flows in `namespace` only, and a token of it."""
    return service_account_token(namespace, VIEWER, READ_ONLY)


@pytest.fixture
def viewer_page(browser: Browser, other_namespace: str) -> Iterator[tuple[Page, str]]:
    """A browser whose every request carries the viewer's token, as an authenticating proxy adds it."""
    token = viewer_token(other_namespace)
    context = browser.new_context(extra_http_headers={"Authorization": f"Bearer {token}"})
    yield context.new_page(), token
    context.close()


def test_a_user_without_read_access_sees_nothing_of_a_namespace(
    bearer_dashboard: Dashboard,
    viewer_page: tuple[Page, str],
    namespace: str,
    other_namespace: str,
    running_operator: OperatorProcess,
) -> None:
    page, token = viewer_page
    create(flow("hidden-flow", [work("secret-step", duration="1s")]), namespace)
    create(flow("visible-flow", [work("open-step", duration="1s")]), other_namespace)

    # Where the viewer may read, they see the flow and its graph.
    page.goto(f"{bearer_dashboard.url}/#/ns/{other_namespace}")
    expect(page.locator('tr[data-flow="visible-flow"]')).to_be_visible()
    page.goto(f"{bearer_dashboard.url}/#/ns/{other_namespace}/flows/visible-flow")
    expect(page.locator('g.node[data-work="open-step"]')).to_be_visible()

    # Where they may not, nothing: not the list, not the flow's page, not its stream.
    page.goto(f"{bearer_dashboard.url}/#/ns/{namespace}")
    expect(page.locator("[data-role=error]")).to_contain_text(
        f"may not read DAGFlows in namespace {namespace}"
    )
    expect(page.locator("table.flows")).to_have_count(0)
    page.goto(f"{bearer_dashboard.url}/#/ns/{namespace}/flows/hidden-flow")
    expect(page.locator("[data-role=error]")).to_be_visible()
    expect(page.locator("g.node")).to_have_count(0)
    assert "hidden-flow" not in page.locator("#view").inner_text()
    assert "secret-step" not in page.content()

    base = f"/api/namespaces/{namespace}"
    for path in (
        f"{base}/flows",
        f"{base}/flows/hidden-flow",
        f"{base}/flows/hidden-flow/works/secret-step",
        f"{base}/flows/hidden-flow/works/secret-step/logs",
        f"{base}/stream",
    ):
        answer = bearer_dashboard.api(path, token)
        assert answer.status_code == 403, (path, answer.status_code, answer.text)
        assert "secret-step" not in answer.text
        assert bearer_dashboard.api(path).status_code == 401, path
    assert namespace not in bearer_dashboard.api("/api/hub").json(), "a watch was started for the viewer"
    for path in ("/api/hub", "/api/config"):
        assert bearer_dashboard.api(path).status_code == 401, path
    assert namespace not in bearer_dashboard.api("/api/hub", token).json()
    assert bearer_dashboard.api(f"/api/namespaces/{other_namespace}/flows", token).status_code == 200
