"""Parameter values of a run: the spec's defaults, and the values a run request gives.

A rerun or retry request carries values in the annotation `dagflow.dev/params`, a JSON object of
parameter names to values (strings; numbers and booleans are taken as their JSON text). A rerun
starts from the defaults, a retry from the values of the run it retries, so the outcomes it carries
over and the works it runs again see the same parameters unless the request says otherwise.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping

from dagflow.api.models import PARAM_VALUE_MAX_LENGTH, PARAMS_ANNOTATION, DAGFlowSpec


def default_params(spec: DAGFlowSpec) -> dict[str, str]:
    return {param.name: param.default for param in spec.params}


def requested_params(spec: DAGFlowSpec, annotations: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """The values the params annotation gives, and what is wrong with it (each in words)."""
    text = annotations.get(PARAMS_ANNOTATION)
    if text is None:
        return {}, []
    try:
        given = json.loads(text)
    except json.JSONDecodeError as error:
        return {}, [f"{PARAMS_ANNOTATION} is not JSON: {error.msg} at character {error.pos}"]
    if not isinstance(given, dict):
        return {}, [f'{PARAMS_ANNOTATION} must be a JSON object of names to values, e.g. {{"lr": "0.1"}}']
    return given_values(
        given, {param.name for param in spec.params}, PARAMS_ANNOTATION, "the flow has", "it has"
    )


def given_values(
    given: Mapping[str, object], known: Collection[str], source: str, holder: str, listing: str
) -> tuple[dict[str, str], list[str]]:
    """Parameter values as text, each name one of `known`; what is wrong with them, told as from
    `source` (the annotation that gave them), whose names `holder` has ("the flow has")."""
    values: dict[str, str] = {}
    problems: list[str] = []
    for name, value in given.items():
        if name not in known:
            listed = ", ".join(sorted(known)) or "none"
            problems.append(f"{source}: {holder} no parameter {name!r} ({listing}: {listed})")
        elif isinstance(value, (dict, list)) or value is None:
            problems.append(f"{source}: the value of {name!r} must be a string")
        else:
            text_value = value if isinstance(value, str) else json.dumps(value)
            if len(text_value) > PARAM_VALUE_MAX_LENGTH:
                problems.append(
                    f"{source}: the value of {name!r} is longer than {PARAM_VALUE_MAX_LENGTH} characters"
                )
            else:
                values[name] = text_value
    return values, problems


def run_params(
    spec: DAGFlowSpec, base: Mapping[str, str] | None, requested: Mapping[str, str]
) -> dict[str, str]:
    """The values of a new run: `base` (a retried run's values; None: the defaults) for the
    parameters the spec still has, the defaults for new ones, and the requested values over both."""
    values = default_params(spec)
    if base is not None:
        values.update({name: value for name, value in base.items() if name in values})
    values.update(requested)
    return values
