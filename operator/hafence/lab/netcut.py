"""A cuttable network path between one virtual host and the API server.

Each virtual host's agent gets a kubeconfig whose server is a :class:`Forwarder` on a
loopback port of its own, relaying TCP to the real API server.  ``cut()`` plays a
network partition of that host only: every open connection is torn down and new ones
are reset as soon as they are accepted, while the host's BMC (UDP, another port) keeps
answering, as an out-of-band management network would.  The listener stays open
while cut so the port is never taken by someone else before ``restore()``.

Threads, not asyncio: the lab's other parts (BMC farm, supervisor) are threaded, and a
forwarder must keep relaying while the lab's main thread waits or prints.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any, cast

import yaml

_CHUNK = 65536


class Forwarder:
    """``127.0.0.1:port`` → ``target``; ``cut()`` / ``restore()`` switch the path."""

    def __init__(self, target_host: str, target_port: int, name: str = "") -> None:
        self.name = name
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._cut = False
        self._closed = False
        self._flowing = threading.Event()  # cleared: bytes are held (a stalled path)
        self._flowing.set()
        self.latency = 0.0  # seconds added to every client -> server chunk (a slow path)
        self.connections_refused = 0
        self.connections_accepted = 0  # relayed connections (a driver's connection count)
        self._thread = threading.Thread(
            target=self._accept_loop, name=f"netcut-{name or self.port}", daemon=True
        )
        self._thread.start()

    @property
    def is_cut(self) -> bool:
        return self._cut

    def _accept_loop(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._cut:
                self.connections_refused += 1
                self._refuse(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _reset(client)
                continue
            upstream.settimeout(None)
            self.connections_accepted += 1
            with self._lock:
                if self._cut or self._closed:
                    _reset(client)
                    upstream.close()
                    continue
                self._conns.update((client, upstream))
            for src, dst, slow in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(target=self._pipe, args=(src, dst, slow), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, slow: bool) -> None:
        try:
            while data := src.recv(_CHUNK):
                self._flowing.wait()
                if slow and self.latency:
                    time.sleep(self.latency)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            # HTTP and TLS never half-close usefully: one side done ends the pair.
            with self._lock:
                self._conns.discard(src)
                self._conns.discard(dst)
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def cut(self) -> None:
        """Tear down every connection now and reset the new ones until ``restore()``."""
        with self._lock:
            self._cut = True
            conns, self._conns = self._conns, set()
        for s in conns:
            _reset(s)

    def _refuse(self, client: socket.socket) -> None:
        """How a connection accepted while cut is turned away (a firewall's reject)."""
        _reset(client)

    def stall(self) -> None:
        """Hold every byte, both ways, on every connection (new ones too) until
        ``restore()``: a path that silently stops delivering."""
        self._flowing.clear()

    def restore(self) -> None:
        self._cut = False
        self._flowing.set()

    def close(self) -> None:
        if self._closed:
            return
        self.cut()
        self._flowing.set()  # let held pipes see their sockets closed
        self._closed = True
        # close() alone does not wake a thread blocked in accept(); shutdown() does.
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._thread.join(timeout=2)

    def kubeconfig(self, admin_kubeconfig: Path, out: Path) -> Path:
        """A copy of ``admin_kubeconfig`` whose current cluster is reached through here."""
        cfg = yaml.safe_load(admin_kubeconfig.read_text())
        cluster = _current_cluster(cfg, admin_kubeconfig)
        host, _ = _split_server(str(cluster["server"]))
        cluster["server"] = f"https://127.0.0.1:{self.port}"
        if host not in ("127.0.0.1", "localhost"):
            # TLS still verifies the real server's certificate, under its real name.
            cluster.setdefault("tls-server-name", host)
        out.write_text(yaml.safe_dump(cfg))
        out.chmod(0o600)
        return out

    def __enter__(self) -> Forwarder:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _reset(sock: socket.socket) -> None:
    """Close with RST (SO_LINGER 0), as a firewall's reject would: no half-open wait.

    The shutdown of the reading side comes first: a pipe thread blocked in ``recv`` on
    this socket holds the kernel socket open past ``close()``, so an idle connection (a
    watch stream that only receives) would otherwise stay up, silent, after the cut."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RD)
    with contextlib.suppress(OSError):
        sock.close()


def _current_cluster(cfg: dict[str, Any], path: Path) -> dict[str, Any]:
    contexts = {c["name"]: c["context"] for c in cfg.get("contexts") or []}
    current = contexts.get(cfg.get("current-context", ""), {})
    clusters = {c["name"]: c["cluster"] for c in cfg.get("clusters") or []}
    cluster = clusters.get(current.get("cluster", "")) or next(iter(clusters.values()), None)
    if cluster is None:
        raise ValueError(f"kubeconfig {str(path)!r} has no cluster")
    return cast(dict[str, Any], cluster)


def _split_server(server: str) -> tuple[str, int]:
    hostport = server.split("://", 1)[-1].split("/", 1)[0]
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        return hostport.strip("[]"), 443
    return host.strip("[]"), int(port)


def server_of(kubeconfig: Path) -> tuple[str, int]:
    """(host, port) of the current cluster's server in a kubeconfig."""
    cfg = yaml.safe_load(kubeconfig.read_text())
    return _split_server(str(_current_cluster(cfg, kubeconfig)["server"]))
