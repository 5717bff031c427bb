"""The offline validator: every problem at once, with a path and a message naming the work."""

from __future__ import annotations

import itertools
import random
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dagflow.api.models import DAGFlowSpec
from dagflow.rules.validation import (
    CycleError,
    ValidationProblem,
    find_cycles,
    parse_flow_spec,
    topological_order,
    validate_flow,
    validate_object,
)


def work(name: str, *depends_on: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "dependsOn": list(depends_on), "container": {"image": "example/ml:1.0"}, **fields}


def spec(*works: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"works": list(works), **fields}


def messages(problems: list[ValidationProblem]) -> list[str]:
    return [str(problem) for problem in problems]


CLASSIC = spec(
    work("process"),
    work("train-a", "process", gpu=1, retries=2, timeoutSeconds=3600),
    work("train-b", "process", gpu=1),
    work("serve", "train-a", "train-b", when="AllSucceeded", serve={"port": 8080}),
    work("smoke-test", "serve"),
)


def test_the_classic_flow_is_valid() -> None:
    assert validate_flow(CLASSIC, flow_name="ml-pipeline") == []
    model, problems = parse_flow_spec(CLASSIC)
    assert problems == [] and model is not None
    assert validate_flow(model) == []


def test_duplicate_names_are_reported_at_the_second_one() -> None:
    problems = validate_flow(spec(work("a"), work("b"), work("a")))
    assert messages(problems) == [
        "spec.works[2].name: work 'a' is defined more than once (first at spec.works[0]); "
        "names must be unique among works and finally works"
    ]


def test_unknown_dependency_names_the_work_and_the_target() -> None:
    problems = validate_flow(spec(work("a"), work("b", "a", "trian")))
    assert messages(problems) == [
        "spec.works[1].dependsOn[1]: work 'b' depends on 'trian', which is not a work of this flow"
    ]


def test_self_dependency() -> None:
    problems = validate_flow(spec(work("a", "a")))
    assert messages(problems) == ["spec.works[0].dependsOn[0]: work 'a' depends on itself"]


def test_repeated_dependency() -> None:
    problems = validate_flow(spec(work("a"), work("b", "a", "a")))
    assert messages(problems) == [
        "spec.works[1].dependsOn[1]: work 'b' lists 'a' more than once in dependsOn"
    ]


def test_cycle_is_named_in_run_order_from_the_first_work() -> None:
    problems = validate_flow(spec(work("x"), work("a", "c"), work("b", "a"), work("c", "b", "x")))
    assert messages(problems) == [
        "spec.works[1].dependsOn[0]: work 'a' is part of a dependency cycle: a -> b -> c -> a "
        "(each work waits for the one before it)"
    ]


def test_two_separate_cycles_are_both_reported() -> None:
    problems = validate_flow(spec(work("a", "b"), work("b", "a"), work("c", "d"), work("d", "c")))
    assert [problem.path for problem in problems] == [
        "spec.works[0].dependsOn[0]",
        "spec.works[2].dependsOn[0]",
    ]
    assert "a -> b -> a" in problems[0].message or "b -> a -> b" in problems[0].message


@pytest.mark.parametrize(
    ("field", "value", "path", "expected"),
    [
        ("retries", -1, "spec.works[0].retries", "greater than or equal to 0"),
        ("gpu", -2, "spec.works[0].gpu", "greater than or equal to 0"),
        ("timeoutSeconds", 0, "spec.works[0].timeoutSeconds", "greater than or equal to 1"),
        ("when", "Sometimes", "spec.works[0].when", "'AllSucceeded', 'AllDone' or 'AnySucceeded'"),
        ("serve", {"port": 0}, "spec.works[0].serve.port", "greater than or equal to 1"),
        ("serve", {"port": 80, "replicas": 0}, "spec.works[0].serve.replicas", "greater than or equal to 1"),
        ("dependOn", ["x"], "spec.works[0].dependOn", "unknown field"),
        ("container", {"name": "c"}, "spec.works[0].container", "needs a non-empty string `image`"),
        ("volumes", [{"emptyDir": {}}], "spec.works[0].volumes[0]", "needs a non-empty string `name`"),
        ("labels", {"team": "not ok!"}, 'spec.works[0].labels["team"]', "must be a label value"),
    ],
)
def test_field_errors_name_the_field_and_the_work(field: str, value: Any, path: str, expected: str) -> None:
    problems = validate_flow(spec(work("train", **{field: value})))
    assert [problem.path for problem in problems] == [path]
    assert problems[0].message.startswith("work 'train': ")
    assert expected in problems[0].message


