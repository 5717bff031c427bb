"""Notifications posted by real pods to a real HTTP receiver on the real node: Slack's format and plain
JSON, a receiver that answers 500 before it takes the message, and a Secret that is not there."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import pytest

from tests.e2e.flows import create, flow, wait_for_phase
from tests.kube import apply, get_json, kubectl, wait_for
from tests.operator_process import DeployedOperator
from tests.real.conftest import EXAMPLES_IMAGE, OPERATOR_NAMESPACE
from tests.real.test_real_node import pod_ready, python_work

pytestmark = [pytest.mark.real, pytest.mark.local_cluster]

RECEIVER_PORT = 8080
# Records every POST; answers 500 to the first two posts to a path under /flaky, 200 to the rest;
# a GET lists what it was sent.
RECEIVER = """
import http.server, json
seen, counts = [], {}
class Receiver(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get('Content-Length') or 0)).decode()
        counts[self.path] = counts.get(self.path, 0) + 1
        seen.append({'path': self.path, 'contentType': self.headers.get('Content-Type'), 'body': body})
        refused = self.path.startswith('/flaky') and counts[self.path] <= 2
        self.send_response(500 if refused else 200)
        self.end_headers()
        self.wfile.write(b'busy' if refused else b'ok')
    def do_GET(self):
        answer = json.dumps(seen).encode()
        self.send_response(200)
        self.send_header('Content-Type', 'application/json')
        self.end_headers()
        self.wfile.write(answer)
http.server.ThreadingHTTPServer(('', PORT), Receiver).serve_forever()
""".replace("PORT", str(RECEIVER_PORT))


def start_receiver(namespace: str) -> str:
    """The receiver's pod and Service; its base URL, as pods and this machine reach it."""
    labels = {"app": "receiver"}
    apply(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "receiver", "labels": labels},
            "spec": {
                "containers": [
                    {
                        "name": "receiver",
                        "image": EXAMPLES_IMAGE,
                        "imagePullPolicy": "Never",
                        "command": ["python", "-u", "-c", RECEIVER],
                        "ports": [{"containerPort": RECEIVER_PORT}],
                        "readinessProbe": {"tcpSocket": {"port": RECEIVER_PORT}, "periodSeconds": 1},
                    }
                ]
            },
        },
        namespace=namespace,
    )
    apply(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "receiver"},
            "spec": {"selector": labels, "ports": [{"port": RECEIVER_PORT, "targetPort": RECEIVER_PORT}]},
        },
        namespace=namespace,
    )
    wait_for(
        lambda: pod_ready(get_json("pod", "receiver", namespace=namespace)),
        timeout=120,
        what="the receiver's pod to be ready",
    )
    service = get_json("service", "receiver", namespace=namespace)
    return f"http://{service['spec']['clusterIP']}:{RECEIVER_PORT}"


def received(base: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(base, timeout=10) as response:
        posts: list[dict[str, Any]] = json.load(response)
    return posts


def hook(index: int, secret: str, format: str) -> dict[str, Any]:
    return {
        "on": ["Failed"],
        "format": format,
        "webhook": {"urlFrom": {"secretKeyRef": {"name": secret, "key": f"url-{index}"}}},
    }


def test_a_run_is_posted_to_a_real_receiver_in_both_formats_past_a_500_and_a_missing_secret_is_shown(
    real_namespace: str, chart_operator: DeployedOperator
) -> None:
    namespace = real_namespace
    base = start_receiver(namespace)
    apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "team-hooks"},
            "stringData": {"url-0": f"{base}/slack/team", "url-1": f"{base}/flaky/json"},
        },
        namespace=namespace,
    )
    manifest = flow("nightly", [python_work("train", "import sys; sys.exit(3)")])
    manifest["spec"]["notify"] = [
        hook(0, "team-hooks", "slack"),
        hook(1, "team-hooks", "json"),
        hook(2, "no-such-secret", "json"),
    ]
    create(manifest, namespace)
    wait_for_phase(namespace, "nightly", "Failed", timeout=180)

    def notifications() -> dict[int, dict[str, Any]]:
        status = get_json("dagflow", "nightly", namespace=namespace).get("status") or {}
        entries = {entry["index"]: entry for entry in status.get("notifications") or []}
        delivered = all(entries.get(index, {}).get("state") == "Sent" for index in (0, 1))
        missing_told = "no-such-secret" in (entries.get(2) or {}).get("message", "")
        assert delivered and missing_told, entries
        return entries

    entries = wait_for(notifications, timeout=120, interval=1, what="the notifications of nightly")
    assert (entries[0]["httpStatus"], entries[0]["attempts"]) == (200, 1)
    # Two 500s, then taken: retried with backoff by the pod, not by a second pod.
    assert (entries[1]["httpStatus"], entries[1]["attempts"]) == (200, 3)
    assert entries[2]["state"] == "Pending"
    assert entries[2]["message"].startswith("its pod cannot start: CreateContainerConfigError")

    posts = received(base)
    slack = [post for post in posts if post["path"] == "/slack/team"]
    plain = [post for post in posts if post["path"] == "/flaky/json"]
    assert len(slack) == 1 and len(plain) == 3
    assert all(post["contentType"] == "application/json" for post in posts)
    message = json.loads(slack[0]["body"])
    assert "nightly" in message["text"] and "Failed" in message["text"] and "train" in json.dumps(message)
    event = json.loads(plain[-1]["body"])
    assert (event["namespace"], event["flow"], event["run"], event["phase"], event["failedWorks"]) == (
        namespace,
        "nightly",
        1,
        "Failed",
        ["train"],
    )
    reasons = {
        item["reason"]
        for item in get_json(
            "events", "--field-selector", "involvedObject.name=nightly", namespace=namespace
        )["items"]
    }
    assert "NotificationSent" in reasons

    # The operator posted none of it: it may not read the Secret that holds the URLs.
    deployment = get_json("deployment", "-l", "app.kubernetes.io/component!=ui", namespace=OPERATOR_NAMESPACE)
    account = deployment["items"][0]["spec"]["template"]["spec"].get("serviceAccountName")
    assert account
    answer = kubectl(
        "auth",
        "can-i",
        "get",
        "secret/team-hooks",
        f"--as=system:serviceaccount:{OPERATOR_NAMESPACE}:{account}",
        namespace=namespace,
        check=False,
    )
    assert answer.stdout.strip() == "no"
