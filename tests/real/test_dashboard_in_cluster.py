"""The dashboard as the chart deploys it (`ui.enabled`): its pod runs on the real node under the
restricted Pod Security level and reads with each request's bearer token, so a reader sees what
their own token may read and nothing more."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from tests.e2e.flows import flow, work
from tests.kube import apply, get_json, service_account_token
from tests.operator_process import DeployedOperator
from tests.real.conftest import OPERATOR_NAMESPACE, REAL_NODE, RELEASE

pytestmark = [pytest.mark.real, pytest.mark.local_cluster]

UI = f"{RELEASE}-dagflow-operator-ui"


def answer(url: str, token: str | None) -> tuple[int, Any]:
    """The dashboard's HTTP status and JSON body for a GET with that bearer token (None: without)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=15) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def test_the_charts_dashboard_reads_with_each_readers_own_token(
    chart_operator: DeployedOperator, namespace: str
) -> None:
    pods = get_json("pods", "-l", "app.kubernetes.io/component=ui", namespace=OPERATOR_NAMESPACE)["items"]
    assert len(pods) == 1 and pods[0]["spec"]["nodeName"] == REAL_NODE, pods
    assert all(status["ready"] for status in pods[0]["status"]["containerStatuses"])
    # A flow that runs nothing: what matters is who may read it.
    apply(flow("private", [work("only")], suspend=True), namespace=namespace)
    reader = service_account_token(
        namespace,
        "reader",
        [{"apiGroups": ["dagflow.dev"], "resources": ["dagflows"], "verbs": ["get", "list", "watch"]}],
    )
    stranger = service_account_token(namespace, "stranger")
    service = get_json("service", UI, namespace=OPERATOR_NAMESPACE)["spec"]
    flows_url = (
        f"http://{service['clusterIP']}:{service['ports'][0]['port']}/api/namespaces/{namespace}/flows"
    )

    status, body = answer(flows_url, reader)
    assert status == 200, body
    assert [row["name"] for row in body["flows"]] == ["private"]
    status, body = answer(flows_url, stranger)
    assert status == 403, body
    assert "private" not in json.dumps(body)
    assert answer(flows_url, None)[0] == 401
