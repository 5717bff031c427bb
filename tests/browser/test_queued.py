"""The dashboard of flows that wait in Kueue: queued works are shown apart from pending ones, in the
flow list and in the graph, and follow admission live."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import Dashboard
from tests.browser.test_dashboard import LIVE_TIMEOUT_MS, flow_page
from tests.e2e.conftest import kueue, local_queue
from tests.e2e.flows import create, flow, status, wait_for_phase, work, works_by_name
from tests.e2e.test_kueue_flows import hold_every_gpu
from tests.kube import wait_for
from tests.operator_process import OperatorProcess

__all__ = ["kueue", "local_queue"]

pytestmark = [pytest.mark.local_cluster, pytest.mark.kueue]


def test_a_queued_work_is_drawn_apart_from_pending_ones_and_runs_once_admitted(
    dashboard: Dashboard, page: Page, namespace: str, local_queue: str, running_operator: OperatorProcess
) -> None:
    hold_every_gpu(namespace, local_queue, "25s")
    works = [work("train", duration="1s", gpu=1), work("report", "train", duration="1s")]
    create(flow("waiting", works, queueName=local_queue), namespace)
    wait_for(
        lambda: works_by_name(status(namespace, "waiting")).get("train", {}).get("reason") == "Queued",
        timeout=30,
        what="the training to be queued",
    )

    page.goto(f"{dashboard.url}/#/ns/{namespace}")
    page.wait_for_selector("body[data-ready=flows]")
    expect(page.locator('tr[data-flow="waiting"] [data-role=queued]')).to_have_text("1 queued")
    expect(page.locator('tr[data-flow="blocker"] [data-role=queued]')).to_have_count(0)

    page.goto(flow_page(dashboard, namespace, "waiting"))
    page.wait_for_selector("body[data-ready=graph]")
    train = page.locator('g.node[data-work="train"]')
    report = page.locator('g.node[data-work="report"]')
    expect(train).to_have_attribute("data-queued", "Queued")
    expect(train).to_contain_text("Pending (Queued)")
    expect(report).to_have_attribute("data-phase", "Pending")
    expect(report).not_to_have_attribute("data-queued", "Queued")
    fill = "node => getComputedStyle(node.querySelector('rect.box')).fill"
    assert train.evaluate(fill) != report.evaluate(fill), "a queued work looks like a pending one"
    expect(page.locator("#flow-head [data-role=queued]")).to_have_text("1 queued")

    train.click()
    panel = page.locator("#panel[data-loaded='1'][data-work='train']")
    expect(panel).to_be_visible()
    expect(panel.locator(".phase").first).to_have_text("Pending (Queued)")
    expect(panel.locator("[data-field=message]")).to_contain_text(f"queued in LocalQueue {local_queue}")

    # The blocker ends, Kueue admits the training: the page follows without a reload.
    expect(report).to_have_attribute("data-phase", "Succeeded", timeout=LIVE_TIMEOUT_MS)
    expect(train).to_have_attribute("data-phase", "Succeeded")
    expect(train).not_to_have_attribute("data-queued", "Queued")
    assert wait_for_phase(namespace, "waiting", timeout=60)["phase"] == "Succeeded"
