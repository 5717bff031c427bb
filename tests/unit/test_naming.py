"""Child names and label values: deterministic, always valid, distinct for distinct inputs."""

from __future__ import annotations

import string

from hypothesis import given
from hypothesis import strategies as st

from dagflow.rules import naming

DNS_LABEL_CHARS = string.ascii_lowercase + string.digits + "-"
dns_labels = st.from_regex(r"\A[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\Z")
# Object names are DNS-1123 subdomains: up to 253 characters.
flow_names = st.from_regex(r"\A[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?\Z")
runs = st.integers(min_value=1, max_value=10**9)


def test_job_name_is_flow_run_work_when_short() -> None:
    assert naming.job_name("ml-pipeline", 1, "process") == "ml-pipeline-1-process"


def test_serve_name_is_flow_work_when_short() -> None:
    assert naming.serve_name("ml-pipeline", "serve") == "ml-pipeline-serve"


def test_long_job_name_is_cut_with_a_hash_and_keeps_every_part() -> None:
    name = naming.job_name("f" * 70, 12, "w" * 63)
    assert len(name) == naming.MAX_JOB_NAME_LENGTH
    assert naming.is_dns1123_label(name)
    readable, _, digest = name.rpartition("-")
    assert digest == naming.short_hash(f"{'f' * 70}-12-{'w' * 63}")
    assert readable.startswith("fff") and "-12-" in readable and readable.endswith("www")


def test_flow_name_with_dots_becomes_a_label_with_a_hash() -> None:
    name = naming.job_name("my.flow", 3, "train")
    assert naming.is_dns1123_label(name)
    assert name.startswith("my-flow-3-train-")
    # Not the same as the flow literally called my-flow.
    assert name != naming.job_name("my-flow", 3, "train")


def test_serve_name_of_a_flow_starting_with_a_digit_gets_a_letter_prefix() -> None:
    assert naming.serve_name("1st-flow", "serve") == "df-1st-flow-serve"
    assert naming.is_dns1035_label(naming.serve_name("1st-flow", "serve"))


def test_label_value_keeps_short_values_and_hashes_long_ones() -> None:
    assert naming.label_value("ml-pipeline") == "ml-pipeline"
    long_flow = "a" * 40 + "." + "b" * 40
    value = naming.label_value(long_flow)
    assert len(value) == 63 and naming.is_label_value(value)
    assert value.endswith(naming.short_hash(long_flow))
    assert naming.label_value(long_flow) == value


def test_child_labels_and_annotations() -> None:
    labels = naming.child_labels("ml-pipeline", "train", run=2)
    assert labels == {
        "dagflow.dev/flow": "ml-pipeline",
        "dagflow.dev/work": "train",
        "dagflow.dev/run": "2",
        "app.kubernetes.io/managed-by": "dagflow-operator",
    }
    assert naming.RUN_LABEL not in naming.child_labels("f", "serve")
    assert naming.child_annotations("f" * 100, "w") == {
        naming.FLOW_ANNOTATION: "f" * 100,
        naming.WORK_ANNOTATION: "w",
    }
    assert naming.flow_selector("f") == "dagflow.dev/flow=f,app.kubernetes.io/managed-by=dagflow-operator"


@given(flow=flow_names, run=runs, work=dns_labels)
def test_job_names_are_always_valid_and_deterministic(flow: str, run: int, work: str) -> None:
    name = naming.job_name(flow, run, work)
    assert naming.is_dns1123_label(name), name
    assert name == naming.job_name(flow, run, work)


@given(flow=flow_names, run=runs, work=dns_labels)
def test_every_pod_host_name_of_a_job_is_valid(flow: str, run: int, work: str) -> None:
    # An Indexed Job's pods are named and host-named `{job}-{index}`; the API server refuses a pod
    # whose host name is not a DNS label of at most 63 characters.
    name = naming.job_name(flow, run, work)
    assert naming.is_dns1123_label(f"{name}-{naming.MAX_COMPLETION_INDEX}"), name


def test_job_names_that_fit_alone_but_not_with_an_index_are_shortened() -> None:
    # 61 characters: a valid name, but its pod's host name `...-0` would have 63 + 1.
    flow, work = "recsys-weekly-model-refresh-pipeline", "evaluate-candidates-v2"
    for run in (1, 9, 10, 12, 100_000):
        name = naming.job_name(flow, run, work)
        assert len(name) <= naming.MAX_JOB_NAME_LENGTH, name
        assert f"-{run}-" in name
    assert naming.job_name("customer-churn-nightly-retraining-pipeline", 1, "feature-engineering").startswith(
        "customer-churn-"
    )


@given(flow=flow_names, work=dns_labels)
def test_serve_names_are_always_valid_service_names(flow: str, work: str) -> None:
    assert naming.is_dns1035_label(naming.serve_name(flow, work))


@given(value=st.text(min_size=0, max_size=300))
def test_label_values_are_always_valid(value: str) -> None:
    assert naming.is_label_value(naming.label_value(value))


@given(flow=flow_names, run=runs, first=dns_labels, second=dns_labels)
def test_distinct_works_get_distinct_job_names(flow: str, run: int, first: str, second: str) -> None:
    if first != second:
        assert naming.job_name(flow, run, first) != naming.job_name(flow, run, second)


def test_work_of_prefers_the_full_name_annotation_over_a_hashed_label() -> None:
    long_name = "w" * 63
    metadata = {
        "labels": {naming.WORK_LABEL: naming.label_value(long_name)},
        "annotations": {naming.WORK_ANNOTATION: long_name},
    }
    assert naming.work_of(metadata) == long_name
    assert naming.work_of({"labels": {naming.WORK_LABEL: "train"}}) == "train"
    assert naming.work_of({}) == ""
