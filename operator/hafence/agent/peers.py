"""The peer check: before self-fencing on API loss, ask the other hosts' agents.

Like medik8s Self Node Remediation: an agent whose lease renewals fail asks every peer
agent of its cluster whether *it* reaches the API server.

=========================================  ===============================================
peers' answers (during the check window)   the asking agent
=========================================  ===============================================
any peer renews its lease (fresh)          the API server is up, this host is cut off:
                                           stop feeding, kill the VMs (at the deadline)
a strict majority of ALL its peers lost    API-server outage: keep the VMs, keep feeding
the API server (none fresh)                for one renewal interval, then ask again
fewer answers than that (no peer answers,  isolated, or undecidable: the deadline stands,
only some lost, some unsure)               stop feeding and kill the VMs
no peers at all (one-host cluster)         same: nobody can vouch for an outage
=========================================  ===============================================

"Lost" is judged by each peer on its own clock: its last successful renewal started at
least :func:`~hafence.api.lease.lost_after` ago, by when the operator has seen that
peer's lease expire too; between lease expiry and that it answers "unsure".  That is
what lets the operator bound this mode: it counts a host as self-fenced only while at
least half of the host's cluster peers have been renewing without a gap
(core/triggers.py ``self_fence_proven``), so no majority of "lost" answers can have
kept the device fed.

Trust: a forged "lost" answer would keep a cut-off host's VMs running while the
operator restarts them elsewhere, so answers are authenticated.  Every agent of a
namespace holds one shared token (a Secret the installer copies to each host as a
file, ``--peer-token-file``); it never crosses the wire.  The asker sends a fresh
nonce with ``HMAC-SHA256(token, "ask\\n" + asker + "\\n" + nonce)``; the peer answers
only a valid ask, and signs its answer, nonce included, with
``HMAC-SHA256(token, "answer\\n" + body)``, so an answer can be neither forged nor
replayed.  The channel is plain HTTP: nothing in it is secret.  Anyone holding the
token (any host of the namespace) can lie; a host that is compromised can do worse
already (docs/agent.md, trust limits).
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

from hafence.api.lease import lost_after, validate_peer_endpoint

log = logging.getLogger("hafence.agent.peers")

PATH = "/v1/api-server"
State = Literal["fresh", "lost", "unsure"]
_NONCE = re.compile(r"^[0-9a-f]{32}$")
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


def read_token(path: Path) -> bytes:
    try:
        token = path.read_bytes().strip()
    except OSError as exc:
        raise OSError(f"--peer-token-file {str(path)!r}: {exc.strerror}") from None
    if len(token) < 16:
        raise ValueError(
            f"--peer-token-file {str(path)!r}: the token must be at least 16 bytes "
            "(for example `openssl rand -hex 32`)"
        )
    return token


def _mac(token: bytes, *parts: str) -> str:
    return hmac.new(token, "\n".join(parts).encode(), hashlib.sha256).hexdigest()


def own_state(age: float | None, lease_duration: float) -> State:
    """This agent's answer from the age of its last successful renewal (start)."""
    if age is not None and age < lease_duration:
        return "fresh"
    if age is None or age >= lost_after(lease_duration):
        return "lost"
    return "unsure"


@dataclass(frozen=True)
class Peer:
    host: str
    endpoint: str


@dataclass(frozen=True)
class Answer:
    host: str
    state: State | None  # None: no (valid) answer
    detail: str = ""


@dataclass(frozen=True)
class Verdict:
    outage: bool  # True: API-server outage confirmed, keep feeding
    reason: str


def decide(answers: Sequence[Answer], peers: int) -> Verdict:
    """The decision table above, from the answers of ``peers`` peers (pure)."""
    fresh = [a.host for a in answers if a.state == "fresh"]
    lost = [a.host for a in answers if a.state == "lost"]
    silent = peers - sum(1 for a in answers if a.state is not None)
    if fresh:
        return Verdict(False, f"peers {', '.join(sorted(fresh))} reach the API server")
    if peers and 2 * len(lost) > peers:
        return Verdict(True, f"{len(lost)}/{peers} peers lost the API server too: an outage")
    if peers == 0:
        return Verdict(False, "no peers to ask")
    return Verdict(
        False,
        f"only {len(lost)}/{peers} peers confirm an API-server outage ({silent} did not answer)",
    )


# -- the endpoint ---------------------------------------------------------------------


