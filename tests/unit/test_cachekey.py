"""Cache keys: one test per part of the key, the Merkle chain, and what is left out."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from dagflow.api.models import DAGFlowSpec
from dagflow.rules.cachekey import (
    KEY_CHARS,
    MatrixKeys,
    cache_key,
    explain_miss,
    instance_outputs,
    is_digest,
    match_instances,
    matrix_work_keys,
    run_unique_key,
    work_cache_key,
)
from dagflow.rules.substitution import Values

BASE: dict[str, Any] = {
    "image": "example/ml:1.0",
    "command": ["python", "-m", "train"],
    "args": ["--lr", "0.1"],
    "env": [{"name": "MODE", "value": "fast"}],
    "volumeMounts": [{"name": "data", "mountPath": "/data"}],
}
VOLUMES = [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]


def key_of(
    container: dict[str, Any] | None = None,
    volumes: list[dict[str, Any]] | None = None,
    outputs: tuple[str, ...] = ("model",),
    version: str = "",
    upstream: dict[str, str] | None = None,
    matrix: list[dict[str, Any]] | None = None,
) -> tuple[str, list[str]]:
    """The key of BASE with the changes given, and how it differs from BASE's key in words."""
    base = cache_key(BASE, VOLUMES, ["model"], "", {"process": "k1"})
    changed = cache_key(
        {**BASE, **(container or {})},
        VOLUMES if volumes is None else volumes,
        list(outputs),
        version,
        {"process": "k1"} if upstream is None else upstream,
        matrix,
    )
    return changed.value, explain_miss(changed.parts, base.short_parts())


def test_the_same_inputs_give_the_same_key() -> None:
    again = cache_key(dict(BASE), list(VOLUMES), ["model"], "", {})
    assert cache_key(BASE, VOLUMES, ["model"], "", {}) == again
    assert key_of() == (cache_key(BASE, VOLUMES, ["model"], "", {"process": "k1"}).value, [])


def test_image() -> None:
    assert key_of({"image": "example/ml:1.1"})[1] == ["image changed"]


def test_image_digest() -> None:
    digest = "example/ml@sha256:" + "a" * 64
    other = "example/ml@sha256:" + "b" * 64
    assert key_of({"image": digest})[0] != key_of({"image": other})[0]
    assert is_digest(digest) and not is_digest("example/ml:1.0") and not is_digest("localhost:5000/ml")


def test_command() -> None:
    assert key_of({"command": ["python", "-m", "serve"]})[1] == ["command[2] changed"]


def test_args() -> None:
    assert key_of({"args": ["--lr", "0.2"]})[1] == ["args[1] changed"]
    assert key_of({"args": ["--lr", "0.1", "--fast"]})[1] == ["args[2] added"]


def test_env() -> None:
    assert key_of({"env": [{"name": "MODE", "value": "slow"}]})[1] == ["env[MODE] changed"]
    assert key_of({"env": []})[1] == ["env[MODE] removed"]


def test_env_from_and_working_dir() -> None:
    assert key_of({"envFrom": [{"configMapRef": {"name": "settings"}}]})[1] == ["envFrom added"]
    assert key_of({"workingDir": "/src"})[1] == ["workingDir added"]


def test_volume_mounts() -> None:
    assert key_of({"volumeMounts": [{"name": "data", "mountPath": "/input"}]})[1] == [
        "volumeMounts[/data] removed",
        "volumeMounts[/input] added",
    ]


def test_volumes() -> None:
    other = [{"name": "data", "persistentVolumeClaim": {"claimName": "data-v2"}}]
    assert key_of(volumes=other)[1] == ["volumes[data] changed"]


def test_declared_outputs() -> None:
    assert key_of(outputs=("model", "score"))[1] == ["outputs changed"]


def test_matrix_values() -> None:
    first = key_of(matrix=[{"model": "a"}, {"model": "b"}])
    assert first[1] == ["matrix added"]
    assert first[0] != key_of(matrix=[{"model": "a"}, {"model": "c"}])[0]


def test_version() -> None:
    assert key_of(version="2")[1] == ["version changed"]


def test_upstream_keys() -> None:
    assert key_of(upstream={"process": "k2"})[1] == ["upstream process re-ran"]


def test_where_it_runs_is_not_in_the_key() -> None:
    placed = {"resources": {"limits": {"nvidia.com/gpu": "1", "memory": "1Gi"}}}
    assert key_of(placed) == key_of()


def test_label_is_a_label_value() -> None:
    key = cache_key(BASE, VOLUMES, [], "", {})
    assert len(key.label) == KEY_CHARS <= 63 and key.value == key.label