def test_bad_work_names() -> None:
    problems = validate_flow(spec(work("Train_A"), work("x" * 64), work("ok", "Train_A")))
    assert [problem.path for problem in problems] == [
        "spec.works[0].name",
        "spec.works[1].name",
        "spec.works[2].dependsOn[0]",
    ]
    assert "DNS-1123 label" in problems[0].message
    assert "at most 63 characters" in problems[1].message


def test_flow_level_fields() -> None:
    problems = validate_flow(spec(work("a"), failurePolicy="Sometimes", parallelism=-1))
    assert [problem.path for problem in problems] == ["spec.failurePolicy", "spec.parallelism"]


def test_serve_work_refuses_batch_only_fields() -> None:
    problems = validate_flow(spec(work("s", serve={"port": 80}, retries=1)))
    assert messages(problems) == [
        "spec.works[0]: work 's': a serve work runs until the flow is deleted: "
        "retries, timeoutSeconds, outputs and matrix apply to batch works only"
    ]


def test_empty_and_missing_works() -> None:
    assert [problem.path for problem in validate_flow({"works": []})] == ["spec.works"]
    assert messages(validate_flow({})) == ["spec.works: required field is missing"]
    assert messages(validate_flow([])) == ["spec: must be a mapping with a list of works"]  # type: ignore[arg-type]


def test_label_keys_and_reserved_labels() -> None:
    problems = validate_flow(
        spec(
            work("a", labels={"dagflow.dev/flow": "x", "bad key": "v", "example.com/team": "ml"}),
            podDefaults={"labels": {"app.kubernetes.io/managed-by": "me"}, "nodeSelector": {"pool": "a b"}},
        )
    )
    assert messages(problems) == [
        'spec.podDefaults.labels["app.kubernetes.io/managed-by"]: podDefaults: label '
        "'app.kubernetes.io/managed-by' is set by the operator and cannot be overridden",
        "spec.podDefaults.nodeSelector[\"pool\"]: podDefaults: 'a b' is not a valid label value",
        "spec.works[0].labels[\"bad key\"]: work 'a': 'bad key' is not a valid key: the name must be at most "
        "63 characters of letters, digits, '-', '_' or '.', starting and ending with a letter or digit",
        "spec.works[0].labels[\"dagflow.dev/flow\"]: work 'a': label 'dagflow.dev/flow' is set by the "
        "operator and cannot be overridden",
    ]


def test_everything_is_reported_at_once() -> None:
    problems = validate_flow(
        spec(work("a", "a", retries=-1), work("b", "c"), work("c", "b"), work("a"), work("Bad", when="Never"))
    )
    assert [problem.path for problem in problems] == [
        "spec.works[0].dependsOn[0]",
        "spec.works[0].retries",
        "spec.works[1].dependsOn[0]",
        "spec.works[3].name",
        "spec.works[4].name",
        "spec.works[4].when",
    ]


def test_validate_object_checks_the_envelope() -> None:
    good = {
        "apiVersion": "dagflow.dev/v1alpha1",
        "kind": "DAGFlow",
        "metadata": {"name": "f"},
        "spec": CLASSIC,
    }
    assert validate_object(good) == []
    bad = {"apiVersion": "dagflow.dev/v2", "kind": "DAGFlow", "metadata": {"name": "Not_A_Name"}}
    assert [problem.path for problem in validate_object(bad)] == ["apiVersion", "metadata.name", "spec"]


def test_parse_flow_spec_returns_problems_instead_of_raising() -> None:
    model, problems = parse_flow_spec(spec(work("a", "missing")))
    assert model is None
    assert len(problems) == 1


def test_topological_order_keeps_spec_order_between_independent_works() -> None:
    model = DAGFlowSpec.model_validate(CLASSIC)
    assert topological_order(model) == ["process", "train-a", "train-b", "serve", "smoke-test"]
    reversed_chain = DAGFlowSpec.model_validate(spec(work("c", "b"), work("b", "a"), work("a")))
    assert topological_order(reversed_chain) == ["a", "b", "c"]


