"""Parameter values of a run: defaults, and the values a rerun or retry request gives."""

from __future__ import annotations

import json

from dagflow.api.models import PARAMS_ANNOTATION, DAGFlowSpec
from dagflow.rules.params import default_params, requested_params, run_params

SPEC = DAGFlowSpec.model_validate(
    {
        "params": [{"name": "data", "default": "/data"}, {"name": "lr", "default": "0.1"}],
        "works": [{"name": "train", "container": {"image": "ml"}}],
    }
)


def annotated(value: object) -> dict[str, str]:
    return {PARAMS_ANNOTATION: value if isinstance(value, str) else json.dumps(value)}


def test_defaults_without_a_request() -> None:
    assert default_params(SPEC) == {"data": "/data", "lr": "0.1"}
    assert requested_params(SPEC, {}) == ({}, [])


def test_requested_values_override_the_defaults() -> None:
    requested, problems = requested_params(SPEC, annotated({"lr": "0.01"}))
    assert problems == []
    assert run_params(SPEC, None, requested) == {"data": "/data", "lr": "0.01"}


def test_numbers_and_booleans_are_taken_as_their_json_text() -> None:
    assert requested_params(SPEC, annotated({"lr": 0.01, "data": True})) == (
        {"lr": "0.01", "data": "true"},
        [],
    )


def test_a_retry_starts_from_the_values_of_the_run_it_retries() -> None:
    retried = {"data": "/data/v2", "lr": "0.5", "gone": "x"}
    assert run_params(SPEC, retried, {}) == {"data": "/data/v2", "lr": "0.5"}
    assert run_params(SPEC, retried, {"lr": "0.2"}) == {"data": "/data/v2", "lr": "0.2"}


def test_bad_values_are_named_and_left_out() -> None:
    requested, problems = requested_params(SPEC, annotated({"lr": ["0.1"], "epochs": "3", "data": "/d"}))
    assert requested == {"data": "/d"}
    assert problems == [
        f"{PARAMS_ANNOTATION}: the value of 'lr' must be a string",
        f"{PARAMS_ANNOTATION}: the flow has no parameter 'epochs' (it has: data, lr)",
    ]
    assert requested_params(SPEC, annotated("lr=0.1"))[1][0].startswith(f"{PARAMS_ANNOTATION} is not JSON")
    assert "must be a JSON object" in requested_params(SPEC, annotated([1]))[1][0]
