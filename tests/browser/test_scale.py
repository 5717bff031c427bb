"""A 2,000-work flow's page: how long until its graph is drawn and a click on a work is answered.
Measured and printed (docs/performance.md records it), not asserted: a shared machine's timing is
no verdict."""

from __future__ import annotations

import json
import time

import pytest
from playwright.sync_api import Page

from tests.browser.conftest import Dashboard
from tests.e2e.flows import create, flow, work
from tests.kube import REPO_ROOT
from tests.operator_process import OperatorProcess

LAYERS = 40
WIDTH = 50  # 40 x 50 = 2,000 works; each after two works of the layer before: 3,900 edges
RESULT = REPO_ROOT / "bench" / "results" / "ui-2000-works.json"


def layered_flow(name: str) -> dict[str, object]:
    works = []
    for layer in range(LAYERS):
        for column in range(WIDTH):
            after = [f"w{layer - 1}-{column}", f"w{layer - 1}-{(column + 1) % WIDTH}"] if layer else []
            works.append(work(f"w{layer}-{column}", *after))
    # Suspended: the page is measured, not the cluster running 2,000 Jobs.
    return flow(name, works, suspend=True)


def test_a_2000_work_flow_page_is_interactive(
    dashboard: Dashboard,
    page: Page,
    namespace: str,
    running_operator: OperatorProcess,
    capsys: pytest.CaptureFixture[str],
) -> None:
    manifest = layered_flow("big")
    create(manifest, namespace)
    works = LAYERS * WIDTH
    assert len(manifest["spec"]["works"]) == works  # type: ignore[index]
    url = f"{dashboard.url}/#/ns/{namespace}/flows/big"
    page.goto(f"{dashboard.url}/healthz")  # the browser is up before the clock starts

    started = time.monotonic()
    page.goto(url)
    page.wait_for_selector("body[data-ready=graph]", timeout=60_000)
    drawn = time.monotonic() - started
    target = f"w{LAYERS // 2}-{WIDTH // 2}"
    page.locator(f'g.node[data-work="{target}"]').click()
    page.wait_for_selector(f"#panel[data-loaded='1'][data-work='{target}']", timeout=60_000)
    interactive = time.monotonic() - started

    assert page.locator("g.node").count() == works
    assert page.locator("path.edge").count() == (LAYERS - 1) * WIDTH * 2
    timings = page.evaluate("window.dagflowTimings")
    result = {
        "works": works,
        "edges": (LAYERS - 1) * WIDTH * 2,
        "graph_drawn_s": round(drawn, 2),
        "first_click_answered_s": round(interactive, 2),
        "page": timings,
    }
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(result, indent=2) + "\n")
    with capsys.disabled():
        print(
            f"\n2,000-work flow page: graph drawn in {drawn:.2f} s, a click on a work answered at "
            f"{interactive:.2f} s (fetch {timings['fetchMs']} ms, layout and drawing "
            f"{timings['layoutAndDrawMs']} ms); {RESULT.relative_to(REPO_ROOT)}"
        )
