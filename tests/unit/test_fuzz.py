"""Fuzzed input: whatever a spec holds, the validator and the webhook answer with problems, never a
crash or a hang, and the operator's parse of it does the same."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from dagflow.controller.reconciler import parse_spec
from dagflow.controller.webhook import admission_problem
from dagflow.rules.validation import validate_flow, validate_object

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(
        ["$(params.x)", "$(works.a.outputs.k)", "$(matrix.m)", "$$(run)", "a -> b", "\\x00", "é"]
    ),
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=25,
)
FIELDS = [
    "name",
    "container",
    "dependsOn",
    "when",
    "gpu",
    "retries",
    "timeoutSeconds",
    "serve",
    "volumes",
    "nodeSelector",
    "tolerations",
    "labels",
    "annotations",
    "serviceAccountName",
    "outputs",
    "matrix",
    "maxParallel",
]
SPEC_FIELDS = [
    "works",
    "failurePolicy",
    "parallelism",
    "podDefaults",
    "params",
    "schedule",
    "timeZone",
    "concurrencyPolicy",
    "startingDeadlineSeconds",
    "scheduleParams",
    "suspend",
    "historyRuns",
]
VALID = {
    "params": [{"name": "lr", "default": "0.1"}],
    "works": [
        {"name": "a", "container": {"image": "x", "args": ["$(params.lr)"]}, "outputs": [{"name": "k"}]},
        {
            "name": "b",
            "dependsOn": ["a"],
            "matrix": {"m": ["1", "2"]},
            "container": {"image": "x", "command": ["run", "$(matrix.m)", "$(works.a.outputs.k)"]},
        },
        {"name": "s", "dependsOn": ["b"], "serve": {"port": 80}, "container": {"image": "x"}},
    ],
}


def check(spec: Any) -> None:
    problems = validate_flow(spec, flow_name="fuzzed")
    assert all(problem.path and problem.message for problem in problems)
    obj = {
        "apiVersion": "dagflow.dev/v1alpha1",
        "kind": "DAGFlow",
        "metadata": {"name": "fuzzed"},
        "spec": spec,
    }
    validate_object(obj)
    answer = admission_problem("CREATE", None, obj, "fuzzed")
    assert answer is None or isinstance(answer, str)
    if isinstance(spec, dict):
        parsed = parse_spec(spec, "fuzzed")
        assert (parsed.spec is None) == (parsed.problem is not None)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(JSON)
@example({"0²": None})  # a digit to str.isdigit that int() refuses, in a problem's path
def test_any_json_as_a_spec_is_answered_with_problems(spec: Any) -> None:
    check(spec)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.integers(0, 2), st.sampled_from(FIELDS), JSON),
        max_size=4,
    ),
    st.lists(st.tuples(st.sampled_from(SPEC_FIELDS), JSON), max_size=2),
)
def test_a_valid_spec_with_fields_replaced_by_anything_is_answered_with_problems(
    work_changes: list[tuple[int, str, Any]], spec_changes: list[tuple[str, Any]]
) -> None:
    spec = copy.deepcopy(VALID)
    for index, field, value in work_changes:
        spec["works"][index][field] = value
    for field, value in spec_changes:
        spec[field] = value
    check(spec)


def test_the_valid_spec_of_the_fuzzing_is_valid() -> None:
    assert validate_flow(VALID) == []
