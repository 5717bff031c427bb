"""The Helm chart without a cluster: lint, rendering, the values schema and the CRD copy."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from dagflow.controller.settings import OperatorSettings
from tests.chart.helm import (
    CHART_DIR,
    NAMESPACED_VALUES,
    container_env,
    helm,
    objects_of,
    one,
    rbac_rules,
    render,
    render_text,
    values_args,
)
from tests.kube import REPO_ROOT

PEERING_VALUES: dict[str, Any] = {"replicas": 2, "webhook": {"certManager": {"enabled": True}}}
EVERYTHING_VALUES: dict[str, Any] = {
    **NAMESPACED_VALUES,
    **PEERING_VALUES,
    "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}},
    "logFormat": "json",
    "logLevel": "debug",
}
VARIANTS = {
    "defaults": None,
    "namespaced": NAMESPACED_VALUES,
    "peering": PEERING_VALUES,
    "everything": EVERYTHING_VALUES,
    "no-webhook-no-metrics": {"webhook": {"enabled": False}, "metrics": {"enabled": False}},
    "ui": {"ui": {"enabled": True}},
}
# What the operator must never be able to do, whatever the values.
FORBIDDEN_RESOURCES = {"secrets", "pods/exec", "pods/attach", "pods/portforward", "pods/log", "*"}


@pytest.mark.parametrize("values", VARIANTS.values(), ids=VARIANTS.keys())
def test_helm_lint_strict_passes(values: dict[str, Any] | None, tmp_path: Any) -> None:
    result = helm("lint", "--strict", str(CHART_DIR), *values_args(values, tmp_path))
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout


def test_defaults_render_a_cluster_wide_operator() -> None:
    objects = render()
    kinds = sorted(item["kind"] for item in objects)
    assert kinds == [
        "ClusterKopfPeering",
        # The operator's, and the approvers' (bound by an administrator, per namespace).
        "ClusterRole",
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        # The policy that stamps who approves a gate.
        "MutatingAdmissionPolicy",
        "MutatingAdmissionPolicyBinding",
        "Service",
        "Service",
        "ServiceAccount",
        # The user-permissions policy, the one that keeps cache entries the operator's, and the one
        # that checks who may approve.
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
        "ValidatingAdmissionPolicyBinding",
        "ValidatingAdmissionPolicyBinding",
        "ValidatingWebhookConfiguration",
    ]
    binding = one(objects, "ClusterRoleBinding")
    account = one(objects, "ServiceAccount")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": "dagflow-system"}
    ]
    roles = [item["metadata"]["name"] for item in objects if item["kind"] == "ClusterRole"]
    assert binding["roleRef"]["name"] in roles
    assert container_env(objects)["DAGFLOW_NAMESPACES"] == "[]"


def test_deployment_is_one_recreated_restricted_pod() -> None:
    deployment = one(render(), "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert container["image"] == "dagflow/operator:0.1.0"
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    assert container["args"] == ["--liveness", "http://0.0.0.0:8080/healthz"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"health": 8080, "metrics": 9090, "webhook": 9443}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    assert pod["serviceAccountName"] == one(render(), "ServiceAccount")["metadata"]["name"]


def test_services_front_the_metrics_and_webhook_ports() -> None:
    objects = render()
    env = container_env(objects)
    services = {item["metadata"]["name"]: item for item in objects_of(objects, "Service")}
    assert services["dagflow-dagflow-operator-metrics"]["spec"]["ports"] == [
        {"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}
    ]
    webhook = services["dagflow-dagflow-operator-webhook"]
    assert webhook["spec"]["ports"][0]["port"] == int(env["DAGFLOW_WEBHOOK_PORT"]) == 9443
    assert env["DAGFLOW_METRICS_PORT"] == "9090"
    assert env["DAGFLOW_WEBHOOK_SERVICE"] == "dagflow-system/dagflow-dagflow-operator-webhook"
    selector = one(objects, "Deployment")["spec"]["selector"]["matchLabels"]
    for service in services.values():
        assert service["spec"]["selector"] == selector


def test_watch_namespaces_give_a_role_per_namespace_and_few_cluster_permissions() -> None:
    objects = render(NAMESPACED_VALUES)
    roles = {item["metadata"]["namespace"]: item for item in objects_of(objects, "Role")}
    bindings = {item["metadata"]["namespace"]: item for item in objects_of(objects, "RoleBinding")}
    assert set(roles) == set(bindings) == {"team-a", "team-b"}
    account = one(objects, "ServiceAccount")["metadata"]["name"]
    for namespace, binding in bindings.items():
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": roles[namespace]["metadata"]["name"],
        }
        assert binding["subjects"][0]["name"] == account
        assert binding["subjects"][0]["namespace"] == "dagflow-system"
    [cluster_role] = [
        item
        for item in objects_of(objects, "ClusterRole")
        if not item["metadata"]["name"].endswith("-approver")
    ]
    cluster_resources = {resource for rule in cluster_role["rules"] for resource in rule["resources"]}
    assert cluster_resources == {
        "customresourcedefinitions",
        "namespaces",
        "validatingwebhookconfigurations",
        "subjectaccessreviews",
        # Read only: the priority of a queued Job before Kueue made its Workload, and a
        # ClusterQueue's free quota (flows in order).
        "workloadpriorityclasses",
        "clusterqueues",
    }
    assert all(
        rule["verbs"] == ["get"]
        for rule in cluster_role["rules"]
        if "workloadpriorityclasses" in rule["resources"]
    )
    namespaced_resources = {resource for rule in roles["team-a"]["rules"] for resource in rule["resources"]}
    assert namespaced_resources == {
        "dagflows",
        "dagflows/status",
        "jobs",
        "deployments",
        "services",
        "events",
        "pods",
        "configmaps",
        "persistentvolumeclaims",
        "workloads",
        "localqueues",
        "kopfpeerings",
        "dagflowcacheentries",
    }
    assert json.loads(container_env(objects)["DAGFLOW_NAMESPACES"]) == ["team-a", "team-b"]


def test_cluster_wide_rules_are_exactly_what_the_operator_uses() -> None:
    rules = {
        (group, resource, tuple(rule.get("resourceNames", ()))): sorted(rule["verbs"])
        for rule in rbac_rules(render())
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }
    assert rules == {
        ("dagflow.dev", "dagflows", ()): ["list", "watch"],
        ("dagflow.dev", "dagflows/status", ()): ["patch"],
        # Cache entries: looked up by key label, written on a cached work's success, expired ones deleted.
        ("dagflow.dev", "dagflowcacheentries", ()): ["create", "delete", "list"],
        ("batch", "jobs", ()): ["create", "delete", "get", "list", "watch"],
        ("apps", "deployments", ()): ["create", "delete", "get", "list", "patch", "watch"],
        ("", "services", ()): ["create", "delete", "get", "list", "patch", "watch"],
        ("", "events", ()): ["create", "list"],
        # A work succeeds when its pod does, and its outputs are its pod's termination message:
        # pods are listed and watched, nothing more.
        ("", "pods", ()): ["list", "watch"],
        # A matrix work's values and its instances' outputs are ConfigMaps of the flow, watched so
        # that each goes once nothing uses it.
        ("", "configmaps", ()): ["create", "delete", "get", "list", "watch"],
        # A run's workspace claim: made, read back when its name is taken, deleted with the history.
        ("", "persistentvolumeclaims", ()): ["create", "delete", "get"],
        # Kueue: why a queued work waits (its Workload, listed by Job uid), its Workload deactivated
        # while the flow is suspended or held behind older flows (read again just before), a flow
        # naming a LocalQueue that does not exist refused, and a LocalQueue's ClusterQueue and a
        # queued Job's priority read to keep flows in order.
        ("kueue.x-k8s.io", "workloads", ()): ["get", "list", "patch"],
        ("kueue.x-k8s.io", "localqueues", ()): ["get"],
        ("kueue.x-k8s.io", "workloadpriorityclasses", ()): ["get"],
        ("kueue.x-k8s.io", "clusterqueues", ()): ["get"],
        ("apiextensions.k8s.io", "customresourcedefinitions", ()): ["list", "watch"],
        # The chart makes the webhook configuration; the operator reads and patches that one only.
        ("admissionregistration.k8s.io", "validatingwebhookconfigurations", ("dagflow.dev",)): [
            "get",
            "patch",
        ],
        # The webhook asks whether a flow's author may create what the operator would create.
        ("authorization.k8s.io", "subjectaccessreviews", ()): ["create"],
        # Peering is always on: a second operator on the cluster stands by.
        ("kopf.dev", "clusterkopfpeerings", ()): ["list", "watch"],
        ("kopf.dev", "clusterkopfpeerings", ("dagflow-dagflow-operator",)): ["get", "patch"],
    }


@pytest.mark.parametrize("values", VARIANTS.values(), ids=VARIANTS.keys())
def test_no_values_grant_secrets_pods_exec_or_wildcards(values: dict[str, Any] | None) -> None:
    for rule in rbac_rules(render(values)):
        assert not FORBIDDEN_RESOURCES & set(rule["resources"]), rule
        assert "*" not in rule["verbs"] and "*" not in rule["apiGroups"], rule
        assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"]), rule


@pytest.mark.parametrize("values", VARIANTS.values(), ids=VARIANTS.keys())
def test_the_operator_can_create_no_webhook_configuration_and_patch_only_its_own(
    values: dict[str, Any] | None,
) -> None:
    objects = render(values)
    for rule in rbac_rules(objects):
        if "admissionregistration.k8s.io" not in rule["apiGroups"]:
            continue
        assert rule.get("resourceNames") == ["dagflow.dev"], rule
        assert set(rule["verbs"]) <= {"get", "patch"}, rule
        assert rule["resources"] == ["validatingwebhookconfigurations"], rule
    if (values or {}).get("webhook", {}).get("enabled", True):
        # What the operator may not create, the chart makes: the configuration it patches.
        assert [
            item["metadata"]["name"] for item in objects_of(objects, "ValidatingWebhookConfiguration")
        ] == ["dagflow.dev"]
        assert not objects_of(objects, "MutatingWebhookConfiguration")


def user_permissions_policy(objects: list[dict[str, Any]]) -> dict[str, Any]:
    [policy] = [
        obj
        for obj in objects_of(objects, "ValidatingAdmissionPolicy")
        if obj["metadata"]["name"].endswith("-user-permissions")
    ]
    return policy


def test_the_operator_is_told_the_user_permissions_policy_the_chart_installs() -> None:
    policy = user_permissions_policy(render())["metadata"]["name"]
    assert container_env(render())["DAGFLOW_USER_PERMISSIONS_POLICY"] == policy
    unenforced = render({"userPermissions": {"enforced": False}})
    assert not [obj for obj in objects_of(unenforced, "ValidatingAdmissionPolicy") if not approvals(obj)]
    assert "DAGFLOW_USER_PERMISSIONS_POLICY" not in container_env(unenforced)


def test_without_the_webhook_nothing_touches_webhook_configurations() -> None:
    objects = render({"webhook": {"enabled": False}})
    assert not objects_of(objects, "ValidatingWebhookConfiguration")
    assert "webhook" not in {item["metadata"]["name"].rsplit("-", 1)[-1] for item in objects}
    assert not [rule for rule in rbac_rules(objects) if "admissionregistration.k8s.io" in rule["apiGroups"]]
    assert container_env(objects)["DAGFLOW_WEBHOOK_ENABLED"] == "false"


def test_metrics_off_sets_port_zero_and_drops_the_service() -> None:
    objects = render({"metrics": {"enabled": False}})
    assert container_env(objects)["DAGFLOW_METRICS_PORT"] == "0"
    assert not [
        item for item in objects_of(objects, "Service") if item["metadata"]["name"].endswith("-metrics")
    ]


def test_service_monitor_scrapes_the_metrics_service() -> None:
    objects = render({"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}}})
    monitor = one(objects, "ServiceMonitor")
    metrics_service = next(
        item for item in objects_of(objects, "Service") if item["metadata"]["name"].endswith("-metrics")
    )
    labels = metrics_service["metadata"]["labels"]
    assert all(labels[key] == value for key, value in monitor["spec"]["selector"]["matchLabels"].items())
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert not objects_of(render(), "ServiceMonitor")


def test_cert_manager_certificate_names_the_webhook_service_and_is_mounted() -> None:
    objects = render({"webhook": {"certManager": {"enabled": True}}})
    env = container_env(objects)
    certificate = one(objects, "Certificate")
    issuer = one(objects, "Issuer")
    namespace, service = env["DAGFLOW_WEBHOOK_SERVICE"].split("/")
    # The name the API server checks the certificate against when it calls a Service reference.
    assert f"{service}.{namespace}.svc" in certificate["spec"]["dnsNames"]
    assert certificate["spec"]["issuerRef"]["name"] == issuer["metadata"]["name"]
    assert issuer["spec"] == {"selfSigned": {}}
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    secret_volumes = {
        volume["name"]: volume["secret"]["secretName"] for volume in pod["volumes"] if "secret" in volume
    }
    assert list(secret_volumes.values()) == [certificate["spec"]["secretName"]]
    mounts = {mount["name"]: mount["mountPath"] for mount in pod["containers"][0]["volumeMounts"]}
    (volume_name,) = secret_volumes
    assert env["DAGFLOW_WEBHOOK_CERT_FILE"] == f"{mounts[volume_name]}/tls.crt"
    assert env["DAGFLOW_WEBHOOK_KEY_FILE"] == f"{mounts[volume_name]}/tls.key"


def test_cert_manager_with_an_existing_issuer_creates_none() -> None:
    objects = render(
        {"webhook": {"certManager": {"enabled": True, "issuerRef": {"name": "ca", "kind": "ClusterIssuer"}}}}
    )
    assert not objects_of(objects, "Issuer")
    assert one(objects, "Certificate")["spec"]["issuerRef"] == {
        "name": "ca",
        "kind": "ClusterIssuer",
        "group": "cert-manager.io",
    }


def test_default_webhook_certificate_is_made_by_the_operator() -> None:
    env = container_env(render())
    assert "DAGFLOW_WEBHOOK_CERT_FILE" not in env and "DAGFLOW_WEBHOOK_KEY_FILE" not in env


@pytest.mark.parametrize("values", [{}, PEERING_VALUES], ids=["one replica", "two replicas"])
def test_operators_of_a_release_always_peer(values: dict[str, Any]) -> None:
    """Also with one replica: a second operator on the cluster stands by instead of acting too."""
    objects = render(values)
    env = container_env(objects)
    peering = one(objects, "ClusterKopfPeering")
    assert env["DAGFLOW_PEERING"] == peering["metadata"]["name"]
    rules = rbac_rules(objects)
    assert {
        "apiGroups": ["kopf.dev"],
        "resources": ["clusterkopfpeerings"],
        "verbs": ["list", "watch"],
    } in rules
    assert {
        "apiGroups": ["kopf.dev"],
        "resources": ["clusterkopfpeerings"],
        "resourceNames": [peering["metadata"]["name"]],
        # get: a stopping replica reads whether a peer lives on to answer the webhook.
        "verbs": ["get", "patch"],
    } in rules


def test_peering_in_watched_namespaces_uses_one_kopf_peering_each() -> None:
    objects = render({**PEERING_VALUES, **NAMESPACED_VALUES})
    assert {item["metadata"]["namespace"] for item in objects_of(objects, "KopfPeering")} == {
        "team-a",
        "team-b",
    }
    assert not objects_of(objects, "ClusterKopfPeering")
    for role in objects_of(objects, "Role"):
        assert any(rule["resources"] == ["kopfpeerings"] for rule in role["rules"])


def test_replicas_with_a_self_signed_webhook_certificate_are_refused() -> None:
    result = render_text({"replicas": 2}, check=False)
    assert result.returncode != 0
    assert "webhook.certManager.enabled" in result.stderr


@pytest.mark.parametrize(
    "name",
    [
        "DAGFLOW_NAMESPACES",
        "DAGFLOW_GPU_RESOURCE",
        "DAGFLOW_GPU_NODE_SELECTOR",
        "DAGFLOW_GPU_TOLERATIONS",
        "DAGFLOW_HISTORY_RUNS",
        "DAGFLOW_LAUNCHER_IMAGE",
        "DAGFLOW_LAUNCHER_PULL_POLICY",
        "DAGFLOW_LAUNCHER_DELIVERY",
        "DAGFLOW_API_CONCURRENCY",
        "DAGFLOW_LOG_FORMAT",
        "DAGFLOW_METRICS_PORT",
        "DAGFLOW_WEBHOOK_ENABLED",
        "DAGFLOW_WEBHOOK_PORT",
        "DAGFLOW_WEBHOOK_SERVICE",
        "DAGFLOW_WEBHOOK_CERT_FILE",
        "DAGFLOW_WEBHOOK_KEY_FILE",
        "DAGFLOW_PEERING",
    ],
)
def test_the_operator_reads_each_setting_the_chart_sets(name: str) -> None:
    env = container_env(render(EVERYTHING_VALUES))
    assert name in env
    field = name.removeprefix("DAGFLOW_").lower()
    assert field in OperatorSettings.model_fields, f"{name} is not an operator setting"


def test_the_launcher_image_defaults_to_the_charts_version_and_may_be_moved() -> None:
    chart_version = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())["appVersion"]
    env = container_env(render())
    assert env["DAGFLOW_LAUNCHER_IMAGE"] == f"dagflow/launcher:{chart_version}"
    moved = container_env(render({"launcher": {"repository": "registry.example.com/launcher", "tag": "1.2"}}))
    assert moved["DAGFLOW_LAUNCHER_IMAGE"] == "registry.example.com/launcher:1.2"


@pytest.mark.parametrize("delivery", ["imageVolume", "initContainer"])
def test_a_named_launcher_delivery_reaches_the_operator_as_it_reads_it(
    delivery: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = container_env(render({"launcher": {"delivery": delivery}}))
    monkeypatch.setenv("DAGFLOW_LAUNCHER_DELIVERY", env["DAGFLOW_LAUNCHER_DELIVERY"])
    assert OperatorSettings().launcher_delivery == delivery


def test_an_automatic_launcher_delivery_without_a_cluster_to_ask_is_the_init_container() -> None:
    assert yaml.safe_load((CHART_DIR / "values.yaml").read_text())["launcher"]["delivery"] == "auto"
    # helm template (and GitOps tools that render charts) cannot read the nodes: the delivery that
    # works on every runtime.
    assert container_env(render())["DAGFLOW_LAUNCHER_DELIVERY"] == "initContainer"
    assert (
        container_env(render(extra=["--kube-version", "1.36.3"]))["DAGFLOW_LAUNCHER_DELIVERY"]
        == "initContainer"
    )


def runtimes(*versions: str | None) -> list[dict[str, Any]]:
    """Nodes as the API server lists them, reporting these runtimes (None: no nodeInfo at all)."""
    return [
        {"metadata": {"name": f"node-{index}"}, "status": {"nodeInfo": {"containerRuntimeVersion": version}}}
        if version is not None
        else {"metadata": {"name": f"node-{index}"}, "status": {}}
        for index, version in enumerate(versions)
    ]


@pytest.mark.parametrize(
    ("kube_version", "nodes", "everywhere"),
    [
        ("v1.36.3", runtimes("containerd://v2.3.7", "containerd://2.1.0", "cri-o://1.31.2"), True),
        ("v1.35.0", runtimes("containerd://2.2.1"), True),
        ("v1.36.3+k3s1", runtimes("containerd://2.3.7-k3s1"), True),
        # One node that cannot is enough: a matrix pod may land on it.
        ("v1.36.3", runtimes("containerd://v2.3.7", "containerd://1.6.20~ds1"), False),
        ("v1.36.3", runtimes("containerd://2.0.6"), False),
        ("v1.36.3", runtimes("cri-o://1.30.4"), False),
        ("v1.36.3", runtimes("docker://27.1.0"), False),
        ("v1.36.3", runtimes("fake"), False),
        ("v1.36.3", runtimes(None), False),
        ("v1.36.3", runtimes(), False),
        # Off by default before 1.35.
        ("v1.34.2", runtimes("containerd://2.3.7"), False),
    ],
)
def test_image_volumes_are_chosen_only_when_every_node_can_mount_them(
    kube_version: str, nodes: list[dict[str, Any]], everywhere: bool, tmp_path: Path
) -> None:
    # The chart's own rule, fed nodes as `lookup` would return them, in a chart of its own.
    probe = tmp_path / "probe"
    (probe / "templates").mkdir(parents=True)
    (probe / "Chart.yaml").write_text("apiVersion: v2\nname: probe\nversion: 0.1.0\n")
    shutil.copy(CHART_DIR / "templates" / "_launcher.tpl", probe / "templates")
    (probe / "templates" / "probe.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: probe}\ndata:\n  everywhere: "
        '{{ include "dagflow-operator.imageVolumesEverywhere"'
        ' (dict "nodes" .Values.nodes "kubeVersion" .Values.kubeVersion) | quote }}\n'
    )
    values = tmp_path / "values.json"
    values.write_text(json.dumps({"nodes": nodes, "kubeVersion": kube_version}))
    rendered = yaml.safe_load(helm("template", str(probe), "--values", str(values)).stdout)
    assert rendered["data"]["everywhere"] == str(everywhere).lower()


def test_gpu_values_reach_the_operator_as_it_reads_them(monkeypatch: pytest.MonkeyPatch) -> None:
    values = {
        "gpu": {
            "resourceName": "amd.com/gpu",
            # Helm merges maps with the defaults: null drops the default label.
            "nodeSelector": {"accelerator": "mi300", "zone": "a", "nvidia.com/gpu.present": None},
            "tolerations": [{"key": "amd.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        },
        "watchNamespaces": ["ml"],
        "historyRuns": 5,
        "artifactStore": {"endpoint": "http://store.storage:7070", "bucket": "ml-data", "secretName": "keys"},
    }
    env = container_env(render(values))
    for name in list(OperatorSettings.model_fields):
        monkeypatch.delenv(f"DAGFLOW_{name.upper()}", raising=False)
    for name, value in env.items():
        if (
            name.startswith("DAGFLOW_")
            and name.removeprefix("DAGFLOW_").lower() in OperatorSettings.model_fields
        ):
            monkeypatch.setenv(name, value)
    settings = OperatorSettings()
    assert settings.gpu_resource == "amd.com/gpu"
    assert settings.gpu_node_selector == {"accelerator": "mi300", "zone": "a"}
    assert settings.gpu_tolerations == values["gpu"]["tolerations"]  # type: ignore[index]
    assert settings.namespaces == ["ml"]
    assert settings.history_runs == 5
    assert settings.artifact_store == values["artifactStore"]
    assert "DAGFLOW_ARTIFACT_STORE" not in container_env(render())  # none unless asked
    assert settings.webhook_service == "dagflow-system/dagflow-dagflow-operator-webhook"


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"replica": 2}, "additional properties 'replica' not allowed"),
        ({"image": {"registry": "x"}}, "additional properties 'registry' not allowed"),
        ({"webhook": {"certManager": {"issuer": "x"}}}, "additional properties 'issuer' not allowed"),
        (
            {"metrics": {"serviceMonitor": {"namespace": "x"}}},
            "additional properties 'namespace' not allowed",
        ),
        ({"gpu": {"tolerations": [{"key": "a", "operator": "Exists", "effects": "x"}]}}, "'effects'"),
        ({"logFormat": "xml"}, "logFormat"),
        ({"watchNamespaces": ["Not_A_Namespace"]}, "watchNamespaces"),
        ({"extraEnv": [{"name": "PATH", "value": "/"}]}, "extraEnv"),
        ({"launcher": {"delivery": "volume"}}, "/launcher/delivery"),
    ],
)
def test_values_schema_refuses_unknown_keys_and_bad_values(values: dict[str, Any], complaint: str) -> None:
    result = render_text(values, check=False)
    assert result.returncode != 0
    assert complaint in result.stderr, result.stderr


def test_values_schema_closes_every_object() -> None:
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    open_objects: list[str] = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            if node.get("type") == "object":
                extra = node.get("additionalProperties")
                # Objects with named properties are closed; maps say what their values are.
                closed = extra is False if "properties" in node else isinstance(extra, dict) and extra
                if not closed:
                    open_objects.append(path)
            for key, value in node.items():
                walk(value, f"{path}/{key}")
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, f"{path}/{index}")

    walk(schema, "")
    assert not open_objects


def test_values_yaml_and_schema_know_the_same_keys() -> None:
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    assert set(values) == set(schema["properties"])


def test_chart_crd_is_a_copy_of_the_generated_one() -> None:
    generated = (REPO_ROOT / "crds" / "dagflow.dev_dagflows.yaml").read_bytes()
    copy = (CHART_DIR / "crds" / "dagflow.dev_dagflows.yaml").read_bytes()
    assert copy == generated, "charts/dagflow-operator/crds/ differs from crds/: run `make crds`"


def test_the_user_permission_policy_is_installed_unless_turned_off() -> None:
    policy = user_permissions_policy(render())
    checks = " ".join(validation["expression"] for validation in policy["spec"]["validations"])
    for resource in ("'jobs'", "'deployments'", "'services'", "'configmaps'", "'persistentvolumeclaims'"):
        assert resource in checks
    [binding] = [
        obj
        for obj in objects_of(render(), "ValidatingAdmissionPolicyBinding")
        if obj["spec"]["policyName"] == policy["metadata"]["name"]
    ]
    assert binding["spec"] == {"policyName": policy["metadata"]["name"], "validationActions": ["Deny"]}
    off = render({"userPermissions": {"enforced": False}})
    assert not [
        obj for obj in off if obj["kind"].startswith("ValidatingAdmissionPolicy") and not approvals(obj)
    ]


def approvals(obj: dict[str, Any]) -> bool:
    """One of the approval gates' policies, installed whatever userPermissions says."""
    return str(obj["metadata"]["name"]).endswith("-approvals")


