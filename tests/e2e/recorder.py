"""Everything that happens to a namespace's flows, Jobs and pods, as watch events, for tests that
check a whole history (runs never going back, a Job never made twice, pods never overlapping)."""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from dagflow.api.models import GROUP, PLURAL, VERSION


@dataclass(frozen=True)
class Seen:
    at: float
    kind: str
    type: str
    body: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.body["metadata"]["name"])


class Recorder:
    """Watches DAGFlows, Jobs and pods of one namespace in background threads."""

    def __init__(self, namespace: str) -> None:
        api_client = config.new_client_from_config(config_file=os.environ.get("KUBECONFIG"))
        custom, batch, core = (
            client.CustomObjectsApi(api_client),
            client.BatchV1Api(api_client),
            client.CoreV1Api(api_client),
        )
        self.namespace = namespace
        self.events: list[Seen] = []
        self.relists = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._sources: dict[str, Callable[..., Any]] = {
            "DAGFlow": lambda **kw: custom.list_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, **kw
            ),
            "Job": lambda **kw: batch.list_namespaced_job(namespace, **kw),
            "Pod": lambda **kw: core.list_namespaced_pod(namespace, **kw),
        }
        self._threads = [
            threading.Thread(target=self._follow, args=(kind,), daemon=True, name=f"recorder-{kind}")
            for kind in self._sources
        ]
        self._ready = threading.Barrier(len(self._threads) + 1)

    def _follow(self, kind: str) -> None:
        source = self._sources[kind]
        version = self._list(kind)
        self._ready.wait()
        while not self._stopping.is_set():
            stream = watch.Watch()
            try:
                for event in stream.stream(
                    source, resource_version=version, timeout_seconds=2, _request_timeout=10
                ):
                    raw = event["raw_object"]
                    version = raw["metadata"]["resourceVersion"]
                    self._add(kind, event["type"], raw)
                    if self._stopping.is_set():
                        break
            except ApiException as error:
                if error.status == 410:
                    # The API server no longer has that version (it restarted, or compacted): list
                    # again. An object made and deleted in between is missed: `relists` tells.
                    version = self._relist(kind)
                time.sleep(0.2)
            except Exception:  # a dropped watch: pick up from the last version seen
                time.sleep(0.2)

    def _list(self, kind: str) -> str:
        listing = self._sources[kind](_preload_content=False)
        found = json.loads(listing.data)
        for item in found["items"]:
            self._add(kind, "ADDED", item)
        return str(found["metadata"]["resourceVersion"])

    def _relist(self, kind: str) -> str:
        while True:
            try:
                version = self._list(kind)
            except Exception:
                if self._stopping.wait(0.5):
                    return ""
                continue
            with self._lock:
                self.relists += 1
            return version

    def _add(self, kind: str, event_type: str, body: dict[str, Any]) -> None:
        with self._lock:
            self.events.append(Seen(time.monotonic(), kind, event_type, body))

    def start(self) -> None:
        for thread in self._threads:
            thread.start()
        self._ready.wait(timeout=30)

    def stop(self) -> None:
        self._stopping.set()
        for thread in self._threads:
            thread.join(timeout=15)

    def of(self, kind: str) -> list[Seen]:
        with self._lock:
            return [seen for seen in self.events if seen.kind == kind]

    def flow_statuses(self, name: str) -> list[dict[str, Any]]:
        """The flow's status in every version seen, oldest first."""
        return [seen.body.get("status") or {} for seen in self.of("DAGFlow") if seen.name == name]

    def jobs_added(self) -> list[str]:
        """The name of every Job each time one was made (a Job made twice shows twice)."""
        uids: dict[str, str] = {}
        for seen in self.of("Job"):
            uids.setdefault(seen.body["metadata"]["uid"], seen.name)
        return list(uids.values())

    def jobs_made(self) -> Counter[tuple[str, str, int]]:
        """How many Jobs were ever made per (flow, work, run), counted by uid: a Job deleted and made
        again counts twice."""
        made: dict[str, tuple[str, str, int]] = {}
        for seen in self.of("Job"):
            metadata = seen.body["metadata"]
            annotations = metadata.get("annotations") or {}
            made[metadata["uid"]] = (
                annotations.get("dagflow.dev/flow-name", ""),
                annotations.get("dagflow.dev/work-name", ""),
                int((metadata.get("labels") or {}).get("dagflow.dev/run", 0)),
            )
        return Counter(made.values())

    def pod_lifetimes(self) -> dict[str, tuple[float, float | None, dict[str, Any]]]:
        """Per pod uid: when it was first seen, when it stopped running (finished or deleted; None:
        still running) and its last body."""
        lives: dict[str, tuple[float, float | None, dict[str, Any]]] = {}
        for seen in self.of("Pod"):
            uid = seen.body["metadata"]["uid"]
            first, ended, _ = lives.get(uid, (seen.at, None, seen.body))
            phase = (seen.body.get("status") or {}).get("phase")
            if ended is None and (seen.type == "DELETED" or phase in ("Succeeded", "Failed")):
                ended = seen.at
            lives[uid] = (first, ended, seen.body)
        return lives


@contextmanager
def recording(namespace: str) -> Iterator[Recorder]:
    recorder = Recorder(namespace)
    recorder.start()
    try:
        yield recorder
    finally:
        recorder.stop()