def test_topological_order_raises_on_a_cycle() -> None:
    model = DAGFlowSpec.model_validate(spec(work("a", "b"), work("b", "a")))
    with pytest.raises(CycleError) as raised:
        topological_order(model)
    assert raised.value.cycle == ["a", "b", "a"]


def test_two_thousand_works_and_a_deep_chain_are_fast_and_need_no_recursion() -> None:
    chain = [work("w-0")] + [work(f"w-{index}", f"w-{index - 1}") for index in range(1, 2000)]
    started = time.monotonic()
    assert validate_flow(spec(*chain)) == []
    assert len(topological_order(DAGFlowSpec.model_validate(spec(*chain)))) == 2000
    chain[0] = work("w-0", "w-1999")
    problems = validate_flow(spec(*chain))
    assert time.monotonic() - started < 10
    assert len(problems) == 1
    assert problems[0].path == "spec.works[0].dependsOn[0]"
    assert problems[0].message.count(" -> ") == 2000


def test_fan_out_fan_in_of_two_thousand() -> None:
    works = [work("first"), *(work(f"mid-{index}", "first") for index in range(1998))]
    works.append(work("last", *(f"mid-{index}" for index in range(1998))))
    assert validate_flow(spec(*works)) == []


@st.composite
def random_dags(draw: st.DrawFn) -> dict[str, list[str]]:
    """A random acyclic dependency graph, with works listed in a shuffled order."""
    size = draw(st.integers(min_value=1, max_value=25))
    names = [f"w{index}" for index in range(size)]
    depends_on = {
        name: draw(st.lists(st.sampled_from(names[:index]), unique=True)) if index else []
        for index, name in enumerate(names)
    }
    order = draw(st.permutations(names))
    return {name: depends_on[name] for name in order}


def ancestors(graph: dict[str, list[str]], name: str) -> set[str]:
    """Every work `name` waits for, directly or not."""
    found: set[str] = set()
    stack = list(graph[name])
    while stack:
        current = stack.pop()
        if current not in found:
            found.add(current)
            stack.extend(graph[current])
    return found


def as_spec(graph: dict[str, list[str]]) -> dict[str, Any]:
    return spec(*(work(name, *dependencies) for name, dependencies in graph.items()))


@settings(max_examples=150, deadline=None)
@given(graph=random_dags())
def test_random_acyclic_flows_are_valid(graph: dict[str, list[str]]) -> None:
    assert validate_flow(as_spec(graph)) == []
    order = topological_order(DAGFlowSpec.model_validate(as_spec(graph)))
    position = {name: index for index, name in enumerate(order)}
    assert all(position[dependency] < position[name] for name in graph for dependency in graph[name])


@settings(max_examples=150, deadline=None)
@given(graph=random_dags(), data=st.data())
def test_any_back_edge_is_reported_as_a_real_cycle(graph: dict[str, list[str]], data: st.DataObject) -> None:
    candidates = [(name, ancestor) for name in graph for ancestor in sorted(ancestors(graph, name))]
    if not candidates:
        return
    descendant, ancestor = data.draw(st.sampled_from(candidates))
    # `ancestor` now also waits for `descendant`, which already waits for it.
    graph[ancestor] = [*graph[ancestor], descendant]

    problems = validate_flow(as_spec(graph))
    assert problems, "the cycle went unnoticed"
    for problem in problems:
        assert "dependency cycle: " in problem.message
        cycle = problem.message.split("dependency cycle: ")[1].split(" (")[0].split(" -> ")
        assert cycle[0] == cycle[-1] and len(cycle) >= 3
        assert len(set(cycle[:-1])) == len(cycle) - 1
        for before, after in itertools.pairwise(cycle):
            assert before in graph[after], f"{after} does not depend on {before} in {cycle}"
    assert find_cycles(graph)


def test_find_cycles_on_a_plain_mapping() -> None:
    assert find_cycles({"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a", "zz"]}) == [["a", "c", "b", "a"]]
    assert find_cycles({"a": ["a"]}) == []


