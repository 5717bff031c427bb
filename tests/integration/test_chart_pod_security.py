"""The operator's pod passes the `restricted` Pod Security Standard, enforced by the API server."""

from __future__ import annotations

import copy
import uuid
from typing import Any

import pytest

from tests.chart.helm import install, one, render, uninstall
from tests.kube import apply, get_json, kubectl, wait_for

pytestmark = pytest.mark.cluster


@pytest.fixture
def restricted_namespace(namespace: str) -> str:
    kubectl(
        "label",
        "namespace",
        namespace,
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/enforce-version=latest",
    )
    return namespace


def failed_creates(namespace: str, replica_set_prefix: str) -> list[str]:
    events = get_json("events", "--field-selector", "reason=FailedCreate", namespace=namespace)["items"]
    return [
        event["message"]
        for event in events
        if event["involvedObject"]["kind"] == "ReplicaSet"
        and event["involvedObject"]["name"].startswith(replica_set_prefix)
    ]


def pods_of(namespace: str, selector: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = get_json("pods", "-l", selector, namespace=namespace)["items"]
    return items


def test_operator_pods_are_admitted_under_restricted(restricted_namespace: str) -> None:
    release = f"df{uuid.uuid4().hex[:8]}"
    deployment_name = f"{release}-dagflow-operator"
    try:
        install(release, restricted_namespace, wait=False)
        # Whichever comes first: the pod, or the ReplicaSet's report that it was refused.
        wait_for(
            lambda: (
                pods_of(restricted_namespace, f"app.kubernetes.io/instance={release}")
                or failed_creates(restricted_namespace, deployment_name)
            ),
            timeout=60,
            what="the operator's pod to be created or refused",
        )
        assert not failed_creates(restricted_namespace, deployment_name)
        assert len(pods_of(restricted_namespace, f"app.kubernetes.io/instance={release}")) == 1
        wait_for(
            lambda: get_json("deployment", deployment_name, namespace=restricted_namespace)["status"].get(
                "availableReplicas"
            ),
            timeout=60,
            what="the operator's Deployment to be available",
        )
    finally:
        uninstall(release, restricted_namespace)


def test_a_pod_that_is_not_restricted_is_refused_there(restricted_namespace: str) -> None:
    """The control: the same Deployment without its container securityContext gets no pod."""
    deployment = copy.deepcopy(one(render(namespace=restricted_namespace), "Deployment"))
    name = f"unrestricted-{uuid.uuid4().hex[:6]}"
    deployment["metadata"] = {"name": name, "namespace": restricted_namespace}
    labels = {"app": name}
    deployment["spec"]["selector"] = {"matchLabels": labels}
    deployment["spec"]["template"]["metadata"]["labels"] = labels
    deployment["spec"]["template"]["spec"]["serviceAccountName"] = "default"
    del deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]
    apply(deployment, namespace=restricted_namespace)
    messages = wait_for(
        lambda: failed_creates(restricted_namespace, name),
        timeout=60,
        what="the ReplicaSet to report FailedCreate",
    )
    assert any("violates PodSecurity" in message for message in messages), messages
    assert not pods_of(restricted_namespace, f"app={name}")
