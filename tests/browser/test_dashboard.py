"""The dashboard in a real browser against the local cluster and the real operator: the example's
graph, its colours changing live, a work's details, and the screenshots of the README (written under
build/screenshots; `make screenshots` copies them into docs/images on purpose)."""

from __future__ import annotations

import json
from typing import Any

from playwright.sync_api import Page, expect

from tests.browser.conftest import Dashboard
from tests.e2e.flows import create, failing, flow, wait_for_phase, work, works_by_name
from tests.e2e.test_examples import documents, of_kind
from tests.kube import REPO_ROOT, get_json, kubectl, wait_for
from tests.operator_process import OperatorProcess

EXAMPLE = REPO_ROOT / "examples" / "ml-pipeline.yaml"
SCREENSHOTS = REPO_ROOT / "build" / "screenshots"
DOC_IMAGES = REPO_ROOT / "docs" / "images"
LIVE_TIMEOUT_MS = 90_000

# Every change of a node's phase, as the page makes it: [work, phase, milliseconds since start].
RECORD_PHASES = """
() => {
  window.phaseChanges = [];
  const started = performance.now();
  const nodes = document.querySelectorAll("g.node");
  for (const node of nodes) window.phaseChanges.push([node.dataset.work, node.dataset.phase, 0]);
  new MutationObserver((mutations) => {
    for (const m of mutations) {
      const {work, phase} = m.target.dataset;
      window.phaseChanges.push([work, phase, performance.now() - started]);
    }
  }).observe(
    document.querySelector("svg.graph"),
    {attributes: true, attributeFilter: ["data-phase"], subtree: true},
  );
  window.sameDocument = true;
}
"""


def flow_page(dashboard: Dashboard, namespace: str, name: str) -> str:
    return f"{dashboard.url}/#/ns/{namespace}/flows/{name}"


def drawn_nodes(page: Page) -> dict[str, dict[str, str]]:
    nodes: dict[str, dict[str, str]] = page.eval_on_selector_all(
        "g.node",
        "nodes => Object.fromEntries(nodes.map(n => [n.dataset.work, {...n.dataset, text: n.textContent}]))",
    )
    return nodes


def drawn_edges(page: Page) -> set[tuple[str, str]]:
    edges = page.eval_on_selector_all("path.edge", "edges => edges.map(e => [e.dataset.from, e.dataset.to])")
    return {(before, after) for before, after in edges}


def phases_seen(page: Page, name: str) -> list[str]:
    """The phases a node went through on the page, each once, in order."""
    changes: list[list[Any]] = page.evaluate("window.phaseChanges")
    seen: list[str] = []
    for work_name, phase, _ in changes:
        if work_name == name and (not seen or seen[-1] != phase):
            seen.append(phase)
    return seen