class PeerServer:
    """Answers other agents: "do you reach the API server?" (signed)."""

    def __init__(
        self,
        host: str,
        token: bytes,
        bind: tuple[str, int],
        state: Callable[[], State],
    ) -> None:
        self.host = host
        self._token = token
        self._state = state
        self.asked = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server._handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._http = ThreadingHTTPServer(bind, Handler)
        self._http.daemon_threads = True
        self.port = int(self._http.server_address[1])
        self._thread = threading.Thread(
            target=self._http.serve_forever, name="peer-endpoint", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._http.shutdown()
        self._http.server_close()

    def _handle(self, req: BaseHTTPRequestHandler) -> None:
        url = urlsplit(req.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        nonce, asker = query.get("nonce", ""), query.get("from", "")
        auth = req.headers.get("X-Hafence-Auth", "")
        if url.path != PATH or not _NONCE.match(nonce) or not _NAME.match(asker):
            req.send_error(400, "expected GET /v1/api-server?from=HOST&nonce=32 hex digits")
            return
        if not hmac.compare_digest(auth, _mac(self._token, "ask", asker, nonce)):
            req.send_error(403, "bad X-Hafence-Auth")
            return
        self.asked += 1
        body = json.dumps(
            {"host": self.host, "nonce": nonce, "state": self._state()}, sort_keys=True
        ).encode()
        req.send_response(200)
        req.send_header("Content-Type", "application/json")
        req.send_header("Content-Length", str(len(body)))
        req.send_header("X-Hafence-Signature", _mac(self._token, "answer", body.decode()))
        req.end_headers()
        req.wfile.write(body)


# -- asking -----------------------------------------------------------------------------


def ask(me: str, peer: Peer, token: bytes, timeout: float) -> Answer:
    nonce = secrets.token_hex(16)
    hostname, _, port = validate_peer_endpoint(peer.endpoint).rpartition(":")
    conn = http.client.HTTPConnection(hostname.strip("[]"), int(port), timeout=timeout)
    try:
        conn.request(
            "GET",
            f"{PATH}?from={me}&nonce={nonce}",
            headers={"X-Hafence-Auth": _mac(token, "ask", me, nonce)},
        )
        resp = conn.getresponse()
        body = resp.read(4096)
        signature = resp.getheader("X-Hafence-Signature") or ""
    except (OSError, http.client.HTTPException) as exc:
        return Answer(peer.host, None, f"no answer: {exc}")
    finally:
        conn.close()
    if resp.status != 200:
        return Answer(peer.host, None, f"HTTP {resp.status}")
    if not hmac.compare_digest(signature, _mac(token, "answer", body.decode(errors="replace"))):
        return Answer(peer.host, None, "answer signature invalid: ignored")
    try:
        data = json.loads(body)
    except ValueError:
        return Answer(peer.host, None, "answer is not JSON")
    state = data.get("state")
    if data.get("nonce") != nonce or data.get("host") != peer.host:
        return Answer(peer.host, None, "answer for another ask or host: ignored")
    if state not in ("fresh", "lost", "unsure"):
        return Answer(peer.host, None, f"unknown state {state!r}")
    return Answer(peer.host, state)


def ask_all(me: str, peers: Sequence[Peer], token: bytes, timeout: float) -> list[Answer]:
    if not peers:
        return []
    with ThreadPoolExecutor(max_workers=min(16, len(peers))) as pool:
        return list(pool.map(lambda p: ask(me, p, token, timeout), peers))


class PeerChecker:
    """While the lease is in danger, ask the peers every ``interval`` seconds and, on a
    confirmed outage, let the watchdog be fed for one more ``validity``."""

    def __init__(
        self,
        me: str,
        token: bytes,
        *,
        peers: Callable[[], list[Peer]],
        last_renewal: Callable[[], float | None],
        enabled: Callable[[], bool],
        confirm: Callable[[float], None],
        in_danger_after: float,
        validity: float,
        interval: float = 0.3,
        timeout: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.me = me
        self._token = token
        self._peers = peers
        self._last_renewal = last_renewal
        self._enabled = enabled
        self._confirm = confirm
        self._danger = in_danger_after
        self._validity = validity
        self._interval = interval
        self._timeout = timeout
        self._clock = clock
        self._stop = threading.Event()
        self._last: Verdict | None = None
        self.checks = 0
        self._thread = threading.Thread(target=self._run, name="peer-check", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            last = self._last_renewal()
            started = self._clock()
            if not self._enabled() or last is None or started - last < self._danger:
                self._last = None
                continue
            self.check_once(started)

    def check_once(self, started: float) -> Verdict:
        peers = self._peers()
        answers = ask_all(self.me, peers, self._token, self._timeout)
        verdict = decide(answers, len(peers))
        self.checks += 1
        if verdict.outage:
            # Valid from when we started asking: the answers are no older than that.
            self._confirm(started + self._validity)
        if verdict != self._last:
            silent = "; ".join(f"{a.host}: {a.detail}" for a in answers if a.state is None)
            log.warning("peer check: %s%s", verdict.reason, f" ({silent})" if silent else "")
            self._last = verdict
        return verdict