def test_the_approval_policies_stamp_the_approver_and_check_the_approve_verb_unless_turned_off() -> None:
    objects = render()
    [stamp] = [obj for obj in objects_of(objects, "MutatingAdmissionPolicy") if approvals(obj)]
    [check] = [obj for obj in objects_of(objects, "ValidatingAdmissionPolicy") if approvals(obj)]
    assert "request.userInfo.username" in stamp["spec"]["mutations"][0]["jsonPatch"]["expression"]
    assert any(".check('approve')" in rule["expression"] for rule in check["spec"]["validations"])
    [role] = [
        obj for obj in objects_of(objects, "ClusterRole") if obj["metadata"]["name"].endswith("-approver")
    ]
    assert "approve" in role["rules"][0]["verbs"] and "update" not in role["rules"][0]["verbs"]
    # The operator is told of them: without them it takes in no approval.
    assert container_env(objects)["DAGFLOW_APPROVAL_POLICY"] == stamp["metadata"]["name"]
    off = render({"approvals": {"policies": False, "approverRole": False}})
    assert not [obj for obj in off if approvals(obj) or obj["metadata"]["name"].endswith("-approver")]
    assert "DAGFLOW_APPROVAL_POLICY" not in container_env(off)


def test_the_dashboard_answers_only_the_host_names_it_is_given() -> None:
    objects = render({"ui": {"enabled": True, "allowedHosts": ["dagflow.example.com", "10.0.0.7"]}})
    ui = next(obj for obj in objects_of(objects, "Deployment") if obj["metadata"]["name"].endswith("-ui"))
    [container] = ui["spec"]["template"]["spec"]["containers"]
    assert container["args"][-4:] == ["--allowed-host", "dagflow.example.com", "--allowed-host", "10.0.0.7"]


