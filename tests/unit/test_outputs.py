"""A work's outputs, read from its termination message."""

from __future__ import annotations

import json

import pytest

from dagflow.outputs import MAX_OUTPUTS_BYTES, OutputsError, parse_outputs


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