def test_validator_agrees_with_a_shuffled_copy() -> None:
    works = [
        work(f"w{index}", *(f"w{dep}" for dep in range(max(0, index - 3), index))) for index in range(50)
    ]
    random.Random(7).shuffle(works)
    assert validate_flow(spec(*works)) == []


def test_embedded_kubernetes_objects_are_checked_against_upstream_schemas() -> None:
    problems = validate_flow(
        spec(
            work(
                "a",
                container={
                    "image": "x",
                    "comand": ["python"],
                    "resources": {"limits": {"cpu": "1 core", "memory": "1Gi"}},
                    "ports": [{"containerPort": "80"}, {"protocol": "TCP"}],
                    "readinessProbe": {"httpGet": {"port": "http", "path": "/"}},
                },
                volumes=[{"name": "v", "configMap": {"name": "c", "items": [{"key": "k"}]}}],
            ),
            podDefaults={"env": [{"value": "x"}], "tolerations": [{"operator": "Maybe"}]},
        )
    )
    assert messages(problems) == [
        "spec.podDefaults.env[0]: podDefaults: an env entry needs a non-empty string `name`",
        "spec.podDefaults.tolerations[0].operator: podDefaults: unsupported value 'Maybe': must be one of "
        "'Equal', 'Exists', 'Gt', 'Lt'",
        "spec.works[0].container.comand: work 'a': unknown field",
        "spec.works[0].container.ports[0].containerPort: work 'a': must be of type integer, got str '80'",
        "spec.works[0].container.ports[1].containerPort: work 'a': required field is missing",
        "spec.works[0].container.resources.limits.cpu: work 'a': '1 core' is not a quantity "
        "(like 500m, 2, 1.5 or 4Gi)",
        "spec.works[0].volumes[0].configMap.items[0].path: work 'a': required field is missing",
    ]


def test_a_container_needs_an_image_but_no_name() -> None:
    assert (
        validate_flow(spec(work("a", container={"image": "x", "env": [{"name": "A", "value": "1"}]}))) == []
    )
    problems = validate_flow(spec(work("a", container={"name": "c"})))
    assert messages(problems) == [
        "spec.works[0].container: work 'a': a work's container needs a non-empty string `image`"
    ]


def test_a_schedule_in_a_time_zone_is_valid() -> None:
    assert validate_flow(spec(work("a"), schedule="0 3 * * 1-5", timeZone="Europe/Berlin")) == []
    assert validate_flow(spec(work("a"), schedule="@weekly")) == []


@pytest.mark.parametrize(
    ("fields", "path", "says"),
    [
        ({"schedule": "61 * * * *"}, "spec.schedule", "schedule '61 * * * *': bad minute"),
        ({"schedule": "0 3 * *"}, "spec.schedule", "schedule '0 3 * *' has 4 fields"),
        ({"schedule": "@fortnightly"}, "spec.schedule", "schedule '@fortnightly' is no known macro"),
        ({"schedule": "@daily", "timeZone": "Berlin"}, "spec.timeZone", "unknown time zone 'Berlin'"),
        ({"timeZone": "UTC+2"}, "spec.timeZone", "unknown time zone 'UTC+2'"),
        ({"startingDeadlineSeconds": 0}, "spec.startingDeadlineSeconds", "greater than or equal to 1"),
        ({"concurrencyPolicy": "Allow"}, "spec.concurrencyPolicy", "'Forbid' or 'Replace'"),
        ({"historyRuns": 0}, "spec.historyRuns", "greater than or equal to 1"),
    ],
)
def test_bad_run_control_fields_are_refused_naming_them(fields: dict[str, Any], path: str, says: str) -> None:
    (problem,) = validate_flow(spec(work("a"), **fields))
    assert problem.path == path
    assert says in problem.message


def test_a_bad_schedule_and_a_bad_time_zone_are_both_reported() -> None:
    problems = validate_flow(spec(work("a"), schedule="* * * * * *", timeZone="Nowhere/Else"))
    assert [problem.path for problem in problems] == ["spec.schedule", "spec.timeZone"]


# -- references -----------------------------------------------------------------------------------