def test_ui_is_off_by_default() -> None:
    assert not [obj for obj in render() if obj["metadata"]["name"].endswith("-ui")]


def test_ui_enabled_runs_a_read_only_dashboard_with_the_users_tokens() -> None:
    objects = render({"ui": {"enabled": True, "port": 9000}})
    deployments = {obj["metadata"]["name"]: obj for obj in objects_of(objects, "Deployment")}
    ui = next(obj for name, obj in deployments.items() if name.endswith("-ui"))
    operator = next(obj for name, obj in deployments.items() if not name.endswith("-ui"))
    pod = ui["spec"]["template"]
    [container] = pod["spec"]["containers"]
    assert container["command"] == ["dagflow"]
    assert container["args"] == ["ui", "--auth", "bearer", "--address", "0.0.0.0", "--port", "9000"]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    # Neither Deployment selects the other's pods.
    ui_selector = ui["spec"]["selector"]["matchLabels"].items()
    operator_selector = operator["spec"]["selector"]["matchLabels"].items()
    assert not operator_selector <= pod["metadata"]["labels"].items()
    assert ui_selector <= pod["metadata"]["labels"].items()
    service = next(obj for obj in objects_of(objects, "Service") if obj["metadata"]["name"].endswith("-ui"))
    assert service["spec"]["selector"] == ui["spec"]["selector"]["matchLabels"]
    assert [port["port"] for port in service["spec"]["ports"]] == [9000]
    # Its own account reads DAGFlows for the shared watch, nothing else, and writes nothing.
    role = next(obj for obj in objects_of(objects, "ClusterRole") if obj["metadata"]["name"].endswith("-ui"))
    assert role["rules"] == [
        {"apiGroups": ["dagflow.dev"], "resources": ["dagflows"], "verbs": ["get", "list", "watch"]}
    ]
    assert pod["spec"]["serviceAccountName"] == role["metadata"]["name"]


