"""References in works' command, args and env: which are the operator's, and what they become."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dagflow.rules.substitution import (
    BadReference,
    Values,
    container_references,
    references,
    render,
    substitute,
    substitute_container,
)

VALUES = Values(
    run=7,
    flow="ml-pipeline",
    work="train",
    params={"data": "/data/v2", "lr": "0.01"},
    outputs={"process": {"features": "/data/features.parquet", "rows": 1200, "shards": ["a", "b"]}},
    matrix={"model": "forest"},
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$(params.data)", "/data/v2"),
        ("--lr=$(params.lr)", "--lr=0.01"),
        ("$(works.process.outputs.features)", "/data/features.parquet"),
        ("rows: $(works.process.outputs.rows)", "rows: 1200"),
        ("$(works.process.outputs.shards)", '["a","b"]'),
        ("$(matrix.model)", "forest"),
        ("run-$(run)", "run-7"),
        ("$(flow.name)/$(work.name)", "ml-pipeline/train"),
        ("$(params.data)$(params.lr)", "/data/v20.01"),
    ],
)
def test_every_reference_kind_is_replaced(text: str, expected: str) -> None:
    assert substitute(text, VALUES) == expected


@pytest.mark.parametrize(
    "text",
    ["$(HOME)", "$(MY_VAR)", "$(params)", "$(paramsx.y)", "cost $5", "$", "$(", "a $(b c) d", "$(run.x)"],
)
def test_what_is_not_ours_is_left_for_kubernetes(text: str) -> None:
    assert substitute(text, VALUES) == text


def test_the_kubernetes_escape_keeps_a_reference_literal() -> None:
    # Kubernetes turns `$$(params.data)` into the literal `$(params.data)`; it must reach it untouched.
    assert substitute("$$(params.data) is $(params.data)", VALUES) == "$$(params.data) is /data/v2"
    assert substitute("$$$(params.data)", VALUES) == "$$/data/v2"


def test_a_replaced_value_is_never_expanded_again_by_kubernetes() -> None:
    values = Values(run=1, flow="f", work="w", params={"cmd": "echo $(HOME) costs $5"})
    assert substitute("$(params.cmd)", values) == "echo $$(HOME) costs $$5"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("$(params.nope)", "no parameter nope"),
        ("$(matrix.size)", "no matrix key size"),
        ("$(works.split.outputs.x)", "work split has reported no outputs"),
        ("$(works.process.outputs.missing)", "did not report the output missing"),
    ],
)
def test_an_unresolved_reference_is_named(text: str, message: str) -> None:
    with pytest.raises(BadReference, match=message) as raised:
        substitute(text, VALUES)
    assert text in str(raised.value)


@pytest.mark.parametrize(
    "text", ["$(works.process.score)", "$(works.Process.outputs.x)", "$(flow.uid)", "$(params.1x)"]
)
def test_a_malformed_reference_of_ours_is_refused(text: str) -> None:
    with pytest.raises(BadReference, match="not a reference the operator knows"):
        list(references(text))


def test_references_lists_kind_work_and_name() -> None:
    found = list(references("$(params.a) $(HOME) $(works.x-1.outputs.k) $(run) $$(params.b)"))
    assert [(ref.kind, ref.work, ref.name) for ref in found] == [
        ("params", "", "a"),
        ("works", "x-1", "k"),
        ("run", "", ""),
    ]


def test_a_container_is_substituted_in_command_args_and_env_values_only() -> None:
    container = {
        "image": "ml:$(params.lr)",
        "command": ["python", "-m", "$(work.name)"],
        "args": ["--data", "$(params.data)"],
        "env": [
            {"name": "RUN", "value": "$(run)"},
            {"name": "SECRET", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
        ],
        "workingDir": "/$(params.data)",
    }
    result = substitute_container(container, VALUES)
    assert result["command"] == ["python", "-m", "train"]
    assert result["args"] == ["--data", "/data/v2"]
    assert result["env"] == [{"name": "RUN", "value": "7"}, container["env"][1]]
    assert result["image"] == "ml:$(params.lr)" and result["workingDir"] == "/$(params.data)"
    assert container["args"] == ["--data", "$(params.data)"], "the work's own container is not changed"
    assert [where for where, _ in container_references(container)] == ["command[2]", "args[1]", "env[RUN]"]


def test_values_render_as_text_or_compact_json() -> None:
    assert render("x y") == "x y"
    assert render(0.93) == "0.93"
    assert render(True) == "true"
    assert render({"b": 1, "a": [1, 2]}) == '{"a":[1,2],"b":1}'


def test_non_ascii_text_in_a_list_or_object_output_stays_as_written() -> None:
    assert render(["café", "日本"]) == '["café","日本"]'
    assert render({"city": "Zürich"}) == '{"city":"Zürich"}'
    assert render(None) == "null"


@given(st.text(alphabet=st.sampled_from("ab$()._ -"), max_size=30))
def test_text_without_our_references_comes_back_unchanged(text: str) -> None:
    assert substitute(text, VALUES) == text


def test_matrix_references_are_left_for_the_launcher_without_instance_values() -> None:
    values = Values(run=1, flow="f", work="train", params={"lr": "0.1"})
    assert (
        substitute("--model $(matrix.model) --lr $(params.lr)", values) == "--model $(matrix.model) --lr 0.1"
    )
