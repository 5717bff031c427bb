"""The chart's RBAC is enough and no more: the operator runs the classic pipeline as the chart's
ServiceAccount (a TokenRequest token, no other credentials), and that identity cannot read Secrets or
exec into pods. The chart's ServiceAccount, RBAC, peering objects and webhook configurations are
rendered by `helm template` and applied; the operator itself runs on this machine.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.helm import container_env, install_chart_crds, render
from tests.e2e.flows import create, flow, wait_for_phase, work, works_by_name
from tests.e2e.test_pipelines import TRAININGS, classic
from tests.e2e.test_runs import jobs_of_run, request, wait_for_run
from tests.kube import apply, fresh_namespace, get_json, kubectl, service_account_kubeconfig, wait_for
from tests.operator_process import OperatorProcess

pytestmark = pytest.mark.local_cluster

WEBHOOK_CONFIGURATIONS = ("validatingwebhookconfiguration",)
# What the operator must be able to do in a namespace whose flows it runs.
GRANTED = [
    ("list", "dagflows.dagflow.dev"),
    ("watch", "dagflows.dagflow.dev"),
    ("patch", "dagflows.dagflow.dev/status"),
    ("get", "jobs.batch"),
    ("list", "jobs.batch"),
    ("watch", "jobs.batch"),
    ("create", "jobs.batch"),
    ("delete", "jobs.batch"),
    ("get", "deployments.apps"),
    ("create", "deployments.apps"),
    ("patch", "deployments.apps"),
    ("delete", "deployments.apps"),
    ("get", "services"),
    ("list", "services"),
    ("watch", "services"),
    ("create", "services"),
    ("patch", "services"),
    ("delete", "services"),
    ("create", "events"),
    ("list", "events"),
    ("list", "pods"),
    ("watch", "pods"),
    ("get", "configmaps"),
    ("list", "configmaps"),
    ("watch", "configmaps"),
    ("create", "configmaps"),
    ("delete", "configmaps"),
    ("get", "persistentvolumeclaims"),
    ("create", "persistentvolumeclaims"),
    ("delete", "persistentvolumeclaims"),
    ("list", "dagflowcacheentries.dagflow.dev"),
    ("create", "dagflowcacheentries.dagflow.dev"),
    ("delete", "dagflowcacheentries.dagflow.dev"),
]
# What it never needs, anywhere.
REFUSED = [
    ("get", "secrets"),
    ("list", "secrets"),
    ("create", "pods/exec"),
    ("create", "pods"),
    ("get", "pods"),
    ("get", "pods/log"),
    ("update", "configmaps"),
    ("patch", "configmaps"),
    ("patch", "persistentvolumeclaims"),
    ("list", "persistentvolumeclaims"),
    ("create", "dagflows.dagflow.dev"),
    ("update", "dagflows.dagflow.dev"),
    ("delete", "dagflows.dagflow.dev"),
    ("update", "deployments.apps"),
    ("get", "dagflowcacheentries.dagflow.dev"),
    ("update", "dagflowcacheentries.dagflow.dev"),
    ("patch", "dagflowcacheentries.dagflow.dev"),
    ("delete", "events"),
    ("create", "rolebindings.rbac.authorization.k8s.io"),
    ("create", "serviceaccounts/token"),
]
REFUSED_CLUSTER_WIDE = [
    ("list", "secrets"),
    ("create", "customresourcedefinitions.apiextensions.k8s.io"),
    ("delete", "customresourcedefinitions.apiextensions.k8s.io"),
    ("create", "clusterrolebindings.rbac.authorization.k8s.io"),
    ("impersonate", "serviceaccounts"),
]


def can_i(kubeconfig: Path, verb: str, resource: str, namespace: str | None) -> bool:
    """`kubectl auth can-i` as the account; `resource` may name a subresource (`pods/exec`)."""
    scope = ["--namespace", namespace] if namespace else ["--all-namespaces"]
    resource, _, subresource = resource.partition("/")
    if subresource:
        scope.append(f"--subresource={subresource}")
    result = kubectl("--kubeconfig", str(kubeconfig), "auth", "can-i", verb, resource, *scope, check=False)
    return result.stdout.strip() == "yes"


def webhooks_registered() -> bool:
    configuration = get_json("validatingwebhookconfiguration", "dagflow.dev")
    return bool(configuration.get("webhooks"))


@pytest.fixture(scope="module", autouse=True)
def chart_crds(cluster: Any) -> list[str]:
    """kopf's peering CRDs come with the chart."""
    return install_chart_crds()