def test_references_to_parameters_ancestors_outputs_and_names_are_valid() -> None:
    flow = spec(
        work("split", outputs=[{"name": "shards"}, {"name": "rows"}]),
        work("train", "split", outputs=[{"name": "score"}]),
        work(
            "report",
            "train",
            container={
                "image": "ml",
                "command": ["report", "$(flow.name)-$(run)-$(work.name)"],
                "args": ["--rows", "$(works.split.outputs.rows)", "--score", "$(works.train.outputs.score)"],
                "env": [{"name": "DATA", "value": "$(params.data)"}, {"name": "K8S", "value": "$(HOME)"}],
            },
        ),
        params=[{"name": "data", "default": "/data"}],
        podDefaults={"env": [{"name": "RUN", "value": "$(run)"}]},
    )
    assert validate_flow(flow) == []


def test_bad_references_are_refused_naming_the_work_and_the_field() -> None:
    flow = spec(
        work("split", outputs=[{"name": "shards"}]),
        work("side"),
        work(
            "train",
            "split",
            container={
                "image": "ml",
                "args": [
                    "$(params.lr)",
                    "$(works.side.outputs.x)",
                    "$(works.split.outputs.score)",
                    "$(works.nowhere.outputs.x)",
                    "$(matrix.model)",
                    "$(works.split.shards)",
                ],
            },
        ),
        params=[{"name": "data", "default": "/data"}],
        podDefaults={"env": [{"name": "S", "value": "$(works.split.outputs.shards)"}]},
    )
    assert messages(validate_flow(flow)) == [
        "spec.podDefaults.env[S]: podDefaults: $(works.split.outputs.shards): 'split' is not among the "
        "works this one depends on (directly or through others), so its outputs may not exist when it starts",
        "spec.works[2].container: work 'train': $(works.split.shards) is not a reference the operator "
        "knows: use $(params.NAME), $(works.WORK.outputs.KEY), $(works.WORK.outputs.KEY.path) of an "
        "artifact, $(matrix.KEY), $(run), $(flow.name), $(work.name), or in a finally work $(run.phase) "
        "and $(run.failedWorks)",
    ]
    flow["works"][2]["container"]["args"].pop()
    assert messages(validate_flow(flow))[1:] == [
        "spec.works[2].container.args[0]: work 'train': $(params.lr) names no parameter of the flow "
        "(spec.params has: data)",
        "spec.works[2].container.args[1]: work 'train': $(works.side.outputs.x): 'side' is not among the "
        "works this one depends on (directly or through others), so its outputs may not exist when it starts",
        "spec.works[2].container.args[2]: work 'train': $(works.split.outputs.score): work 'split' declares "
        "no output 'score' (its outputs: shards)",
        "spec.works[2].container.args[3]: work 'train': $(works.nowhere.outputs.x) names 'nowhere', which "
        "is not a work of this flow",
        "spec.works[2].container.args[4]: work 'train': $(matrix.model) names no key of the work's matrix",
    ]


def test_an_ancestor_through_others_may_be_referenced_and_a_cycle_does_not_hang() -> None:
    flow = spec(
        work("a", outputs=[{"name": "k"}]),
        work("b", "a"),
        work("c", "b", container={"image": "ml", "args": ["$(works.a.outputs.k)"]}),
    )
    assert validate_flow(flow) == []
    looped = spec(
        work("a", "c", outputs=[{"name": "k"}]),
        work("b", "a"),
        work("c", "b", container={"image": "ml", "args": ["$(works.a.outputs.k)"]}),
    )
    assert any("cycle" in message for message in messages(validate_flow(looped)))


def test_outputs_and_parameters_are_checked_by_the_schema() -> None:
    problems = messages(
        validate_flow(
            spec(
                work("s", serve={"port": 80}, outputs=[{"name": "x"}]),
                work("t", outputs=[{"name": "1x"}]),
                params=[{"name": "p"}],
            )
        )
    )
    assert any("spec.params[0].default" in problem for problem in problems), problems
    assert any("outputs and matrix apply to batch works only" in problem for problem in problems), problems
    assert any("spec.works[1].outputs[0].name" in problem for problem in problems), problems


