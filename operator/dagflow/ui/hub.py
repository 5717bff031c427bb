"""One watch of a namespace's flows, shared by every browser that shows the namespace.

The watch runs in a thread with the server's client (the kubernetes client is synchronous); each
change becomes one server-sent event, encoded once and handed to every subscriber's queue. A browser
never polls: it gets the namespace's flows when it subscribes, then every change as it happens.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dagflow.client.flowclient import ClusterError, FlowClient
from dagflow.ui.views import flow_update

log = logging.getLogger(__name__)
QUEUE_SIZE = 512
RETRY_SECONDS = 2.0


def sse(event: str, data: Any) -> str:
    """One server-sent event."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


@dataclass(eq=False)
class Subscriber:
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[str] = field(default_factory=lambda: asyncio.Queue(QUEUE_SIZE))
    lagging: bool = False


class NamespaceWatch:
    """The flows of one namespace as the watch last saw them, and the browsers that follow them."""

    def __init__(self, namespace: str, client: FlowClient) -> None:
        self.namespace = namespace
        self.client = client
        self.flows: dict[str, dict[str, Any]] = {}
        self.synced = threading.Event()
        self.error: str | None = None
        self.subscribers: set[Subscriber] = set()
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.watches_started = 0
        self.thread = threading.Thread(target=self._run, name=f"watch-{namespace}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopped.set()

    def snapshot(self) -> str:
        with self.lock:
            return sse("snapshot", {"flows": list(self.flows.values()), "error": self.error})

    def add(self, subscriber: Subscriber) -> None:
        with self.lock:
            self.subscribers.add(subscriber)

    def remove(self, subscriber: Subscriber) -> bool:
        """Forget a subscriber; True when none is left."""
        with self.lock:
            self.subscribers.discard(subscriber)
            return not self.subscribers

    def _run(self) -> None:
        while not self.stopped.is_set():
            try:
                flows, version = self.client.list_flows_with_version()
                self.watches_started += 1
                with self.lock:
                    self.flows = {flow["metadata"]["name"]: flow_update(flow) for flow in flows}
                    self.error = None
                self._publish(self.snapshot())
                self.synced.set()
                for kind, flow in self.client.flow_events(version, timeout_seconds=30):
                    if self.stopped.is_set():
                        return
                    self._changed(kind, flow)
            except ClusterError as error:
                log.warning("Watch of DAGFlows in namespace %s failed: %s", self.namespace, error)
                with self.lock:
                    self.error = str(error)
                self._publish(self.snapshot())
                self.synced.set()
                self.stopped.wait(RETRY_SECONDS)
            except Exception:  # a broken connection: watch again after a pause
                log.exception("Watch of DAGFlows in namespace %s broke", self.namespace)
                self.stopped.wait(RETRY_SECONDS)

    def _changed(self, kind: str, flow: dict[str, Any]) -> None:
        name = flow["metadata"]["name"]
        with self.lock:
            if kind == "DELETED":
                self.flows.pop(name, None)
                message = sse("deleted", {"name": name})
            else:
                update = flow_update(flow)
                if self.flows.get(name) == update:
                    return  # nothing the pages show changed
                self.flows[name] = update
                message = sse("flow", update)
        self._publish(message)

    def _publish(self, message: str) -> None:
        with self.lock:
            subscribers = list(self.subscribers)
        for subscriber in subscribers:
            subscriber.loop.call_soon_threadsafe(self._deliver, subscriber, message)

    def _deliver(self, subscriber: Subscriber, message: str) -> None:
        """On the subscriber's event loop: queue the message; a browser too slow to keep up gets the
        whole namespace again instead of a backlog."""
        if subscriber.lagging:
            return
        try:
            subscriber.queue.put_nowait(message)
        except asyncio.QueueFull:
            subscriber.lagging = True
            while not subscriber.queue.empty():
                subscriber.queue.get_nowait()
            subscriber.queue.put_nowait(self.snapshot())
            subscriber.lagging = False


class Hub:
    """The namespace watches of one server: started by a namespace's first browser, stopped when
    its last one leaves."""

    def __init__(self, client_for: Callable[[str], FlowClient]) -> None:
        self.client_for = client_for
        self.watches: dict[str, NamespaceWatch] = {}
        self.lock = threading.Lock()

    def subscribe(self, namespace: str) -> tuple[NamespaceWatch, Subscriber]:
        subscriber = Subscriber(asyncio.get_running_loop())
        with self.lock:
            watch = self.watches.get(namespace)
            if watch is None:
                watch = NamespaceWatch(namespace, self.client_for(namespace))
                self.watches[namespace] = watch
                watch.start()
            watch.add(subscriber)
        return watch, subscriber

    def unsubscribe(self, watch: NamespaceWatch, subscriber: Subscriber) -> None:
        with self.lock:
            if watch.remove(subscriber):
                self._idle(watch)

    def _idle(self, watch: NamespaceWatch) -> None:
        watch.stop()
        if self.watches.get(watch.namespace) is watch:
            del self.watches[watch.namespace]

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {
                namespace: {"subscribers": len(watch.subscribers), "watches": watch.watches_started}
                for namespace, watch in self.watches.items()
            }

    def stop(self) -> None:
        with self.lock:
            for watch in self.watches.values():
                watch.stop()
            self.watches.clear()
