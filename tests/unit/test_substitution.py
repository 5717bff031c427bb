"""References in works' command, args and env: which are the operator's, and what they become."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dagflow.rules.substitution import (
    MAX_ARGUMENT_BYTES,
    BadReference,
    Values,
    container_references,
    launcher_env_names,
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
    ["$(HOME)", "$(MY_VAR)", "$(params)", "$(paramsx.y)", "cost $5", "$", "$(", "a $(b c) d"],
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


def kubelet(text: str) -> str:
    """What the kubelet gives the container of a field without references to its env: `$$` is `$`."""
    return re.sub(r"\$\$", "$", text)


def launcher(text: str, values: dict[str, str]) -> str:
    """What the matrix launcher makes of a field it expands (images/launcher/main.go)."""

    def replace(match: re.Match[str]) -> str:
        return "$(matrix." if match.group(0) == "$$(matrix." else values[match.group(1)]

    return re.sub(r"\$\$\(matrix\.|\$\(matrix\.([A-Za-z_][A-Za-z0-9_-]*)\)", replace, text)


def test_in_a_matrix_work_a_replaced_value_reaches_the_program_as_it_is_and_never_as_a_reference() -> None:
    tricky = "v$(matrix.shard) $$(matrix.shard) $$$(matrix.pw)"
    values = Values(
        run=1, flow="f", work="fan", params={"tag": tricky}, outputs={"split": {"note": "$(matrix.shard)"}}
    )
    container = {
        "command": ["run", "--tag=$(params.tag)", "--shard=$(matrix.shard)"],
        "args": ["$(works.split.outputs.note)"],
        "env": [
            {"name": "SHARD_TAG", "value": "$(matrix.shard):$(params.tag)"},
            {"name": "TAG", "value": "$(params.tag)"},
            {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "s", "key": "pw"}}},
        ],
    }
    result = substitute_container(container, values, launched=True)
    instance = {"shard": "a", "pw": "secret"}
    received = [launcher(kubelet(arg), instance) for arg in [*result["command"], *result["args"]]]
    assert received == ["run", f"--tag={tricky}", "--shard=a", "$(matrix.shard)"]
    env = {entry["name"]: entry.get("value") for entry in result["env"]}
    # Only the variable whose author-written value holds a matrix reference goes through the launcher.
    assert launcher_env_names(result) == ["SHARD_TAG"]
    assert launcher(kubelet(env["SHARD_TAG"]), instance) == f"a:{tricky}"
    assert kubelet(env["TAG"]) == tricky, "a variable the launcher leaves alone is not escaped for it"
    assert result["env"][2] == container["env"][2]
    # Works that are not launched keep Kubernetes' escape only.
    assert kubelet(substitute_container(container, values)["command"][1]) == f"--tag={tricky}"


def test_a_value_linux_cannot_pass_as_one_argument_is_refused_naming_the_reference_and_its_size() -> None:
    fits = "x" * (MAX_ARGUMENT_BYTES - len("--data=") - 1)
    edge = "x" * (MAX_ARGUMENT_BYTES - len("DATA="))
    values = Values(run=1, flow="f", work="w", params={"data": fits, "big": fits + "é", "edge": edge})
    assert substitute_container({"args": ["--data=$(params.data)"]}, values)["args"] == [f"--data={fits}"]
    with pytest.raises(BadReference) as raised:
        substitute_container({"args": ["run", "--data=$(params.big)"]}, values)
    assert str(raised.value).startswith(
        f"args[1]: $(params.big) is {len(fits) + 2:,} bytes, which makes the argument 131,074 bytes"
    )
    assert "at most 131,072 bytes" in str(raised.value)
    # An env value is passed as NAME=value: its name counts.
    assert substitute_container({"args": ["$(params.edge)"]}, values)["args"] == [edge]
    with pytest.raises(BadReference, match=r"env\[DATA\]: \$\(params.edge\) is .* environment string"):
        substitute_container({"env": [{"name": "DATA", "value": "$(params.edge)"}]}, values)
    # Kubernetes' escapes count as what they become; a big literal text with no reference is not ours.
    escaped = "$$" * (MAX_ARGUMENT_BYTES // 2 - 10)
    assert substitute_container({"command": [escaped + "$(run)"]}, values)["command"] == [escaped + "1"]


def test_a_launched_output_list_too_long_for_one_argument_is_refused_too() -> None:
    scores = [0.123456789] * 12_000
    values = Values(run=1, flow="f", work="pick", outputs={"train": {"score": scores}})
    with pytest.raises(BadReference, match=r"\$\(works.train.outputs.score\) is 144,001 bytes"):
        substitute_container({"args": ["--scores", "$(works.train.outputs.score)"]}, values, launched=True)