@pytest.fixture
def operator_namespace(namespace: str) -> Iterator[str]:
    """The namespace the release goes to, apart from the one the flows run in."""
    with fresh_namespace("op") as name:
        yield name


ROWS = {"sim.dagflow.dev/termination-message": json.dumps({"rows": "10"})}
MODES = ["cluster-wide", "namespaced", "peering", "peering-namespaced"]


def chart_values(mode: str, flows_namespace: str) -> dict[str, Any]:
    values: dict[str, Any] = {}
    if mode.endswith("namespaced"):
        values["watchNamespaces"] = [flows_namespace]
    if mode.startswith("peering"):
        values.update(replicas=2, webhook={"certManager": {"enabled": True}})
    return values


# What the operator's permissions are made of, with the policy that lets only its account write cache
# entries; the Deployment (and cert-manager's objects) are not needed, since the operator runs on this
# machine.
PERMISSION_KINDS = {
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "ClusterKopfPeering",
    "KopfPeering",
    "ValidatingWebhookConfiguration",
}


CACHE_ENTRIES_POLICY_KINDS = {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}


def chart_permissions(release: str, namespace: str, values: dict[str, Any]) -> str:
    """The chart's ServiceAccount, RBAC, peering objects, webhook configurations and cache entries
    policy, as YAML."""
    objects = render(values, release=release, namespace=namespace)
    return yaml.safe_dump_all(
        [
            item
            for item in objects
            if item["kind"] in PERMISSION_KINDS
            or (
                item["kind"] in CACHE_ENTRIES_POLICY_KINDS
                and item["metadata"]["name"].endswith("-cache-entries")
            )
        ]
    )


def operator_settings(release: str, namespace: str, values: dict[str, Any]) -> dict[str, str]:
    """The DAGFLOW_* settings the release would give its operator, as far as they bear on permissions."""
    env = container_env(render(values, release=release, namespace=namespace))
    wanted = ("DAGFLOW_NAMESPACES", "DAGFLOW_WEBHOOK_ENABLED", "DAGFLOW_PEERING")
    return {name: value for name, value in env.items() if name in wanted}


