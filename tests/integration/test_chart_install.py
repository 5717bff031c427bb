"""The Helm chart on the local cluster: what the API server accepts, and a release's whole life.

The operator's pod is simulated by kwok (Running and Ready, no code runs), so these tests are about
the chart's objects, not about the operator's behaviour (tests/e2e/test_chart_rbac.py runs it).
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.helm import CHART_DIR, helm, install, install_chart_crds, render_text, uninstall
from tests.kube import get_json, kubectl, wait_for
from tests.operator_process import DeployedOperator

pytestmark = pytest.mark.cluster

# The chart's only webhook configuration (the operator validates; it mutates nothing).
WEBHOOK_CONFIGURATIONS = ("validatingwebhookconfiguration/dagflow.dev",)


@pytest.fixture(scope="module", autouse=True)
def chart_crds(cluster: Any) -> list[str]:
    return install_chart_crds()


@pytest.fixture
def extra_namespaces(cluster: Any) -> Iterator[Callable[[int], list[str]]]:
    """Makes namespaces for watchNamespaces; deletes them afterwards."""
    made: list[str] = []

    def make(count: int) -> list[str]:
        names = [f"w-{uuid.uuid4().hex[:10]}" for _ in range(count)]
        for name in names:
            kubectl("create", "namespace", name)
        made.extend(names)
        return names

    yield make
    for name in made:
        kubectl("delete", "namespace", name, "--wait=false", check=False)


def release_name() -> str:
    return f"df{uuid.uuid4().hex[:8]}"


VARIANTS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "namespaced": {"watchNamespaces": 2},
    "peering": {"replicas": 2, "webhook": {"enabled": False}},
    "peering-namespaced": {"replicas": 2, "webhook": {"enabled": False}, "watchNamespaces": 2},
    "no-webhook-no-metrics": {"webhook": {"enabled": False}, "metrics": {"enabled": False}},
}


def with_namespaces(variant: dict[str, Any], make: Callable[[int], list[str]]) -> dict[str, Any]:
    """The variant's values, with a count of watched namespaces replaced by new namespaces."""
    values = dict(variant)
    if "watchNamespaces" in values:
        values["watchNamespaces"] = make(values["watchNamespaces"])
    return values


@pytest.mark.parametrize("variant", VARIANTS.values(), ids=VARIANTS.keys())
def test_every_rendered_object_passes_server_side_dry_run(
    variant: dict[str, Any], namespace: str, extra_namespaces: Callable[[int], list[str]]
) -> None:
    values = with_namespaces(variant, extra_namespaces)
    manifest = render_text(values, release=release_name(), namespace=namespace).stdout
    # Every namespaced object names its namespace, as Helm renders it.
    result = kubectl("apply", "--dry-run=server", "-f", "-", input=manifest, check=False)
    assert result.returncode == 0, result.stderr
    applied = [line for line in result.stdout.splitlines() if line.strip()]
    assert applied and all(line.endswith("(server dry run)") for line in applied), result.stdout
    assert len(applied) == manifest.count("\nkind: ")


def labelled(kinds: str, release: str, namespace: str | None = None) -> list[str]:
    selector = f"app.kubernetes.io/instance={release}"
    args = ["get", kinds, "-l", selector, "-o", "name"]
    if namespace is None:
        args.append("--all-namespaces")
    return kubectl(*args, namespace=namespace).stdout.split()


