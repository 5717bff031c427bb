"""The dashboard's Approve and Reject buttons: shown only to a reader whose token may approve the gate,
and a click approves it as that reader, the API server recording who; a request from anything but
the dashboard's own page is refused."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser.conftest import Dashboard
from tests.e2e.flows import create, jobs, status, works_by_name
from tests.e2e.test_approvals import approval_policies, gated_flow, waiting_gate
from tests.kube import apply, service_account_token, wait_for
from tests.operator_process import OperatorProcess

__all__ = ["approval_policies"]

READS = [
    {"apiGroups": ["dagflow.dev"], "resources": ["dagflows"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get", "list"]},
    {"apiGroups": [""], "resources": ["pods", "pods/log", "events"], "verbs": ["get", "list"]},
]


def page_with_token(browser: Browser, token: str) -> Page:
    """A browser whose every request carries `token`, as an authenticating proxy adds it."""
    return browser.new_context(extra_http_headers={"Authorization": f"Bearer {token}"}).new_page()


@pytest.fixture
def readers(namespace: str, approval_policies: str) -> Iterator[tuple[str, str]]:
    """Tokens of a reader who may only look, and of one bound to the chart's approver role."""
    viewer = service_account_token(namespace, "viewer", READS)
    approver = service_account_token(namespace, "lead", READS)
    apply(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "lead-approves"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": approval_policies,
            },
            "subjects": [{"kind": "ServiceAccount", "name": "lead", "namespace": namespace}],
        },
        namespace=namespace,
    )
    yield viewer, approver


def open_gate(page: Page, dashboard: Dashboard, namespace: str) -> None:
    page.goto(f"{dashboard.url}/#/ns/{namespace}/flows/gated")
    node = page.locator('g.node[data-work="promote"]')
    expect(node).to_have_attribute("data-phase", "Waiting")
    node.click()
    expect(page.locator("#panel [data-role=approval]")).to_contain_text("Promote the best model?")


def test_only_an_approver_sees_the_buttons_and_a_click_approves_as_them(
    bearer_dashboard: Dashboard,
    browser: Browser,
    namespace: str,
    running_operator: OperatorProcess,
    readers: tuple[str, str],
) -> None:
    viewer, approver = readers
    create(gated_flow("gated"), namespace)
    waiting_gate(namespace, "gated")

    looking = page_with_token(browser, viewer)
    looking.goto(f"{bearer_dashboard.url}/#/ns/{namespace}")
    waiting = looking.locator('tr[data-flow="gated"] [data-role=waiting]')
    expect(waiting).to_have_text("1 waiting for approval")
    open_gate(looking, bearer_dashboard, namespace)
    expect(looking.locator("#panel [data-role=not-approver]")).to_be_visible()
    expect(looking.locator("#panel button.approve")).to_have_count(0)
    looking.context.close()

    # Not from the page: without its token, or from another site's page, nothing is decided.
    decision = f"{bearer_dashboard.url}/api/namespaces/{namespace}/flows/gated/works/promote/decision"
    headers = {"Authorization": f"Bearer {approver}", "Content-Type": "application/json"}
    body = {"decision": "Approved", "params": {"version": "forged"}}
    assert httpx.post(decision, json=body, headers=headers, timeout=30).status_code == 403
    token = bearer_dashboard.api("/api/config", approver).json()["csrfToken"]
    foreign = {
        **headers,
        "X-DAGFlow-CSRF": token,
        "Origin": "http://evil.example",
        "Sec-Fetch-Site": "cross-site",
    }
    assert httpx.post(decision, json=body, headers=foreign, timeout=30).status_code == 403
    assert works_by_name(status(namespace, "gated"))["promote"]["phase"] == "Waiting"

    deciding = page_with_token(browser, approver)
    open_gate(deciding, bearer_dashboard, namespace)
    deciding.locator("#panel input[data-param=version]").fill("v9")
    deciding.locator("#panel input[data-role=words]").fill("best score this week")
    deciding.locator("#panel button.approve").click()
    expect(deciding.locator("#panel [data-role=answer]")).to_have_text("Approval sent.")
    expect(deciding.locator('g.node[data-work="deploy"]')).to_have_attribute(
        "data-phase", "Succeeded", timeout=60_000
    )
    expect(deciding.locator("#panel [data-role=decision]")).to_contain_text(
        f"Approved by system:serviceaccount:{namespace}:lead"
    )
    deciding.context.close()

    gate = works_by_name(status(namespace, "gated"))["promote"]["approval"]
    assert (gate["by"], gate["params"], gate["message"]) == (
        f"system:serviceaccount:{namespace}:lead",
        {"version": "v9"},
        "best score this week",
    )

    def deploy_args() -> list[str] | None:
        found = [
            job
            for job in jobs(namespace)
            if job["metadata"]["annotations"]["dagflow.dev/work-name"] == "deploy"
        ]
        return found[0]["spec"]["template"]["spec"]["containers"][0]["args"] if found else None

    assert wait_for(deploy_args, timeout=30, what="the deploy Job") == ["v9"]
