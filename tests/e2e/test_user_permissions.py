"""No privilege beyond the user's: the chart's ValidatingAdmissionPolicy lets a user create a DAGFlow,
change what it runs or ask for a run only where they may create what the operator would create for it.
The API server checks it, so it holds whether the operator runs or not."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests import kube
from tests.chart.helm import objects_of, render
from tests.e2e.flows import flow, work
from tests.kube import get_json, kubectl, kubectl_as, wait_for
from tests.operator_process import DeployedOperator, OperatorProcess

USER = "alice"


@pytest.fixture(scope="module")
def policy(operator: OperatorProcess | DeployedOperator) -> Iterator[list[dict[str, Any]]]:
    """The chart's policy and binding, applied (the operator fixture has installed the CRDs).

    A release the chart installed (DAGFLOW_TEST_OPERATOR) has its own, which the tests use as they are:
    applying the rendered ones over them and deleting them afterwards would take them from the release."""
    if isinstance(operator, DeployedOperator):
        installed = [
            get_json(resource, "-l", f"app.kubernetes.io/instance={operator.release}")["items"]
            for resource in ("validatingadmissionpolicies", "validatingadmissionpolicybindings")
        ]
        assert all(len(found) == 1 for found in installed), (
            f"release {operator.release} has no user-permissions policy and binding"
            " (userPermissions.enforced)"
        )
        yield [found[0] for found in installed]
        return
    objects = render()
    installed = [
        obj
        for kind in ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")
        for obj in objects_of(objects, kind)
        if obj["metadata"]["name"].endswith("-user-permissions")
    ]
    assert len(installed) == 2
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all(installed))
    yield installed
    for obj in installed:
        kubectl("delete", obj["kind"].lower(), obj["metadata"]["name"], "--ignore-not-found")


def grant(namespace: str, name: str, rules: list[dict[str, Any]]) -> None:
    user = {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": USER}
    kube.grant(namespace, name, rules, user)


FLOWS = {
    "apiGroups": ["dagflow.dev"],
    "resources": ["dagflows"],
    "verbs": ["get", "create", "patch", "update"],
}
JOBS = {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create"]}
SERVING = [
    {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["create"]},
    {"apiGroups": [""], "resources": ["services"], "verbs": ["create"]},
]


def as_user(*args: str, namespace: str, document: dict[str, Any] | None = None) -> Any:
    return kubectl_as(USER, *args, namespace=namespace, document=document)


def admitted(result: Any) -> bool:
    return bool(result.returncode == 0)


def until(attempt: Any, accepted: Any, what: str) -> Any:
    """Run `attempt` until its result is `accepted`: a new policy or binding takes a moment to apply."""
    return wait_for(
        lambda: (lambda result: result if accepted(result) else None)(attempt()), timeout=30, what=what
    )


def test_a_user_who_may_not_create_jobs_cannot_have_the_operator_create_them(
    namespace: str, policy: list[dict[str, Any]]
) -> None:
    grant(namespace, "flow-author", [FLOWS])
    refused = until(
        lambda: as_user("create", namespace=namespace, document=flow("sneaky", [work("a")])),
        # The operator's webhook asks the same question and may refuse first, until the policy's
        # binding applies: wait for the policy's own refusal.
        lambda result: not admitted(result) and "ValidatingAdmissionPolicy" in result.stderr,
        "the policy to refuse the flow",
    )
    assert f"{USER} may not create Jobs in namespace {namespace}" in refused.stderr


def test_serve_and_matrix_works_need_what_the_operator_makes_for_them(
    namespace: str, policy: list[dict[str, Any]]
) -> None:
    grant(namespace, "flow-author", [FLOWS, JOBS])
    batch = flow("batch", [work("a")])
    until(
        lambda: as_user("create", namespace=namespace, document=batch),
        admitted,
        "a batch flow to be admitted",
    )

    serving = flow("serving", [work("a"), work("s", "a", serve={"port": 8080})])
    refused = as_user("create", namespace=namespace, document=serving)
    assert not admitted(refused)
    assert f"{USER} may not create Deployments and Services in namespace {namespace}" in refused.stderr

    grid = work("m")
    grid["matrix"] = {"i": ["1", "2"]}
    grid["container"]["command"] = ["run", "$(matrix.i)"]
    refused = as_user("create", namespace=namespace, document=flow("grid", [grid]))
    assert f"{USER} may not create ConfigMaps in namespace {namespace}" in refused.stderr

    grant(namespace, "flow-author", [FLOWS, JOBS, *SERVING])
    assert admitted(as_user("create", namespace=namespace, document=serving))

    # A workspace is a PersistentVolumeClaim per run: its author must be allowed to make one.
    with_workspace = flow("ws", [work("a")], workspace={"size": "1Gi"})
    refused = as_user("create", namespace=namespace, document=with_workspace)
    assert not admitted(refused)
    assert f"{USER} may not create PersistentVolumeClaims in namespace {namespace}" in refused.stderr
    claims = {"apiGroups": [""], "resources": ["persistentvolumeclaims"], "verbs": ["create"]}
    grant(namespace, "flow-author", [FLOWS, JOBS, *SERVING, claims])
    until(
        lambda: as_user("create", namespace=namespace, document=with_workspace),
        admitted,
        "the flow with a workspace to be admitted",
    )


def test_run_requests_and_spec_changes_are_checked_but_labels_are_not(
    namespace: str, policy: list[dict[str, Any]]
) -> None:
    kubectl("apply", "-f", "-", input=yaml.safe_dump(flow("owned", [work("a")])), namespace=namespace)
    grant(namespace, "flow-editor", [FLOWS])
    label = as_user("label", "dagflow", "owned", "team=ml", namespace=namespace)
    assert admitted(label), label.stderr
    rerun = as_user(
        "annotate", "dagflow", "owned", f"dagflow.dev/rerun={uuid.uuid4().hex}", namespace=namespace
    )
    assert not admitted(rerun) and "may not create Jobs" in rerun.stderr
    changed = as_user(
        "patch", "dagflow", "owned", "--type=merge", "-p", '{"spec":{"parallelism":1}}', namespace=namespace
    )
    assert not admitted(changed) and "may not create Jobs" in changed.stderr
    grant(namespace, "flow-editor", [FLOWS, JOBS])
    rerun = as_user(
        "annotate", "dagflow", "owned", f"dagflow.dev/rerun={uuid.uuid4().hex}", namespace=namespace
    )
    assert admitted(rerun), rerun.stderr