def _chain(args_of_first: str, cached_middle: bool = True) -> list[str]:
    """Keys of a chain a -> b -> c where only a's args vary; b not cached: a key unique to its run."""
    spec = DAGFlowSpec.model_validate(
        {
            "works": [
                {"name": "a", "container": {"image": "x", "args": [args_of_first]}},
                {"name": "b", "dependsOn": ["a"], "container": {"image": "x"}},
                {"name": "c", "dependsOn": ["b"], "container": {"image": "x"}},
            ]
        }
    )
    keys: dict[str, str] = {}
    for work in spec.works:
        values = Values(run=1, flow="f", work=work.name)
        upstream = {dep: keys[dep] for dep in work.depends_on}
        keys[work.name] = work_cache_key(spec, work, values, upstream).value
        if work.name == "b" and not cached_middle:
            keys[work.name] = run_unique_key("uid", 1, "b")
    return [keys["a"], keys["b"], keys["c"]]


def test_a_change_upstream_reaches_every_work_downstream() -> None:
    before, after = _chain("one"), _chain("two")
    assert all(old != new for old, new in zip(before, after, strict=True))
    assert _chain("one") == before


def test_a_work_that_is_not_cached_makes_everything_downstream_miss() -> None:
    assert _chain("one", cached_middle=False)[2] != _chain("one")[2]
    assert run_unique_key("uid", 1, "b") != run_unique_key("uid", 2, "b")
    assert run_unique_key("uid", 1, "b") != run_unique_key("other", 1, "b")


def test_parameters_and_pod_defaults_env_are_keyed_after_substitution() -> None:
    spec = DAGFlowSpec.model_validate(
        {
            "params": [{"name": "lr", "default": "0.1"}],
            "podDefaults": {"env": [{"name": "REGION", "value": "eu"}]},
            "works": [{"name": "a", "container": {"image": "x", "args": ["--lr", "$(params.lr)"]}}],
        }
    )
    work = spec.works[0]
    one = work_cache_key(spec, work, Values(run=1, flow="f", work="a", params={"lr": "0.1"}), {})
    again = work_cache_key(spec, work, Values(run=7, flow="f", work="a", params={"lr": "0.1"}), {})
    other = work_cache_key(spec, work, Values(run=1, flow="f", work="a", params={"lr": "0.2"}), {})
    assert one == again
    assert explain_miss(other.parts, one.short_parts()) == ["args[1] changed"]
    assert "env[REGION]" in one.parts


@pytest.mark.parametrize("part", ["image", "args[0]"])
def test_a_miss_names_each_changed_part_once(part: str) -> None:
    assert explain_miss({part: "1" * 64}, {part: "2" * 16}) == [f"{part} changed"]


def matrix_spec(values: list[str], image: str = "x") -> DAGFlowSpec:
    return DAGFlowSpec.model_validate(
        {
            "works": [
                {
                    "name": "grid",
                    "container": {"image": image, "command": ["train", "--model", "$(matrix.model)"]},
                    "matrix": {"model": values},
                }
            ]
        }
    )


def matrix_keys_of(values: list[str], image: str = "x", upstream: dict[str, str] | None = None) -> MatrixKeys:
    spec = matrix_spec(values, image)
    combinations = [{"model": value} for value in values]
    return matrix_work_keys(
        spec, spec.works[0], Values(run=1, flow="f", work="grid"), upstream or {}, combinations
    )


def test_each_instance_has_its_own_key_from_its_values() -> None:
    before = matrix_keys_of(["a", "b", "c"])
    after = matrix_keys_of(["a", "x", "c", "d"])
    # Same template: the instances whose values stayed keep their keys, wherever they are.
    assert before.template.value == after.template.value
    assert after.instances[0] == before.instances[0] and after.instances[2] == before.instances[2]
    assert after.instances[1] not in before.instances and after.instances[3] not in before.instances
    # The work's own key (its dependents') covers every instance's values.
    assert before.work.value != after.work.value
    assert len(set(before.instances)) == 3


def test_an_instance_key_changes_with_the_template() -> None:
    before = matrix_keys_of(["a", "b"])
    assert matrix_keys_of(["a", "b"], image="y").instances[0] != before.instances[0]
    assert matrix_keys_of(["a", "b"], upstream={"prepare": "k2"}).instances[0] != before.instances[0]


def test_instances_are_matched_to_the_newest_entry_holding_them_within_max_age() -> None:
    now = datetime(2030, 1, 2, tzinfo=UTC)
    keys = matrix_keys_of(["a", "b", "c"])
    old = {
        "spec": {
            "key": keys.template.value,
            "createdAt": "2030-01-01T00:00:00Z",
            "instanceKeys": keys.instances[:2],
            "outputs": {"score": [1, 2]},
        }
    }
    new = {
        "spec": {
            "key": keys.template.value,
            "createdAt": "2030-01-01T12:00:00Z",
            "instanceKeys": [keys.instances[1]],
            "outputs": {"score": [20]},
        }
    }
    other = {
        "spec": {"key": "other", "createdAt": "2030-01-01T12:00:00Z", "instanceKeys": [keys.instances[2]]}
    }
    found = match_instances([old, new, other], keys, now, 3 * 86400)
    assert sorted(found) == [0, 1]
    assert instance_outputs(found, ["score"]) == {"score": {0: 1, 1: 20}}
    # Past max age, the old entry holds nothing.
    assert sorted(match_instances([old, new], keys, now, 13 * 3600)) == [1]
