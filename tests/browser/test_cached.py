"""The dashboard marks cached works in the graph: a work taken from the cache whole, and a matrix work
some of whose instances the cache had, look unlike the works that ran."""

from __future__ import annotations

import json

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import Dashboard
from tests.browser.test_dashboard import flow_page
from tests.e2e.flows import create, flow, wait_for_phase, work
from tests.e2e.test_runs import wait_for_run
from tests.operator_process import OperatorProcess

pytestmark = pytest.mark.local_cluster

STROKE = "node => getComputedStyle(node.querySelector('rect.box')).strokeDasharray"
STACK_STROKE = "node => getComputedStyle(node.querySelector('rect.stack')).strokeDasharray"


def test_cached_works_are_drawn_as_cached(
    dashboard: Dashboard, page: Page, namespace: str, running_operator: OperatorProcess
) -> None:
    reported = {"sim.dagflow.dev/termination-message": json.dumps({"rows": "10"})}
    prepare = work("prepare", outputs=[{"name": "rows"}], annotations=reported)
    grid = work("grid", "prepare", matrix={"model": ["a", "b"]})
    grid["container"]["command"] = [
        "train",
        "--model",
        "$(matrix.model)",
        "--rows",
        "$(works.prepare.outputs.rows)",
    ]
    report = work("report", "grid", cache={"enabled": False})
    create(flow("cached", [prepare, grid, report], cache={"enabled": True}), namespace)
    assert wait_for_phase(namespace, "cached")["phase"] == "Succeeded"
    # A new value: prepare is taken from the cache, the grid's two old instances too, its new one
    # runs; report is not cached and runs.
    grid["matrix"] = {"model": ["a", "b", "c"]}
    create(flow("cached", [prepare, grid, report], cache={"enabled": True}), namespace)
    done = wait_for_run(namespace, "cached", 2, "Succeeded", "Failed")
    assert done["phase"] == "Succeeded", done

    page.goto(flow_page(dashboard, namespace, "cached"))
    page.wait_for_selector("body[data-ready=graph]")
    cached = page.locator('g.node[data-work="prepare"]')
    partly = page.locator('g.node[data-work="grid"]')
    ran = page.locator('g.node[data-work="report"]')
    expect(cached).to_have_attribute("data-cached", "all")
    expect(cached).to_contain_text("Succeeded · cached")
    expect(partly).to_have_attribute("data-cached", "some")
    expect(partly).to_contain_text("3/3 · Succeeded · 2 cached")
    expect(ran).not_to_have_attribute("data-cached", "all")
    expect(ran).not_to_contain_text("cached")
    assert cached.evaluate(STROKE) != ran.evaluate(STROKE), "a cached work looks like one that ran"
    assert partly.evaluate(STACK_STROKE) != "none", "a partly cached matrix work looks like one that ran"