def test_example_graph_is_drawn_and_coloured_live(
    dashboard: Dashboard,
    page: Page,
    namespace: str,
    running_operator: OperatorProcess,
) -> None:
    """Every work and dependency of the example, the matrix work as one node with its instance
    count, its colours following the run without a reload; the README's screenshots, made under
    build/ so that the tests leave the checkout's docs as they were."""
    docs_images_before = {path.name: path.stat().st_mtime_ns for path in DOC_IMAGES.glob("*")}
    docs = documents(EXAMPLE)
    example = of_kind(docs, "DAGFlow")[0]
    name = example["metadata"]["name"]
    kubectl("apply", "-f", str(EXAMPLE), namespace=namespace)

    page.goto(flow_page(dashboard, namespace, name))
    page.wait_for_selector("body[data-ready=graph]")
    page.evaluate(RECORD_PHASES)

    works = example["spec"]["works"]
    nodes = drawn_nodes(page)
    assert set(nodes) == {entry["name"] for entry in works}
    assert drawn_edges(page) == {
        (before, entry["name"]) for entry in works for before in entry.get("dependsOn", [])
    }
    matrix = next(entry for entry in works if "matrix" in entry)
    combinations = len(next(iter(matrix["matrix"].values())))
    assert nodes[matrix["name"]]["kind"] == "matrix"
    assert nodes[matrix["name"]]["instances"] == str(combinations)
    assert (
        f"/{combinations}" in nodes[matrix["name"]]["text"]
        or f"\N{MULTIPLICATION SIGN}{combinations}" in nodes[matrix["name"]]["text"]
    )
    assert {nodes[entry["name"]]["kind"] for entry in works if "serve" in entry} == {"serve"}

    train = page.locator(f'g.node[data-work="{matrix["name"]}"]')
    expect(train).to_have_attribute("data-phase", "Running", timeout=LIVE_TIMEOUT_MS)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "ui-flow-running.png"))

    serve = next(entry["name"] for entry in works if "serve" in entry)
    expect(page.locator(f'g.node[data-work="{serve}"]')).to_have_attribute(
        "data-phase", "Serving", timeout=LIVE_TIMEOUT_MS
    )
    expect(page.locator("[data-role=flow-phase] .phase")).to_have_text("Serving")
    expect(train).to_contain_text(f"{combinations}/{combinations}")
    page.locator(f'g.node[data-work="{serve}"]').click()
    expect(page.locator("#panel[data-loaded='1']")).to_be_visible()
    page.screenshot(path=str(SCREENSHOTS / "ui-flow-serving.png"))

    assert page.evaluate("window.sameDocument") is True, "the page was reloaded"
    assert phases_seen(page, "process")[-2:] == ["Running", "Succeeded"]
    assert phases_seen(page, matrix["name"])[-2:] == ["Running", "Succeeded"]
    assert phases_seen(page, serve)[-1] == "Serving"
    docs_images_after = {path.name: path.stat().st_mtime_ns for path in DOC_IMAGES.glob("*")}
    assert docs_images_after == docs_images_before, "the test wrote into docs/images"
    for name in ("ui-flow-running.png", "ui-flow-serving.png"):
        assert (SCREENSHOTS / name).stat().st_size > 0, name


def test_colours_change_live_from_one_shared_watch(
    dashboard: Dashboard, browser: Any, page: Page, namespace: str, running_operator: OperatorProcess
) -> None:
    """Two browsers on one namespace share one watch; each sees every phase as the flow runs."""
    create(
        flow("steps", [work("first", duration="3s"), work("second", "first", duration="3s")]),
        namespace,
    )
    page.goto(flow_page(dashboard, namespace, "steps"))
    page.wait_for_selector("body[data-ready=graph]")
    page.evaluate(RECORD_PHASES)
    other = browser.new_context().new_page()
    other.goto(f"{dashboard.url}/#/ns/{namespace}")
    expect(other.locator('tr[data-flow="steps"]')).to_be_visible()

    def both_subscribed() -> dict[str, Any] | None:
        stats: dict[str, Any] = dashboard.api("/api/hub").json()
        return stats if stats.get(namespace, {}).get("subscribers") == 2 else None

    stats = wait_for(both_subscribed, timeout=15, what="both pages to follow the namespace")
    assert stats[namespace]["watches"] == 1, stats

    expect(page.locator('g.node[data-work="second"]')).to_have_attribute(
        "data-phase", "Succeeded", timeout=LIVE_TIMEOUT_MS
    )
    expect(other.locator('tr[data-flow="steps"] .phase').first).to_have_text("Succeeded", timeout=10_000)
    assert page.evaluate("window.sameDocument") is True, "the page was reloaded"
    for name in ("first", "second"):
        seen = phases_seen(page, name)
        assert seen[-2:] == ["Running", "Succeeded"], (name, seen)
    assert phases_seen(page, "second")[0] == "Pending", "second was drawn after it started"
    other.context.close()


