"""A TCP relay between an operator and the API server that a test can make hang or vanish.

The operator's kubeconfig points at the relay; the test itself keeps talking to the API server
directly. TLS passes through untouched (the relay listens on the API server's own loopback address,
which its certificate names).
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from pathlib import Path
from urllib.parse import urlsplit

import yaml

CHUNK = 65536


class ApiProxy:
    """Relays every connection to `upstream` (host, port). Modes, switched at any time:

    - relaying (the start);
    - `hang_requests()`: nothing more reaches the API server, while what it already sends (open
      watches) still reaches the operator: every new call hangs, as with an API server that
      stopped answering;
    - `resume()`: relaying again, what was held back included;
    - `close()`: the listener and every connection closed: the API server is gone.
    """

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self._listener = socket.create_server((upstream[0], 0))
        self.port = int(self._listener.getsockname()[1])
        self._requests_flow = threading.Event()
        self._requests_flow.set()
        self._closed = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, name="api-proxy", daemon=True).start()

    @classmethod
    def for_kubeconfig(cls, kubeconfig: Path, path: Path) -> ApiProxy:
        """A relay to the API server of `kubeconfig`, and a copy of it at `path` that goes through it."""
        config = yaml.safe_load(kubeconfig.read_text())
        server = urlsplit(config["clusters"][0]["cluster"]["server"])
        assert server.hostname and server.port, server
        proxy = cls((server.hostname, server.port))
        for cluster in config["clusters"]:
            cluster["cluster"]["server"] = f"https://{server.hostname}:{proxy.port}"
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return proxy

    def hang_requests(self) -> None:
        self._requests_flow.clear()

    def resume(self) -> None:
        self._requests_flow.set()

    def close(self) -> None:
        self._closed.set()
        self._requests_flow.set()
        with self._lock:
            for sock in [self._listener, *self._sockets]:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                continue
            server.settimeout(None)
            with self._lock:
                if self._closed.is_set():
                    client.close()
                    server.close()
                    return
                self._sockets += [client, server]
            threading.Thread(target=self._pipe, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, False), daemon=True).start()

    def _pipe(self, source: socket.socket, target: socket.socket, is_request: bool) -> None:
        try:
            while not self._closed.is_set():
                if is_request and not self._requests_flow.is_set():
                    self._requests_flow.wait(0.2)
                    continue
                readable, _, _ = select.select([source], [], [], 0.2)
                if not readable:
                    continue
                data = source.recv(CHUNK)
                if not data:
                    break
                if is_request and not self._requests_flow.is_set():
                    self._requests_flow.wait()  # held back until resumed (or closed)
                    if self._closed.is_set():
                        break
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
