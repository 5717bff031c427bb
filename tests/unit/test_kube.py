"""Whose an existing object is: the check behind every 409 and every serve object update."""

from __future__ import annotations

from typing import Any

import pytest

from dagflow.controller.kube import NameTakenError, check_owner

OURS = "11111111-uid"


def job(owner: dict[str, Any] | None = None, deleting: bool = False) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": "p-1-a"}
    if owner is not None:
        metadata["ownerReferences"] = [owner]
    if deleting:
        metadata["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"metadata": metadata}


def flow_owner(uid: str, name: str = "p", controller: bool = True) -> dict[str, Any]:
    return {
        "apiVersion": "dagflow.dev/v1alpha1",
        "kind": "DAGFlow",
        "name": name,
        "uid": uid,
        "controller": controller,
    }


def test_an_object_this_flow_controls_is_its_own() -> None:
    check_owner("Job", job(flow_owner(OURS)), OURS)


def test_an_object_of_a_flow_of_the_same_name_but_another_uid_is_not() -> None:
    with pytest.raises(NameTakenError) as raised:
        check_owner("Job", job(flow_owner("22222222-old")), OURS)
    error = raised.value
    assert (error.kind, error.name, error.owner_name, error.owner_uid, error.deleting) == (
        "Job",
        "p-1-a",
        "p",
        "22222222-old",
        False,
    )
    assert str(error) == "Job p-1-a already exists and belongs to DAGFlow p (uid 22222222-old)"


def test_an_object_of_no_flow_belongs_to_something_else() -> None:
    with pytest.raises(NameTakenError, match="belongs to something else") as raised:
        check_owner("Deployment", job(), OURS)
    assert raised.value.owner_uid is None


def test_a_reference_that_is_not_the_controller_does_not_make_it_ours() -> None:
    with pytest.raises(NameTakenError):
        check_owner("Job", job(flow_owner(OURS, controller=False)), OURS)


def test_an_object_being_deleted_says_so() -> None:
    with pytest.raises(NameTakenError) as raised:
        check_owner("Job", job(flow_owner("22222222-old"), deleting=True), OURS)
    assert raised.value.deleting