def test_only_the_operator_may_write_cache_entries() -> None:
    objects = render()
    policy = next(
        obj
        for obj in objects
        if obj["kind"] == "ValidatingAdmissionPolicy" and obj["metadata"]["name"].endswith("-cache-entries")
    )
    assert policy["spec"]["matchConstraints"]["resourceRules"][0]["resources"] == ["dagflowcacheentries"]
    assert policy["spec"]["matchConstraints"]["resourceRules"][0]["operations"] == ["CREATE", "UPDATE"]
    expression = policy["spec"]["validations"][0]["expression"]
    assert (
        'request.userInfo.username == "system:serviceaccount:dagflow-system:dagflow-dagflow-operator"'
        in expression
    )
    bindings = [
        obj
        for obj in objects
        if obj["kind"] == "ValidatingAdmissionPolicyBinding"
        and obj["spec"]["policyName"] == policy["metadata"]["name"]
    ]
    assert [binding["spec"]["validationActions"] for binding in bindings] == [["Deny"]]


def test_chart_cache_entry_crd_is_a_copy_of_the_generated_one() -> None:
    generated = (REPO_ROOT / "crds" / "dagflow.dev_dagflowcacheentries.yaml").read_bytes()
    assert (CHART_DIR / "crds" / "dagflow.dev_dagflowcacheentries.yaml").read_bytes() == generated
