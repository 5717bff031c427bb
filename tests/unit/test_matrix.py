"""Matrix expansion: the combinations a matrix work runs, in a stable order."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dagflow.rules.matrix import MAX_INSTANCES, MatrixError, encode_values, expand, parse_matrix, static_size


def combos(raw: dict[str, Any], resolved: dict[str, Any] | None = None) -> list[dict[str, str]]:
    return expand(parse_matrix(raw), resolved)


def test_the_product_of_the_axes_in_the_order_of_their_names() -> None:
    assert combos({"model": ["linear", "forest", "gbr"], "lr": ["0.1", "0.01"]}) == [
        {"lr": "0.1", "model": "linear"},
        {"lr": "0.1", "model": "forest"},
        {"lr": "0.1", "model": "gbr"},
        {"lr": "0.01", "model": "linear"},
        {"lr": "0.01", "model": "forest"},
        {"lr": "0.01", "model": "gbr"},
    ]


def test_the_order_never_depends_on_the_order_of_the_keys() -> None:
    one = {"model": ["a", "b"], "lr": ["1", "2"], "exclude": [{"model": "a", "lr": "2"}]}
    other = {"exclude": [{"lr": "2", "model": "a"}], "lr": ["1", "2"], "model": ["a", "b"]}
    assert combos(one) == combos(other)
    assert encode_values(combos(one)) == encode_values(combos(other))


def test_numbers_and_booleans_are_taken_as_their_json_text() -> None:
    assert combos({"lr": [0.1, 1], "fast": [True]}) == [
        {"fast": "true", "lr": "0.1"},
        {"fast": "true", "lr": "1"},
    ]


def test_exclude_removes_every_combination_it_matches() -> None:
    assert combos({"a": ["1", "2"], "b": ["x", "y"], "exclude": [{"a": "1"}, {"a": "2", "b": "y"}]}) == [
        {"a": "2", "b": "x"}
    ]


def test_include_extends_matching_combinations_or_adds_its_own() -> None:
    raw = {
        "model": ["linear", "forest"],
        "include": [
            {"model": "forest", "depth": "3"},  # extends the forest combination
            {"gpu": "0"},  # matches every combination: added to each
            {"model": "gbr", "depth": "5"},  # matches none: a combination of its own
            {"model": "linear"},  # matches one and adds nothing
        ],
    }
    assert combos(raw) == [
        {"model": "linear", "gpu": "0"},
        {"model": "forest", "depth": "3", "gpu": "0"},
        {"model": "gbr", "depth": "5"},
    ]


def test_a_dynamic_axis_expands_over_the_list_it_references() -> None:
    matrix = parse_matrix({"shard": "$(works.split.outputs.shards)", "mode": ["fast"]})
    assert static_size(matrix) is None
    assert [ref.work for ref in matrix.dynamic.values()] == ["split"]
    assert expand(matrix, {"shard": ["s0", "s1", 7]}) == [
        {"mode": "fast", "shard": "s0"},
        {"mode": "fast", "shard": "s1"},
        {"mode": "fast", "shard": "7"},
    ]


@pytest.mark.parametrize(
    ("resolved", "reason"),
    [
        ({}, "has no value yet"),
        ({"shard": "s0,s1"}, "must be a list, not str"),
        ({"shard": []}, "is an empty list"),
    ],
)
def test_a_dynamic_axis_without_a_list_cannot_expand(resolved: dict[str, Any], reason: str) -> None:
    with pytest.raises(MatrixError, match=reason):
        combos({"shard": "$(works.split.outputs.shards)"}, resolved)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ({}, "at least one axis"),
        ({"model": []}, "at least one value"),
        ({"model": ["a", "a"]}, "listed twice"),
        ({"model": {"a": 1}}, "a list of values or a reference"),
        ({"model": [["a"]]}, "must be a string, a number or a boolean"),
        ({"model": "linear"}, "exactly one reference to a list output"),
        ({"model": "$(params.models)"}, "exactly one reference to a list output"),
        ({"1model": ["a"]}, "not a matrix key"),
        ({"model": ["a"], "exclude": [{"lr": "1"}]}, "lr is not an axis"),
        ({"model": ["a"], "include": ["a"]}, "an object of keys to values"),
        ({"model": ["a"], "exclude": [{"model": "a"}]}, "no combination left"),
    ],
)
def test_a_bad_matrix_says_why(raw: dict[str, Any], reason: str) -> None:
    with pytest.raises(MatrixError, match=reason):
        combos(raw)


def test_too_many_instances_are_refused() -> None:
    raw = {"a": [str(i) for i in range(200)], "b": [str(i) for i in range(101)]}
    with pytest.raises(
        MatrixError, match=f"20200 combinations; a matrix work may have at most {MAX_INSTANCES}"
    ):
        combos(raw)
    assert len(combos({"i": list(range(10_000))})) == 10_000


@given(
    st.dictionaries(
        st.from_regex(r"[a-z][a-z0-9_]{0,5}", fullmatch=True),
        st.lists(st.text(min_size=1, max_size=4), min_size=1, max_size=4, unique=True),
        min_size=1,
        max_size=3,
    )
)
def test_combinations_are_unique_complete_and_deterministic(axes: dict[str, list[str]]) -> None:
    expanded = combos(axes)
    expected = 1
    for values in axes.values():
        expected *= len(values)
    assert len(expanded) == expected
    assert len({encode_values([combination]) for combination in expanded}) == expected
    assert expanded == combos(dict(reversed(list(axes.items()))))


def test_a_key_only_an_include_entry_adds_is_an_empty_string_in_the_other_instances() -> None:
    # The example of docs/api.md: $(matrix.depth) in every instance, depth added by one include entry.
    documented = combos(
        {
            "model": ["linear", "forest", "gbr"],
            "lr": ["0.1", "0.01"],
            "exclude": [{"model": "linear", "lr": "0.01"}],
            "include": [{"model": "gbr", "lr": "0.1", "depth": "3"}],
        }
    )
    assert len(documented) == 5
    assert [c for c in documented if "depth" in c] == [{"lr": "0.1", "model": "gbr", "depth": "3"}]
    launched = json.loads(encode_values(documented))
    assert [instance["depth"] for instance in launched] == ["", "", "3", "", ""]
    assert [{k: v for k, v in instance.items() if k != "depth"} for instance in launched] == [
        {k: v for k, v in combination.items() if k != "depth"} for combination in documented
    ]


@pytest.mark.parametrize(
    ("listed", "named"),
    [
        (["a", "b", "a"], '"a"'),
        ([1, "1", 2], '"1"'),
        (["x", "y", "x", "y"], '"x", "y"'),
    ],
)
def test_a_dynamic_axis_with_a_value_listed_twice_cannot_expand_and_names_it(
    listed: list[Any], named: str
) -> None:
    with pytest.raises(MatrixError, match="more than once") as raised:
        combos({"shard": "$(works.split.outputs.shards)"}, {"shard": listed})
    assert f"lists {named} more than once" in str(raised.value)
    assert "matrix.shard: $(works.split.outputs.shards)" in str(raised.value)
