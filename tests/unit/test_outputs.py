"""A work's outputs, read from its termination message."""

from __future__ import annotations

import json

import pytest

from dagflow.rules.outputs import MAX_OUTPUTS_BYTES, OutputsError, gather_outputs, parse_outputs


def test_the_declared_keys_are_kept_and_the_rest_left_out() -> None:
    message = json.dumps({"score": 0.93, "model": "/models/forest.pkl", "debug": "x" * 5000})
    assert parse_outputs(message, ["score", "model"]) == {"score": 0.93, "model": "/models/forest.pkl"}


def test_values_keep_their_json_types() -> None:
    message = '{"shards": ["a", "b"], "rows": 12, "ok": true, "meta": {"k": null}}'
    assert parse_outputs(message, ["shards", "rows", "ok", "meta"]) == {
        "shards": ["a", "b"],
        "rows": 12,
        "ok": True,
        "meta": {"k": None},
    }


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ("", "termination message is empty"),
        ("   \n", "termination message is empty"),
        (None, "termination message is empty"),
        ("score=0.9", "not JSON"),
        ('{"score": 0.9', "not JSON"),
        ("[1, 2]", "must be a JSON object, not list"),
        ('"text"', "must be a JSON object, not str"),
        ('{"model": "m"}', "did not report the declared output.* score"),
    ],
)
def test_bad_outputs_say_why(message: str | None, reason: str) -> None:
    with pytest.raises(OutputsError, match=reason):
        parse_outputs(message, ["score"])


def test_outputs_above_the_limit_are_refused_with_their_size() -> None:
    big = {"score": "x" * MAX_OUTPUTS_BYTES}
    with pytest.raises(OutputsError, match=r"are 1036 bytes, above the limit of 1024 bytes"):
        parse_outputs(json.dumps(big), ["score"])
    exactly = {"score": "x" * (MAX_OUTPUTS_BYTES - len('{"score":""}'))}
    assert parse_outputs(json.dumps(exactly), ["score"]) == exactly


def test_a_message_cut_by_the_kubelet_says_so() -> None:
    cut = json.dumps({"score": "x" * 5000})[:4096]
    with pytest.raises(OutputsError, match="kubelet keeps only 4096 bytes"):
        parse_outputs(cut, ["score"])


def test_the_outputs_of_a_matrix_works_instances_are_lists_in_index_order() -> None:
    messages = {1: '{"score": 0.7}', 0: '{"score": 0.9, "x": 1}', 2: '{"score": 0.8}'}
    assert gather_outputs(messages, 3, ["score"]) == {"score": [0.9, 0.7, 0.8]}


def test_a_matrix_instance_without_good_outputs_is_named() -> None:
    with pytest.raises(OutputsError, match="the pod of instance 1 is gone"):
        gather_outputs({0: '{"score": 1}'}, 2, ["score"])
    with pytest.raises(OutputsError, match="instance 1: its outputs are not JSON"):
        gather_outputs({0: '{"score": 1}', 1: "oops"}, 2, ["score"])


def test_matrix_outputs_too_big_for_a_config_map_are_refused() -> None:
    messages = {index: json.dumps({"blob": "x" * 1000}) for index in range(1100)}
    with pytest.raises(OutputsError, match="more than the 1024000 bytes of the ConfigMap"):
        gather_outputs(messages, 1100, ["blob"])


def test_output_sizes_count_utf8_bytes_as_documented() -> None:
    # "é" is 2 bytes in UTF-8 (6 as a \u escape): 510 of them plus the JSON around fit in 1,024 bytes.
    fits = {"v": "é" * 508}
    assert parse_outputs(json.dumps(fits, ensure_ascii=False), ["v"]) == fits
    too_big = json.dumps({"v": "é" * 512}, ensure_ascii=False)
    with pytest.raises(OutputsError, match="1032 bytes"):
        parse_outputs(too_big, ["v"])


def test_an_output_whose_value_is_null_is_kept() -> None:
    assert parse_outputs('{"best": null, "n": 1}', ["best", "n"]) == {"best": None, "n": 1}
