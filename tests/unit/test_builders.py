"""The Jobs, Deployments and Services a flow's works run as."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dagflow.api.models import DAGFlowSpec, Work
from dagflow.controller.builders import (
    LAUNCHER_DIRECTORY,
    LAUNCHER_ENV_NAMES,
    LAUNCHER_EXIT_CODE,
    LAUNCHER_IMAGE_VOLUME_PATH,
    FlowRef,
    MatrixInstances,
    build_deployment,
    build_job,
    build_matrix_values,
    build_service,
    endpoint_url,
)
from dagflow.controller.main import WATCH_SELECTORS
from dagflow.controller.settings import OperatorSettings
from dagflow.rules import naming
from dagflow.rules.substitution import BadReference, Values

FLOW = FlowRef(name="ml-pipeline", namespace="team-a", uid="7d0c2b2a-uid")
SETTINGS = OperatorSettings(
    gpu_resource="nvidia.com/gpu",
    gpu_node_selector={"nvidia.com/gpu.present": "true"},
    gpu_tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
)
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
OPERATOR_LABELS = ("dagflow.dev/flow", "dagflow.dev/work", "dagflow.dev/run", "app.kubernetes.io/managed-by")

DNS_1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


# -- factories -----------------------------------------------------------------------------------


def work(name: str = "train", **fields: Any) -> dict[str, Any]:
    return {"name": name, "container": {"image": "example/ml:1.0"}, **fields}


def spec(*works: dict[str, Any], **fields: Any) -> DAGFlowSpec:
    return DAGFlowSpec.model_validate({"works": list(works) or [work()], **fields})


def job_for(
    raw_work: dict[str, Any], run: int = 1, flow: FlowRef = FLOW, **spec_fields: Any
) -> dict[str, Any]:
    flow_spec = spec(raw_work, **spec_fields)
    return build_job(flow, flow_spec, flow_spec.works[0], run, SETTINGS)


def deployment_for(
    raw_work: dict[str, Any], run: int = 1, flow: FlowRef = FLOW, **spec_fields: Any
) -> dict[str, Any]:
    flow_spec = spec(raw_work, **spec_fields)
    return build_deployment(flow, flow_spec, flow_spec.works[0], run, SETTINGS)


def service_for(raw_work: dict[str, Any], flow: FlowRef = FLOW) -> dict[str, Any]:
    return build_service(flow, spec(raw_work).works[0], 1)


def serve(name: str = "serve", port: int = 8080, **fields: Any) -> dict[str, Any]:
    return work(name, serve={"port": port, **fields.pop("serve_fields", {})}, **fields)


def pod_spec(obj: dict[str, Any]) -> Any:
    return obj["spec"]["template"]["spec"]


def container(obj: dict[str, Any]) -> Any:
    (only,) = pod_spec(obj)["containers"]
    return only


def pod_labels(obj: dict[str, Any]) -> Any:
    return obj["spec"]["template"]["metadata"]["labels"]


# -- Jobs ----------------------------------------------------------------------------------------


def test_job_runs_the_work_container_once_in_the_flow_namespace() -> None:
    job = job_for(work("train", container={"image": "example/ml:1.0", "args": ["--model", "a"]}), run=3)
    assert (job["apiVersion"], job["kind"]) == ("batch/v1", "Job")
    assert job["metadata"]["name"] == "ml-pipeline-3-train"
    assert job["metadata"]["namespace"] == "team-a"
    assert pod_spec(job)["restartPolicy"] == "Never"
    assert container(job) == {"name": "train", "image": "example/ml:1.0", "args": ["--model", "a"]}


def test_a_container_keeps_its_own_name() -> None:
    job = job_for(work("train", container={"image": "example/ml:1.0", "name": "main"}))
    assert container(job)["name"] == "main"


def test_job_and_its_pods_carry_the_flow_work_and_run_labels() -> None:
    job = job_for(work("train"), run=2)
    expected = {
        "dagflow.dev/flow": "ml-pipeline",
        "dagflow.dev/work": "train",
        "dagflow.dev/run": "2",
        "app.kubernetes.io/managed-by": "dagflow-operator",
    }
    assert job["metadata"]["labels"] == expected
    assert {k: pod_labels(job)[k] for k in OPERATOR_LABELS} == expected


def test_children_are_controlled_by_the_flow_so_deleting_it_deletes_them() -> None:
    expected = [
        {
            "apiVersion": "dagflow.dev/v1alpha1",
            "kind": "DAGFlow",
            "name": "ml-pipeline",
            "uid": "7d0c2b2a-uid",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert job_for(work())["metadata"]["ownerReferences"] == expected
    assert deployment_for(serve())["metadata"]["ownerReferences"] == expected
    assert service_for(serve())["metadata"]["ownerReferences"] == expected


@pytest.mark.parametrize("retries", [0, 1, 5])
def test_retries_become_the_jobs_backoff_limits(retries: int) -> None:
    job_spec = job_for(work(retries=retries))["spec"]
    assert job_spec["backoffLimit"] == retries
    assert job_spec["backoffLimitPerIndex"] == retries
    # backoffLimitPerIndex needs an Indexed Job; one completion, one pod at a time.
    assert (job_spec["completionMode"], job_spec["completions"], job_spec["parallelism"]) == ("Indexed", 1, 1)


def test_timeout_becomes_the_jobs_active_deadline() -> None:
    assert job_for(work(timeoutSeconds=3600))["spec"]["activeDeadlineSeconds"] == 3600
    assert "activeDeadlineSeconds" not in job_for(work())["spec"]


# -- GPUs ----------------------------------------------------------------------------------------


def test_gpu_work_gets_the_gpu_limit_node_selector_and_toleration() -> None:
    job = job_for(work(gpu=2))
    assert container(job)["resources"]["limits"] == {"nvidia.com/gpu": "2"}
    assert pod_spec(job)["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod_spec(job)["tolerations"] == [GPU_TOLERATION]


def test_non_gpu_work_gets_nothing_gpu_related() -> None:
    job = job_for(work(gpu=0))
    assert "resources" not in container(job)
    assert "nodeSelector" not in pod_spec(job)
    assert "tolerations" not in pod_spec(job)


def test_gpu_settings_come_from_the_operator_configuration() -> None:
    custom = OperatorSettings(
        gpu_resource="amd.com/gpu",
        gpu_node_selector={"accelerator": "mi300"},
        gpu_tolerations=[{"key": "amd.com/gpu", "operator": "Exists"}],
    )
    flow_spec = spec(work(gpu=1))
    job = build_job(FLOW, flow_spec, flow_spec.works[0], 1, custom)
    assert container(job)["resources"]["limits"] == {"amd.com/gpu": "1"}
    assert pod_spec(job)["nodeSelector"] == {"accelerator": "mi300"}
    assert pod_spec(job)["tolerations"] == [{"key": "amd.com/gpu", "operator": "Exists"}]


def test_gpu_limit_keeps_the_containers_other_resources() -> None:
    resources = {"limits": {"memory": "8Gi"}, "requests": {"cpu": "2", "nvidia.com/gpu": "1"}}
    job = job_for(work(gpu=4, container={"image": "example/ml:1.0", "resources": resources}))
    assert container(job)["resources"] == {
        "limits": {"memory": "8Gi", "nvidia.com/gpu": "4"},
        # A GPU request must equal the limit, so a stale one follows it.
        "requests": {"cpu": "2", "nvidia.com/gpu": "4"},
    }


def test_gpu_work_keeps_its_own_placement_and_the_gpu_toleration_is_not_repeated() -> None:
    raw = work(
        gpu=1, nodeSelector={"zone": "a"}, tolerations=[GPU_TOLERATION, {"key": "spot", "operator": "Exists"}]
    )
    job = job_for(raw)
    assert pod_spec(job)["nodeSelector"] == {"zone": "a", "nvidia.com/gpu.present": "true"}
    assert pod_spec(job)["tolerations"] == [GPU_TOLERATION, {"key": "spot", "operator": "Exists"}]


def test_building_a_gpu_job_does_not_change_the_spec() -> None:
    flow_spec = spec(work(gpu=1, tolerations=[{"key": "spot", "operator": "Exists"}]))
    before = flow_spec.model_dump()
    build_job(FLOW, flow_spec, flow_spec.works[0], 1, SETTINGS)
    build_job(FLOW, flow_spec, flow_spec.works[0], 2, SETTINGS)
    assert flow_spec.model_dump() == before
    assert "resources" not in flow_spec.works[0].container


def test_building_a_deployment_twice_gives_the_same_manifest() -> None:
    flow_spec = spec(serve(gpu=1))
    before = flow_spec.model_dump()
    first = build_deployment(FLOW, flow_spec, flow_spec.works[0], 1, SETTINGS)
    second = build_deployment(FLOW, flow_spec, flow_spec.works[0], 1, SETTINGS)
    assert first == second
    assert len(container(second)["ports"]) == 1
    assert flow_spec.model_dump() == before


# -- podDefaults ---------------------------------------------------------------------------------

POD_DEFAULTS = {
    "serviceAccountName": "trainer",
    "nodeSelector": {"pool": "batch", "zone": "a"},
    "tolerations": [{"key": "batch", "operator": "Exists"}],
    "imagePullSecrets": [{"name": "registry"}],
    "env": [{"name": "MLFLOW_URI", "value": "http://mlflow"}, {"name": "LOG_LEVEL", "value": "info"}],
    "labels": {"team": "ml", "tier": "default"},
    "annotations": {"owner": "ml-team", "note": "default"},
}


def test_pod_defaults_reach_a_work_that_sets_nothing() -> None:
    job = job_for(work(), podDefaults=POD_DEFAULTS)
    pod = pod_spec(job)
    assert pod["serviceAccountName"] == "trainer"
    assert pod["nodeSelector"] == {"pool": "batch", "zone": "a"}
    assert pod["tolerations"] == [{"key": "batch", "operator": "Exists"}]
    assert pod["imagePullSecrets"] == [{"name": "registry"}]
    assert container(job)["env"] == POD_DEFAULTS["env"]
    assert pod_labels(job)["team"] == "ml"
    assert job["spec"]["template"]["metadata"]["annotations"]["owner"] == "ml-team"


def test_a_works_own_settings_win_over_pod_defaults() -> None:
    raw = work(
        serviceAccountName="special",
        nodeSelector={"zone": "b"},
        tolerations=[{"key": "spot", "operator": "Exists"}],
        labels={"tier": "gold"},
        annotations={"note": "mine"},
        container={"image": "example/ml:1.0", "env": [{"name": "LOG_LEVEL", "value": "debug"}]},
    )
    job = job_for(raw, podDefaults=POD_DEFAULTS)
    pod = pod_spec(job)
    assert pod["serviceAccountName"] == "special"
    assert pod["nodeSelector"] == {"pool": "batch", "zone": "b"}
    assert pod["tolerations"] == [
        {"key": "batch", "operator": "Exists"},
        {"key": "spot", "operator": "Exists"},
    ]
    env = container(job)["env"]
    assert [e["name"] for e in env].count("LOG_LEVEL") == 1
    assert {e["name"]: e["value"] for e in env} == {"MLFLOW_URI": "http://mlflow", "LOG_LEVEL": "debug"}
    labels = pod_labels(job)
    assert (labels["team"], labels["tier"]) == ("ml", "gold")
    annotations = job["spec"]["template"]["metadata"]["annotations"]
    assert (annotations["owner"], annotations["note"]) == ("ml-team", "mine")


def test_a_user_label_never_hides_a_pod_from_its_flow() -> None:
    # The validator refuses these labels; the builder holds even when one slips through.
    job = job_for(work(labels={"dagflow.dev/flow": "other", "dagflow.dev/run": "9"}), run=1)
    assert pod_labels(job)["dagflow.dev/flow"] == "ml-pipeline"
    assert pod_labels(job)["dagflow.dev/run"] == "1"


def test_pod_metadata_labels_reach_the_pods_not_the_job() -> None:
    job = job_for(work(labels={"pod-complete.stage.kwok.x-k8s.io/delay": "1s"}, annotations={"a": "b"}))
    assert pod_labels(job)["pod-complete.stage.kwok.x-k8s.io/delay"] == "1s"
    assert job["spec"]["template"]["metadata"]["annotations"]["a"] == "b"


def test_volumes_reach_the_pod() -> None:
    volumes = [{"name": "data", "emptyDir": {}}]
    raw = work(
        volumes=volumes, container={"image": "x", "volumeMounts": [{"name": "data", "mountPath": "/d"}]}
    )
    job = job_for(raw)
    assert pod_spec(job)["volumes"] == volumes
    assert container(job)["volumeMounts"] == [{"name": "data", "mountPath": "/d"}]


# -- serve works ---------------------------------------------------------------------------------


def test_deployment_serves_the_work_with_a_tcp_readiness_probe_on_its_port() -> None:
    deployment = deployment_for(serve("serve", port=8080, serve_fields={"replicas": 3}), run=4)
    assert (deployment["apiVersion"], deployment["kind"]) == ("apps/v1", "Deployment")
    assert deployment["metadata"]["name"] == "ml-pipeline-serve"
    assert deployment["metadata"]["namespace"] == "team-a"
    assert deployment["spec"]["replicas"] == 3
    assert pod_spec(deployment)["restartPolicy"] == "Always"
    main = container(deployment)
    assert main["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert main["readinessProbe"]["tcpSocket"] == {"port": 8080}


def test_deployment_keeps_the_containers_own_readiness_probe_and_port() -> None:
    probe = {"httpGet": {"path": "/healthz", "port": 8080}}
    ports = [{"name": "web", "containerPort": 8080}]
    raw = serve(port=8080, container={"image": "example/ml:1.0", "readinessProbe": probe, "ports": ports})
    main = container(deployment_for(raw))
    assert main["readinessProbe"] == probe
    assert main["ports"] == ports


def test_deployment_port_names_stay_unique_when_the_container_has_its_own_http_port() -> None:
    # Kubernetes refuses a pod whose container ports share a name.
    ports = [{"name": "http", "containerPort": 8080}]
    raw = serve(port=50051, container={"image": "example/ml:1.0", "ports": ports})
    main = container(deployment_for(raw))
    assert 50051 in [p["containerPort"] for p in main["ports"]]
    names = [p.get("name") for p in main["ports"] if p.get("name")]
    assert len(names) == len(set(names))


def test_deployment_pods_match_its_selector_and_carry_every_operator_label() -> None:
    deployment = deployment_for(serve(), run=2)
    selector = deployment["spec"]["selector"]["matchLabels"]
    labels = pod_labels(deployment)
    assert selector.items() <= labels.items()
    assert labels["dagflow.dev/run"] == "2"
    assert deployment["metadata"]["labels"]["dagflow.dev/run"] == "2"
    assert all(key in labels for key in OPERATOR_LABELS)


def test_a_new_run_rolls_the_same_deployment() -> None:
    first, second = deployment_for(serve(), run=1), deployment_for(serve(), run=2)
    assert first["metadata"]["name"] == second["metadata"]["name"]
    # The selector is immutable in Kubernetes: it must not change from run to run.
    assert first["spec"]["selector"] == second["spec"]["selector"]
    assert pod_labels(first) != pod_labels(second)


def test_service_fronts_the_deployments_pods_on_the_serve_port() -> None:
    raw = serve("serve", port=9000)
    service, deployment = service_for(raw), deployment_for(raw)
    assert (service["apiVersion"], service["kind"]) == ("v1", "Service")
    assert service["metadata"]["name"] == deployment["metadata"]["name"]
    assert service["metadata"]["namespace"] == "team-a"
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"] == [{"name": "http", "port": 9000, "targetPort": 9000, "protocol": "TCP"}]
    labels = service["metadata"]["labels"]
    assert labels["dagflow.dev/flow"] == "ml-pipeline"
    assert labels["dagflow.dev/work"] == "serve"
    assert labels["app.kubernetes.io/managed-by"] == "dagflow-operator"


def test_service_carries_the_run_label_like_every_child() -> None:
    assert "dagflow.dev/run" in service_for(serve())["metadata"]["labels"]


def test_endpoint_is_the_services_cluster_url() -> None:
    flow_spec = spec(work("train"), serve("serve", port=8080))
    assert endpoint_url(FLOW, flow_spec.works[1]) == "http://ml-pipeline-serve.team-a.svc:8080"
    assert endpoint_url(FLOW, flow_spec.works[0]) is None


def test_serve_children_of_a_flow_named_with_a_leading_digit_are_valid_service_names() -> None:
    flow = FlowRef(name="2024-pipeline", namespace="team-a", uid="u")
    service = service_for(serve(), flow=flow)
    assert DNS_1035_LABEL.match(service["metadata"]["name"])
    assert (
        endpoint_url(flow, spec(serve()).works[0]) == f"http://{service['metadata']['name']}.team-a.svc:8080"
    )


# -- names and label values are always valid -----------------------------------------------------

flow_names = st.from_regex(r"\A[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?\Z")
work_names = st.from_regex(r"\A[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\Z")


def check_child(obj: dict[str, Any], flow_name: str, work_name: str) -> None:
    for labels in (
        obj["metadata"]["labels"],
        obj["spec"].get("template", {}).get("metadata", {}).get("labels", {}),
    ):
        for value in labels.values():
            assert len(value) <= 63 and LABEL_VALUE.match(value), value
    annotations = obj["metadata"]["annotations"]
    assert (annotations["dagflow.dev/flow-name"], annotations["dagflow.dev/work-name"]) == (
        flow_name,
        work_name,
    )


@settings(max_examples=60, deadline=None)
@given(flow_name=flow_names, work_name=work_names, run=st.integers(1, 10**6))
def test_child_names_and_labels_are_always_valid(flow_name: str, work_name: str, run: int) -> None:
    flow = FlowRef(name=flow_name, namespace="team-a", uid="u")
    batch = spec(work(work_name)).works[0]
    served = spec(serve(work_name)).works[0]
    flow_spec = spec(work(work_name))

    job = build_job(flow, flow_spec, batch, run, SETTINGS)
    assert len(job["metadata"]["name"]) <= 63 and DNS_1123_LABEL.match(job["metadata"]["name"])
    check_child(job, flow_name, work_name)

    deployment = build_deployment(flow, spec(serve(work_name)), served, run, SETTINGS)
    service = build_service(flow, served, run)
    for obj in (deployment, service):
        assert len(obj["metadata"]["name"]) <= 63 and DNS_1035_LABEL.match(obj["metadata"]["name"])
        check_child(obj, flow_name, work_name)
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels(deployment).items()


def test_different_long_flows_get_different_job_names() -> None:
    base = "a" * 70
    one = FlowRef(name=base + "x", namespace="n", uid="u")
    two = FlowRef(name=base + "y", namespace="n", uid="u")
    flow_spec = spec(work())
    w: Work = flow_spec.works[0]
    assert (
        build_job(one, flow_spec, w, 1, SETTINGS)["metadata"]["name"]
        != build_job(two, flow_spec, w, 1, SETTINGS)["metadata"]["name"]
    )
    assert (
        build_job(one, flow_spec, w, 1, SETTINGS)["metadata"]["labels"]["dagflow.dev/flow"]
        != build_job(two, flow_spec, w, 1, SETTINGS)["metadata"]["labels"]["dagflow.dev/flow"]
    )


# -- references ------------------------------------------------------------------------------------


def test_references_are_replaced_in_the_job_and_the_deployment_of_a_run() -> None:
    flow_spec = spec(
        work("train", outputs=[{"name": "model"}]),
        work(
            "serve",
            dependsOn=["train"],
            serve={"port": 8080},
            container={
                "image": "example/ml:1.0",
                "args": ["--model", "$(works.train.outputs.model)", "--run", "$(run)"],
                "env": [{"name": "DATA", "value": "$(params.data)"}, {"name": "HOME2", "value": "$(HOME)"}],
            },
        ),
        params=[{"name": "data", "default": "/data"}],
        podDefaults={"env": [{"name": "FLOW", "value": "$(flow.name)/$(work.name)"}]},
    )
    values = Values(
        run=3,
        flow=FLOW.name,
        work="serve",
        params={"data": "/data/v2"},
        outputs={"train": {"model": "m.pkl"}},
    )
    deployment = build_deployment(FLOW, flow_spec, flow_spec.work("serve"), 3, SETTINGS, values)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["--model", "m.pkl", "--run", "3"]
    assert container["env"] == [
        {"name": "FLOW", "value": "ml-pipeline/serve"},
        {"name": "DATA", "value": "/data/v2"},
        {"name": "HOME2", "value": "$(HOME)"},
    ]
    job = build_job(FLOW, flow_spec, flow_spec.work("serve").model_copy(update={"serve": None}), 3, SETTINGS)
    assert job["spec"]["template"]["spec"]["containers"][0]["args"][1] == "$(works.train.outputs.model)", (
        "without values nothing is replaced"
    )
    with pytest.raises(BadReference, match="work train has reported no outputs"):
        build_deployment(
            FLOW, flow_spec, flow_spec.work("serve"), 3, SETTINGS, Values(run=3, flow="f", work="serve")
        )


# -- matrix works ----------------------------------------------------------------------------------


def test_a_matrix_work_is_one_indexed_job_started_through_the_launcher() -> None:
    train = work(
        "train",
        container={
            "image": "ml:1",
            "command": ["python", "-m", "train"],
            "args": ["--model", "$(matrix.model)"],
        },
        matrix={"model": ["a", "b", "c"]},
        retries=2,
        volumes=[{"name": "data", "emptyDir": {}}],
    )
    flow_spec = spec(train)
    job = build_job(
        FLOW, flow_spec, flow_spec.work("train"), 4, SETTINGS, None, MatrixInstances(count=3, parallelism=2)
    )
    job_spec = job["spec"]
    assert (job_spec["completions"], job_spec["parallelism"], job_spec["backoffLimitPerIndex"]) == (3, 2, 2)
    assert "backoffLimit" not in job_spec, "each instance has its own limit, the Job none"
    assert job_spec["maxFailedIndexes"] == 0, "FailFast: the first failed instance fails the work"
    assert job["metadata"]["annotations"]["dagflow.dev/matrix"] == "true"
    pod = job_spec["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"] == [
        "/dagflow/launcher",
        "run",
        "--",
        "python",
        "-m",
        "train",
        "--model",
        "$(matrix.model)",
    ]
    assert "args" not in container
    (init,) = pod["initContainers"]
    assert init["image"] == SETTINGS.launcher_image and init["args"] == ["install", "/dagflow/launcher"]
    assert init["securityContext"]["runAsNonRoot"] and init["securityContext"]["capabilities"] == {
        "drop": ["ALL"]
    }
    assert [volume["name"] for volume in pod["volumes"]] == ["data", "dagflow-launcher", "dagflow-matrix"]
    assert pod["volumes"][2]["configMap"]["name"] == "ml-pipeline-4-train-matrix"
    # A runtime cannot make a mount point inside a read-only mount.
    mounts = container["volumeMounts"]
    read_only = [mount["mountPath"] for mount in mounts if mount.get("readOnly")]
    assert not [
        (outer, mount["mountPath"])
        for outer in read_only
        for mount in mounts
        if mount["mountPath"].startswith(outer + "/")
    ]
    continuing = spec(train, failurePolicy="Continue")
    assert (
        "maxFailedIndexes"
        not in build_job(
            FLOW, continuing, continuing.work("train"), 4, SETTINGS, None, MatrixInstances(3, 3)
        )["spec"]
    )
    values = build_matrix_values(
        FLOW, flow_spec.work("train"), 4, [{"model": "a"}, {"model": "b"}, {"model": "c"}]
    )
    assert values["metadata"]["name"] == "ml-pipeline-4-train-matrix"
    assert values["data"] == {"values.json": '[{"model":"a"},{"model":"b"},{"model":"c"}]'}
    assert values["metadata"]["ownerReferences"][0]["uid"] == FLOW.uid


@given(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=63).filter(
        lambda name: name[0].isalnum() and name[-1].isalnum()
    ),
    st.integers(min_value=1, max_value=10**6),
)
def test_matrix_config_map_names_are_valid_whatever_the_names(flow_name: str, run: int) -> None:
    for name in (
        naming.matrix_values_name(flow_name, run, flow_name),
        naming.matrix_outputs_name(flow_name, run, "w"),
    ):
        assert len(name) <= 253 and DNS_1123_LABEL.match(name.replace(".", "-"))
    assert naming.matrix_values_name(flow_name, run, "w") != naming.matrix_outputs_name(flow_name, run, "w")


def launched_job(
    raw_work: dict[str, Any], values: Values | None = None, **spec_fields: Any
) -> dict[str, Any]:
    flow_spec = spec(raw_work, **spec_fields)
    return build_job(
        FLOW, flow_spec, flow_spec.works[0], 1, SETTINGS, values, MatrixInstances(count=2, parallelism=2)
    )


def test_a_launch_that_cannot_happen_fails_its_instance_at_once_without_using_up_retries() -> None:
    train = work(
        "train",
        container={"image": "ml:1", "name": "trainer", "command": ["train", "$(matrix.m)"]},
        matrix={"m": ["a", "b"]},
        retries=3,
    )
    for failure_policy in ("FailFast", "Continue"):
        rules = launched_job(train, failurePolicy=failure_policy)["spec"]["podFailurePolicy"]["rules"]
        assert rules == [
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
            {
                "action": "FailIndex",
                "onExitCodes": {"containerName": "trainer", "operator": "In", "values": [LAUNCHER_EXIT_CODE]},
            },
        ]
    # A work that is not a matrix work runs no launcher: its exit codes are all the program's.
    plain_rules = job_for(work("plain", retries=3))["spec"]["podFailurePolicy"]["rules"]
    assert [rule["action"] for rule in plain_rules] == ["Ignore"]


def test_the_launcher_expands_only_the_env_values_whose_author_wrote_a_matrix_reference() -> None:
    train = work(
        "train",
        container={
            "image": "ml:1",
            "command": ["train", "--tag=$(params.tag)", "--m=$(matrix.m)"],
            "env": [
                {"name": "M", "value": "m=$(matrix.m)"},
                {"name": "TAG", "value": "$(params.tag)"},
                {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "s", "key": "pw"}}},
            ],
        },
        matrix={"m": ["a", "b"]},
    )
    values = Values(run=1, flow=FLOW.name, work="train", params={"tag": "v$(matrix.m)"})
    container = launched_job(train, values, params=[{"name": "tag", "default": "x"}])["spec"]["template"][
        "spec"
    ]["containers"][0]
    env = {entry["name"]: entry.get("value") for entry in container["env"]}
    assert env[LAUNCHER_ENV_NAMES] == '["M"]'
    # Kubernetes turns $$ into $; the launcher then reads $$(matrix. as the literal $(matrix.
    assert container["command"][3:] == ["train", "--tag=v$$$$(matrix.m)", "--m=$(matrix.m)"]
    assert env["TAG"] == "v$$(matrix.m)", "the launcher does not read TAG: Kubernetes' escape only"
    assert "valueFrom" in container["env"][2]


def test_the_launcher_comes_by_an_init_container_unless_the_settings_say_otherwise() -> None:
    assert OperatorSettings().launcher_delivery == "initContainer"
    train = work("train", container={"image": "ml:1", "command": ["t", "$(matrix.m)"]}, matrix={"m": ["a"]})
    pod = launched_job(train)["spec"]["template"]["spec"]
    assert [init["name"] for init in pod["initContainers"]] == ["dagflow-launcher"]
    assert pod["volumes"][0] == {"name": "dagflow-launcher", "emptyDir": {"sizeLimit": "16Mi"}}


def test_with_image_volumes_a_matrix_pod_mounts_the_launchers_image_and_runs_no_init_container() -> None:
    by_image = OperatorSettings(
        launcher_delivery="imageVolume",
        launcher_image="registry.example/launcher:2",
        launcher_pull_policy="Never",
    )
    train = work(
        "train",
        container={
            "image": "ml:1",
            "name": "trainer",
            "command": ["train", "$(matrix.m)"],
            "env": [{"name": "M", "value": "$(matrix.m)"}],
        },
        matrix={"m": ["a", "b"]},
        retries=1,
        volumes=[{"name": "data", "emptyDir": {}}],
    )
    flow_spec = spec(train)
    job = build_job(FLOW, flow_spec, flow_spec.works[0], 3, by_image, None, MatrixInstances(2, 2))
    pod = job["spec"]["template"]["spec"]
    assert "initContainers" not in pod
    assert pod["volumes"] == [
        {"name": "data", "emptyDir": {}},
        {
            "name": "dagflow-launcher",
            "image": {"reference": "registry.example/launcher:2", "pullPolicy": "Never"},
        },
        {"name": "dagflow-matrix", "configMap": {"name": "ml-pipeline-3-train-matrix"}},
    ]
    (container,) = pod["containers"]
    assert container["command"] == ["/dagflow/dagflow-launcher", "run", "--", "train", "$(matrix.m)"]
    # An image volume is read-only, and so is its mount (the kubelet refuses a writable one).
    assert {"name": "dagflow-launcher", "mountPath": "/dagflow", "readOnly": True} in container[
        "volumeMounts"
    ]
    assert {"name": "dagflow-matrix", "mountPath": "/dagflow-matrix", "readOnly": True} in container[
        "volumeMounts"
    ]
    assert {"name": LAUNCHER_ENV_NAMES, "value": '["M"]'} in container["env"]
    # The launcher exits as in the other delivery: its failures still fail the instance at once.
    assert job["spec"]["podFailurePolicy"]["rules"][1]["onExitCodes"] == {
        "containerName": "trainer",
        "operator": "In",
        "values": [LAUNCHER_EXIT_CODE],
    }


def test_the_launcher_is_where_its_image_puts_it_under_an_image_volume() -> None:
    dockerfile = Path(__file__).parents[2] / "images" / "launcher" / "Dockerfile"
    copied_to = re.findall(r"^COPY --from=build \S+ (\S+)$", dockerfile.read_text(), re.MULTILINE)
    assert [LAUNCHER_DIRECTORY + path for path in copied_to] == [LAUNCHER_IMAGE_VOLUME_PATH]


def test_the_launcher_delivery_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DAGFLOW_LAUNCHER_DELIVERY", "imageVolume")
    assert OperatorSettings().launcher_delivery == "imageVolume"
    monkeypatch.setenv("DAGFLOW_LAUNCHER_DELIVERY", "auto")
    with pytest.raises(ValueError, match="launcher_delivery"):
        OperatorSettings()


def test_a_matrix_values_config_map_gives_every_instance_every_key() -> None:
    train = work("train", container={"image": "ml:1", "command": ["t"]}, matrix={"m": ["a"]})
    flow_spec = spec(train)
    values = build_matrix_values(FLOW, flow_spec.works[0], 1, [{"m": "a"}, {"m": "b", "depth": "3"}])
    assert values["data"]["values.json"] == '[{"depth":"","m":"a"},{"depth":"3","m":"b"}]'


# -- which pods the operator watches --------------------------------------------------------------


def selected(selector: str, labels: dict[str, str]) -> bool:
    """Whether an equality-based label selector ("a=b,c=d") selects `labels`."""
    terms = (term.split("=", 1) for term in selector.split(","))
    return all(labels.get(key) == value for key, value in terms)


def test_the_operator_watches_only_the_pods_whose_success_settles_their_work() -> None:
    pods = WATCH_SELECTORS[("", "pods")]
    assert selected(pods, pod_labels(job_for(work("train"), run=2)))
    # Its deadline may still fail the Job after its pod succeeded: the Job controller settles it.
    assert not selected(pods, pod_labels(job_for(work("train", timeoutSeconds=60))))
    # A matrix's pods (thousands) are settled by its Job; a serve work's pods by its Deployment.
    flow_spec = spec(work("train", matrix={"model": ["a", "b"]}))
    matrix = build_job(FLOW, flow_spec, flow_spec.works[0], 1, SETTINGS, None, MatrixInstances(2, 2))
    assert not selected(pods, pod_labels(matrix))
    assert not selected(pods, pod_labels(deployment_for(serve())))
    # Every child the operator watches is selected by the API server, as the pods are.
    for resource in (("batch", "jobs"), ("apps", "deployments"), ("", "services"), ("", "configmaps")):
        assert selected(WATCH_SELECTORS[resource], job_for(work("train"))["metadata"]["labels"])


# -- Kueue ---------------------------------------------------------------------------------------

QUEUE = "kueue.x-k8s.io/queue-name"
PRIORITY = "kueue.x-k8s.io/priority-class"


def test_a_queued_work_is_a_suspended_job_labelled_with_its_queue_and_priority() -> None:
    job = job_for(work(gpu=2), queueName="gpu", priorityClassName="high")
    assert job["spec"]["suspend"] is True
    assert job["metadata"]["labels"][QUEUE] == "gpu"
    assert job["metadata"]["labels"][PRIORITY] == "high"
    # Kueue admits on requests: the GPU limit is requested too.
    assert container(job)["resources"] == {
        "limits": {"nvidia.com/gpu": "2"},
        "requests": {"nvidia.com/gpu": "2"},
    }


def test_a_queued_containers_limits_become_its_missing_requests() -> None:
    resources = {"limits": {"cpu": "2", "memory": "4Gi"}, "requests": {"cpu": "1"}}
    job = job_for(work(container={"image": "example/ml:1.0", "resources": resources}), queueName="q")
    assert container(job)["resources"]["requests"] == {"cpu": "1", "memory": "4Gi"}
    assert container(job)["resources"]["limits"] == {"cpu": "2", "memory": "4Gi"}


def test_a_work_not_queued_is_left_as_before() -> None:
    resources = {"limits": {"cpu": "2"}}
    plain = job_for(work(container={"image": "example/ml:1.0", "resources": resources}))
    assert "suspend" not in plain["spec"]
    assert QUEUE not in plain["metadata"]["labels"] and PRIORITY not in plain["metadata"]["labels"]
    assert container(plain)["resources"] == {"limits": {"cpu": "2"}}
    opted_out = job_for(work(queueName=""), queueName="gpu", priorityClassName="high")
    assert "suspend" not in opted_out["spec"] and QUEUE not in opted_out["metadata"]["labels"]


def test_a_work_may_wait_in_a_queue_of_its_own() -> None:
    assert job_for(work(queueName="cpu"), queueName="gpu")["metadata"]["labels"][QUEUE] == "cpu"
    assert job_for(work(queueName="cpu"))["spec"]["suspend"] is True


def test_a_serve_work_is_queued_only_by_its_own_queue_name() -> None:
    plain = deployment_for(serve(), queueName="gpu")
    assert QUEUE not in plain["metadata"]["labels"] and QUEUE not in pod_labels(plain)
    own = deployment_for(serve(queueName="serving", gpu=1), queueName="gpu", priorityClassName="high")
    assert own["metadata"]["labels"][QUEUE] == pod_labels(own)[QUEUE] == "serving"
    assert pod_labels(own)[PRIORITY] == "high"
    assert container(own)["resources"]["requests"] == {"nvidia.com/gpu": "1"}
    # A Deployment has no suspend: Kueue gates its pods itself.
    assert "suspend" not in own["spec"]


def test_a_queued_matrix_work_is_one_suspended_indexed_job() -> None:
    flow_spec = spec(
        work(container={"image": "example/ml:1.0", "command": ["train"]}, matrix={"lr": ["1", "2"]}),
        queueName="gpu",
    )
    instances = MatrixInstances(count=2, parallelism=2)
    job = build_job(FLOW, flow_spec, flow_spec.works[0], 1, SETTINGS, instances=instances)
    assert job["spec"]["completions"] == 2
    assert job["spec"]["suspend"] is True and job["metadata"]["labels"][QUEUE] == "gpu"


MIN_PARALLELISM = "kueue.x-k8s.io/job-min-parallelism"


def queued_matrix_job(at_once: int) -> dict[str, Any]:
    flow_spec = spec(work(gpu=1, matrix={"seed": [str(n) for n in range(16)]}), queueName="gpu")
    instances = MatrixInstances(count=16, parallelism=at_once)
    return build_job(FLOW, flow_spec, flow_spec.works[0], 1, SETTINGS, None, instances)


def test_a_queued_matrix_may_be_admitted_on_part_of_the_quota() -> None:
    job = queued_matrix_job(at_once=16)
    # Kueue may admit as few as one instance at once and lowers the parallelism to what it admits.
    assert job["metadata"]["annotations"][MIN_PARALLELISM] == "1"
    assert (job["spec"]["completions"], job["spec"]["parallelism"]) == (16, 16)
    assert (
        job["metadata"]["annotations"][MIN_PARALLELISM]
        == queued_matrix_job(at_once=4)["metadata"]["annotations"][MIN_PARALLELISM]
    )


def test_a_job_of_one_pod_at_a_time_asks_for_no_partial_admission() -> None:
    # Kueue refuses a minimum that is not below the Job's parallelism.
    assert MIN_PARALLELISM not in queued_matrix_job(at_once=1)["metadata"]["annotations"]
    assert MIN_PARALLELISM not in job_for(work(gpu=1), queueName="gpu")["metadata"]["annotations"]
    unqueued = spec(work(matrix={"seed": ["1", "2"]}))
    plain = build_job(FLOW, unqueued, unqueued.works[0], 1, SETTINGS, None, MatrixInstances(2, 2))
    assert MIN_PARALLELISM not in plain["metadata"]["annotations"]
