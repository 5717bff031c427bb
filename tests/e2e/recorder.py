"""Everything that happens to a namespace's flows, Jobs and pods, as watch events, for tests that
check a whole history (runs never going back, a Job never made twice, pods never overlapping)."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from kubernetes import client, config, watch

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
        listing = source(_preload_content=False)
        initial = json.loads(listing.data)
        version = initial["metadata"]["resourceVersion"]
        for item in initial["items"]:
            self._add(kind, "ADDED", item)
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
            except Exception:  # a dropped watch: pick up from the last version seen
                time.sleep(0.2)

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