def test_clicking_a_work_shows_its_details(
    dashboard: Dashboard, page: Page, namespace: str, running_operator: OperatorProcess
) -> None:
    """Job, pod, node, attempts, times, message, outputs and Events of a work, in its side panel."""
    create(
        flow(
            "details",
            [
                work(
                    "measure",
                    duration="1s",
                    outputs=[{"name": "score"}],
                    annotations={"sim.dagflow.dev/termination-message": '{"score": 0.75}'},
                ),
                work("broken", "measure", annotations=failing(exit_code=3)),
            ],
            failurePolicy="Continue",
        ),
        namespace,
    )
    final = works_by_name(wait_for_phase(namespace, "details", timeout=120))
    page.goto(flow_page(dashboard, namespace, "details"))
    page.wait_for_selector("body[data-ready=graph]")

    page.locator('g.node[data-work="measure"]').click()
    panel = page.locator("#panel[data-loaded='1'][data-work='measure']")
    expect(panel).to_be_visible()
    pods = get_json("pods", "-l", "dagflow.dev/work=measure", namespace=namespace)["items"]
    assert len(pods) == 1
    expect(panel.locator("[data-field=job]")).to_have_text(final["measure"]["job"])
    expect(panel.locator("[data-field=pods]")).to_contain_text(pods[0]["metadata"]["name"])
    expect(panel.locator("[data-field=node]")).to_have_text(pods[0]["spec"]["nodeName"])
    expect(panel.locator("[data-field=attempts]")).to_have_text(str(final["measure"]["attempts"]))
    expect(panel.locator("[data-field=started]")).not_to_have_text("-")
    expect(panel.locator("[data-field=finished]")).not_to_have_text("-")
    assert json.loads(panel.locator("[data-field=outputs] pre").inner_text()) == {"score": 0.75}
    expect(panel.locator("[data-field=events]")).to_contain_text("WorkSucceeded")
    expect(panel.locator("[data-field=events]")).to_contain_text(f"Job/{final['measure']['job']}")
    panel.locator("button.logs").click()
    expect(panel.locator("[data-field=logs] h4")).to_have_text(pods[0]["metadata"]["name"])

    page.locator('g.node[data-work="broken"]').click()
    panel = page.locator("#panel[data-loaded='1'][data-work='broken']")
    expect(panel).to_be_visible()
    expect(panel.locator(".phase").first).to_have_text("Failed")
    expect(panel.locator("[data-field=message]")).to_have_text(final["broken"]["message"])
    assert "BackoffLimitExceeded" in final["broken"]["message"]
    expect(panel.locator("[data-field=events]")).to_contain_text("WorkFailed")


def test_a_flow_deleted_and_made_again_under_its_name_is_drawn_anew_without_reload(
    dashboard: Dashboard, page: Page, namespace: str, running_operator: OperatorProcess
) -> None:
    """The page says a flow was deleted, and draws the next flow of that name (another uid, the same
    generation 1) as it appears; a name too long for its box is cut, and whole in the tooltip."""
    long_name = "preprocess-" + "x" * 52
    create(flow("again", [work("first", duration="1s"), work(long_name, "first")]), namespace)
    wait_for_phase(namespace, "again", timeout=120)
    page.goto(flow_page(dashboard, namespace, "again"))
    page.wait_for_selector("body[data-ready=graph]")
    page.evaluate("window.sameDocument = true")
    node = page.locator(f'g.node[data-work="{long_name}"]')
    expect(node.locator("title")).to_have_text(long_name)
    shown = node.locator("text.name").text_content() or ""
    assert shown.endswith("…") and long_name.startswith(shown[:-1]), shown
    box, label = node.locator("rect.box").bounding_box(), node.locator("text.name").bounding_box()
    assert box and label and label["x"] + label["width"] <= box["x"] + box["width"], (box, label)

    kubectl("delete", "dagflow", "again", "--wait=true", namespace=namespace)
    expect(page.locator("[data-role=deleted]")).to_be_visible(timeout=LIVE_TIMEOUT_MS)
    create(flow("again", [work("second", duration="1s"), work("third", "second")]), namespace)
    expect(page.locator('g.node[data-work="third"]')).to_be_visible(timeout=LIVE_TIMEOUT_MS)
    assert set(drawn_nodes(page)) == {"second", "third"}
    assert drawn_edges(page) == {("second", "third")}
    expect(page.locator("[data-role=deleted]")).to_have_count(0)
    expect(page.locator('g.node[data-work="third"]')).to_have_attribute(
        "data-phase", "Succeeded", timeout=LIVE_TIMEOUT_MS
    )
    assert page.evaluate("window.sameDocument") is True, "the page was reloaded"