@pytest.mark.parametrize("variant", ["defaults", "namespaced"])
def test_install_runs_the_operator_and_uninstall_leaves_only_the_crds(
    variant: str, namespace: str, extra_namespaces: Callable[[int], list[str]], chart_crds: list[str]
) -> None:
    release = release_name()
    values = with_namespaces(VARIANTS[variant], extra_namespaces)
    try:
        result = install(release, namespace, values)
        assert "STATUS: deployed" in result.stdout
        assert f"rollout status deployment/{release}-dagflow-operator" in result.stdout

        deployment = get_json("deployment", f"{release}-dagflow-operator", namespace=namespace)
        assert deployment["status"].get("availableReplicas") == 1
        pods = get_json("pods", "-l", f"app.kubernetes.io/instance={release}", namespace=namespace)["items"]
        assert [pod["status"]["phase"] for pod in pods] == ["Running"]
        assert labelled("clusterrole,clusterrolebinding", release)
        # Who may create what the operator creates for a flow, who may write cache entries, and who
        # may approve a gate; and the policy that stamps the approver.
        assert len(labelled("validatingadmissionpolicies,validatingadmissionpolicybindings", release)) == 6
        assert len(labelled("mutatingadmissionpolicies,mutatingadmissionpolicybindings", release)) == 2
        for configuration in WEBHOOK_CONFIGURATIONS:
            assert kubectl("get", configuration, check=False).returncode == 0, configuration
        if values.get("watchNamespaces"):
            for watched in values["watchNamespaces"]:
                assert len(labelled("role,rolebinding", release, watched)) == 2
        else:
            # How `make e2e-kind` stops and starts the release's operator between tests.
            deployed = DeployedOperator(namespace, release)
            deployed.stop()
            assert (
                get_json("deployment", f"{release}-dagflow-operator", namespace=namespace)["spec"]["replicas"]
                == 0
            )
            deployed.start()
            restarted = get_json("deployment", f"{release}-dagflow-operator", namespace=namespace)
            assert restarted["status"].get("availableReplicas") == 1
    finally:
        uninstalled = uninstall(release, namespace)
    assert uninstalled.returncode == 0, uninstalled.stderr
    kinds = "deployments,replicasets,services,serviceaccounts,roles,rolebindings,configmaps,secrets"
    assert not labelled(kinds, release)
    assert not labelled("clusterroles,clusterrolebindings", release)
    assert not labelled("validatingadmissionpolicies,validatingadmissionpolicybindings", release)
    assert not labelled("mutatingadmissionpolicies,mutatingadmissionpolicybindings", release)
    for configuration in WEBHOOK_CONFIGURATIONS:
        assert kubectl("get", configuration, check=False).returncode != 0
    wait_for(
        lambda: (
            not get_json("pods", "-l", f"app.kubernetes.io/instance={release}", namespace=namespace)["items"]
        ),
        timeout=60,
        what="the operator's pod to be gone",
    )
    for crd in chart_crds:
        assert (
            kubectl("get", "crd", crd, "-o", "name").stdout.strip()
            == f"customresourcedefinition.apiextensions.k8s.io/{crd}"
        )
    assert json.loads(helm("list", "--namespace", namespace, "--all", "--output", "json").stdout) == []


# What kopf patches into the configuration at start (inert here: it matches no object).
REGISTERED_WEBHOOK = {
    "name": "validate-dagflow.dagflow.dev",
    "clientConfig": {"url": "https://127.0.0.1:9/validate-dagflow"},
    "rules": [
        {
            "apiGroups": ["dagflow.dev"],
            "apiVersions": ["v1alpha1"],
            "resources": ["dagflows"],
            "operations": ["CREATE", "UPDATE"],
        }
    ],
    "objectSelector": {"matchLabels": {"dagflow.dev/test": "matches-nothing"}},
    "failurePolicy": "Ignore",
    "sideEffects": "None",
    "admissionReviewVersions": ["v1"],
}


def test_upgrade_keeps_the_operators_webhooks_and_brings_back_deleted_configurations(
    namespace: str, tmp_path: Path
) -> None:
    release = release_name()
    # The next version of the chart: its labels change, so Helm patches the configurations.
    next_chart = tmp_path / "dagflow-operator"
    shutil.copytree(CHART_DIR, next_chart)
    chart = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())
    version = chart["version"]
    (next_chart / "Chart.yaml").write_text(yaml.safe_dump({**chart, "version": f"{version}-next"}))
    try:
        install(release, namespace)
        patch = json.dumps({"webhooks": [REGISTERED_WEBHOOK]})
        kubectl("patch", WEBHOOK_CONFIGURATIONS[0], "--type=merge", "-p", patch)

        helm("upgrade", release, str(next_chart), "--namespace", namespace, "--reuse-values")
        configuration = get_json(WEBHOOK_CONFIGURATIONS[0])
        assert configuration["metadata"]["labels"]["helm.sh/chart"] == f"dagflow-operator-{version}-next"
        assert [webhook["name"] for webhook in configuration["webhooks"]] == [REGISTERED_WEBHOOK["name"]]

        # Deleted by hand: the next upgrade makes it again.
        kubectl("delete", *WEBHOOK_CONFIGURATIONS)
        helm("upgrade", release, str(CHART_DIR), "--namespace", namespace, "--reuse-values")
        for name in WEBHOOK_CONFIGURATIONS:
            labels = get_json(name)["metadata"]["labels"]
            assert labels["app.kubernetes.io/instance"] == release
            assert labels["helm.sh/chart"] == f"dagflow-operator-{version}"
    finally:
        uninstall(release, namespace)
    for name in WEBHOOK_CONFIGURATIONS:
        assert kubectl("get", name, check=False).returncode != 0