@pytest.mark.parametrize("mode", MODES)
def test_operator_runs_the_classic_pipeline_with_only_the_charts_rbac(
    mode: str, namespace: str, operator_namespace: str, tmp_path: Path, without_shared_operator: None
) -> None:
    release = f"rbac{uuid.uuid4().hex[:6]}"
    account = f"{release}-dagflow-operator"
    values = chart_values(mode, namespace)
    as_account: OperatorProcess | None = None
    manifest = ""
    # The session's operator (an admin) does not run alongside (without_shared_operator); its
    # webhook configurations, which the release takes over, went with it.
    try:
        manifest = chart_permissions(release, operator_namespace, values)
        apply(manifest)
        kubeconfig = service_account_kubeconfig(account, operator_namespace, tmp_path / "account.kubeconfig")
        whoami = kubectl("--kubeconfig", str(kubeconfig), "auth", "whoami", "-o", "json").stdout
        assert json.loads(whoami)["status"]["userInfo"]["username"] == (
            f"system:serviceaccount:{operator_namespace}:{account}"
        )

        # The operator on this machine, as the account, with the settings the release gives the pod.
        settings = operator_settings(release, operator_namespace, values)
        as_account = OperatorProcess(tmp_path, kubeconfig=kubeconfig, env=settings)
        as_account.start()
        wait_for(webhooks_registered, timeout=30, what="the operator to register its webhook")

        create(classic("ml"), namespace)
        final = wait_for_phase(namespace, "ml", timeout=180)
        assert final["phase"] == "Serving", final
        assert {works_by_name(final)[name]["phase"] for name in TRAININGS} == {"Succeeded"}
        events = get_json("events", "--field-selector", "involvedObject.name=ml", namespace=namespace)[
            "items"
        ]
        assert {"WorkStarted", "WorkSucceeded", "WorkServing"} <= {event["reason"] for event in events}
        # Cached works: the operator writes their entries past the chart's policy, and a rerun takes
        # them from the cache.
        cached = [work("prepare", outputs=[{"name": "rows"}], annotations=ROWS), work("fit", "prepare")]
        create(flow("cached", cached, cache={"enabled": True}), namespace)
        assert wait_for_phase(namespace, "cached", timeout=120)["phase"] == "Succeeded"
        entries = get_json("dagflowcacheentries", namespace=namespace)["items"]
        assert sorted(entry["spec"]["work"] for entry in entries) == ["fit", "prepare"], entries
        request(namespace, "cached", "rerun", "again")
        rerun = wait_for_run(namespace, "cached", 2, "Succeeded", "Failed")
        assert {work["name"]: "cachedFrom" in work for work in rerun["works"]} == {
            "prepare": True,
            "fit": True,
        }
        assert jobs_of_run(namespace, 2) == []
        if "DAGFLOW_PEERING" in settings:
            assert keep_alives(settings["DAGFLOW_PEERING"], values.get("watchNamespaces")), "no keep-alive"

        for verb, resource in GRANTED:
            assert can_i(kubeconfig, verb, resource, namespace), f"cannot {verb} {resource}"
        for verb, resource in REFUSED:
            assert not can_i(kubeconfig, verb, resource, namespace), f"can {verb} {resource}"
        for verb, resource in REFUSED_CLUSTER_WIDE:
            assert not can_i(kubeconfig, verb, resource, None), f"can {verb} {resource} cluster-wide"
        if "watchNamespaces" in values:
            for verb, resource in GRANTED:
                assert not can_i(kubeconfig, verb, resource, "default"), f"can {verb} {resource} in default"
        refused = kubectl("--kubeconfig", str(kubeconfig), "get", "secrets", namespace=namespace, check=False)
        assert refused.returncode != 0 and "Forbidden" in refused.stderr, refused.stderr

        if "DAGFLOW_PEERING" in settings:
            # A replica that stops while a peer lives leaves the webhook to it.
            standby_dir = tmp_path / "standby"
            standby_dir.mkdir()
            standby = OperatorProcess(standby_dir, kubeconfig=kubeconfig, env=settings)
            standby.start()
            as_account.stop()
            for kind in WEBHOOK_CONFIGURATIONS:
                assert kubectl("get", kind, "dagflow.dev", check=False).returncode == 0, f"{kind} is gone"
            as_account = standby
        # The last replica's clean stop leaves the chart's webhook configuration as it is: validation
        # fails closed while no operator runs, it never silently lapses.
        as_account.stop()
        for kind in WEBHOOK_CONFIGURATIONS:
            kept = get_json(kind, "dagflow.dev")
            assert {hook["failurePolicy"] for hook in kept["webhooks"]} == {"Fail"}, kept
        log = as_account.log_path.read_text()
        # RBAC refusals name the user; other 403s (a namespace being deleted) do not count.
        refusal = re.compile(
            rf"system:serviceaccount:{operator_namespace}:{account}\\?\" cannot|Not enough permissions"
        )
        found = refusal.search(log)
        assert not found, f"the operator was refused something: {found.group(0)!r}; see {as_account.log_path}"
    finally:
        if as_account is not None:
            as_account.stop()
        if manifest:
            kubectl("delete", "--ignore-not-found", "-f", "-", input=manifest, check=False)


def keep_alives(peering: str, namespaces: list[str] | None) -> bool:
    """Whether the operator wrote its keep-alive into each peering object (it may patch them)."""
    if not namespaces:
        return bool(get_json("clusterkopfpeering", peering).get("status"))
    return all(
        get_json("kopfpeering", peering, namespace=namespace).get("status") for namespace in namespaces
    )
