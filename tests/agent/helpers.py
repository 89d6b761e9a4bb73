"""Helpers for the agent tests: objects, waits, a cuttable TCP proxy."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hafence.kube import Api

SLEEP = "/bin/sleep"


def wait_for(pred: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def make_host(api: Api, namespace: str, name: str, **spec: Any) -> dict[str, Any]:
    body = {
        "metadata": {"name": name},
        "spec": {
            "address": "127.0.0.1",
            "cluster": "lab",
            "capacity": {"cpu": 8, "memoryMiB": 8192},
            **spec,
        },
    }
    return api.create("Host", namespace, body)


def make_vm(
    api: Api,
    namespace: str,
    name: str,
    command: list[str] | None = None,
    host: str | None = None,
    epoch: int = 1,
    run_strategy: str = "Always",
    libvirt: tuple[str, str] | None = None,  # (uri, domainXML) instead of a command
) -> None:
    runtime: dict[str, Any] = (
        {"driver": "libvirt", "libvirt": {"uri": libvirt[0], "domainXML": libvirt[1]}}
        if libvirt is not None
        else {"driver": "process", "process": {"command": command}}
    )
    api.create(
        "HAVirtualMachine",
        namespace,
        {
            "metadata": {"name": name},
            "spec": {
                "placement": {"cluster": "lab"},
                "runStrategy": run_strategy,
                "runtime": runtime,
            },
        },
    )
    if host is not None:
        place(api, namespace, name, host, epoch)


def place(api: Api, namespace: str, name: str, host: str | None, epoch: int) -> None:
    api.patch(
        "HAVirtualMachine",
        namespace,
        name,
        {"status": {"host": host, "placementEpoch": epoch, "phase": "Scheduled"}},
        status=True,
    )


def runtime(api: Api, namespace: str, name: str) -> dict[str, Any]:
    obj = api.get("HAVirtualMachine", namespace, name)
    out: dict[str, Any] = (obj.get("status") or {}).get("runtime") or {}
    return out


class TcpProxy:
    """A loopback TCP relay the test can cut: closing it drops every connection and
    refuses new ones, as a network partition between agent and API server would."""

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False
        self.latency = 0.0  # seconds added to every request (client -> server data)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)  # idle watches are not dead connections
            with self._lock:
                if self._closed:
                    client.close()
                    upstream.close()
                    return
                self._conns += [client, upstream]
            for a, b, slow in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(target=self._pipe, args=(a, b, slow), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, slow: bool) -> None:
        try:
            while data := src.recv(65536):
                if slow and self.latency:
                    time.sleep(self.latency)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        """Drop every connection and refuse new ones (the listener goes away)."""
        self.close()

    def restore(self) -> None:
        """Listen again on the same port."""
        with self._lock:
            self._closed = False
        self.listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            conns, self._conns = self._conns, []
        self.listener.close()
        for s in conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()


def env_has(pid: int, marker: str) -> bool:
    try:
        return marker.encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False