def test_a_matrix_is_checked_at_apply() -> None:
    def matrix_work(name: str, *deps: str, matrix: Any, command: list[str] | None = None) -> dict[str, Any]:
        entry = work(name, *deps)
        entry["matrix"] = matrix
        entry["container"] = {"image": "ml", **({"command": command} if command is not None else {})}
        return entry

    flow = spec(
        work("split", outputs=[{"name": "shards"}]),
        matrix_work(
            "fan",
            "split",
            matrix={"shard": "$(works.split.outputs.shards)"},
            command=["run", "$(matrix.shard)"],
        ),
        matrix_work("again", "fan", matrix={"x": "$(works.fan.outputs.y)"}, command=["run"]),
        matrix_work("bad", matrix={"model": []}, command=["run"]),
        matrix_work("no-command", matrix={"model": ["a"]}),
        matrix_work("too-many", matrix={"a": list(range(200)), "b": list(range(101))}, command=["run"]),
        work("plain", container={"image": "ml", "args": ["$(matrix.model)"]}),
    )
    flow["works"][1]["outputs"] = [{"name": "y"}]
    # A dynamic axis may read a matrix work's output: the list of its instances' values ('again').
    assert messages(validate_flow(flow)) == [
        "spec.works[3].matrix: work 'bad': matrix.model: an axis needs at least one value",
        "spec.works[4].container.command: work 'no-command': a matrix work needs an explicit command: its "
        "pods start through a launcher that sets each instance's values, then runs the command (the "
        "image's entrypoint is not known to it)",
        "spec.works[5].matrix: work 'too-many': the matrix has 20200 combinations; a matrix work may have "
        "at most 20000",
        "spec.works[6].container.args[0]: work 'plain': $(matrix.model) names no key of the work's matrix",
    ]


def test_schedule_params_must_name_parameters() -> None:
    flow = spec(
        work("a"), params=[{"name": "lr", "default": "0.1"}], scheduleParams={"lr": "1", "epochs": "3"}
    )
    assert messages(validate_flow(flow)) == [
        "spec.scheduleParams[\"epochs\"]: 'epochs' names no parameter of the flow (spec.params has: lr)"
    ]


def test_a_flow_too_big_to_be_stored_with_its_status_is_refused_saying_so() -> None:
    def flow_of(works: int, padding: int) -> dict[str, Any]:
        env = [{"name": "PAD", "value": "x" * padding}]
        return {
            "apiVersion": "dagflow.dev/v1alpha1",
            "kind": "DAGFlow",
            "metadata": {"name": "big"},
            "spec": spec(*[work(f"w{i:04d}", container={"image": "x", "env": env}) for i in range(works)]),
        }

    assert validate_object(flow_of(2000, 300)) == []
    (problem,) = validate_object(flow_of(2000, 600))
    assert problem.path == "spec"
    assert problem.message.startswith("the DAGFlow is 1.32 MiB as JSON")
    assert "may be at most 1.0 MiB before its status" in problem.message


def test_queue_names_are_label_values_and_a_priority_needs_a_queue() -> None:
    queued = spec(work("train", gpu=1), work("prep", queueName=""), queueName="gpu", priorityClassName="high")
    assert validate_flow(queued) == []
    assert validate_flow(spec(work("train", queueName="gpu.team-a"), priorityClassName="high")) == []

    problems = messages(validate_flow(spec(work("train"), priorityClassName="high")))
    assert problems == [
        "spec.priorityClassName: orders queued Jobs only: set spec.queueName (or a work's queueName) too"
    ]
    bad = messages(validate_flow(spec(work("train", queueName="GPU"), queueName="-gpu")))
    assert len(bad) == 2
    assert bad[0].startswith("spec.queueName: ") and "pattern" in bad[0]
    assert bad[1].startswith("spec.works[0].queueName: ") and "work 'train'" in bad[1]


def test_a_cached_work_that_requires_a_digest_refuses_a_tag() -> None:
    spec = {
        "cache": {"enabled": True, "requireDigest": True},
        "works": [
            {"name": "tagged", "container": {"image": "example/ml:1.0"}},
            {"name": "pinned", "container": {"image": "example/ml@sha256:" + "a" * 64}},
            {"name": "free", "container": {"image": "example/ml:1.0"}, "cache": {"requireDigest": False}},
        ],
    }
    problems = validate_flow(spec)
    assert [(problem.path, problem.message) for problem in problems] == [
        (
            "spec.works[0].container.image",
            "work 'tagged' sets cache.requireDigest: its image 'example/ml:1.0' must be written by digest "
            "(image@sha256:...), as a tag may move to another image",
        )
    ]
