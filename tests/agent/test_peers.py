"""The peer check: the decision table, and the signed endpoint over real loopback HTTP."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from hafence.agent.peers import (
    Answer,
    Peer,
    PeerServer,
    State,
    ask,
    ask_all,
    decide,
    own_state,
)
from hafence.api.lease import lost_after

TOKEN = b"0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize(
    ("states", "peers", "outage"),
    [
        (["lost", "lost", "lost"], 3, True),  # API-server outage: keep the VMs
        (["lost", "lost", None], 3, True),  # a strict majority of ALL peers
        (["lost", None, None], 3, False),  # too few: isolated or undecidable
        (["lost", "lost", "fresh"], 3, False),  # someone reaches it: we are cut off
        (["lost", "unsure", "unsure"], 3, False),
        ([None, None, None], 3, False),  # nobody answers: isolated (medik8s reboots too)
        (["lost"], 1, True),  # two-host cluster: the other host lost it too
        (["lost", "lost"], 4, False),  # half is not a majority
        ([], 0, False),  # nobody can vouch for an outage
    ],
)
def test_decision_table(states: list[State | None], peers: int, outage: bool) -> None:
    answers = [Answer(f"h{i}", s) for i, s in enumerate(states)]
    assert decide(answers, peers).outage is outage


def test_own_state_lost_only_after_the_operator_saw_the_lease_expire() -> None:
    assert own_state(2.9, 3) == "fresh"
    assert own_state(3.0, 3) == "unsure"
    assert own_state(lost_after(3) - 0.01, 3) == "unsure"
    assert own_state(lost_after(3), 3) == "lost"
    assert own_state(None, 3) == "lost"


@pytest.fixture
def server() -> Iterator[tuple[PeerServer, list[State]]]:
    state: list[State] = ["lost"]
    srv = PeerServer("hv-2", TOKEN, ("127.0.0.1", 0), lambda: state[0])
    srv.start()
    yield srv, state
    srv.close()


def test_signed_round_trip(server: tuple[PeerServer, list[State]]) -> None:
    srv, state = server
    peer = Peer("hv-2", f"127.0.0.1:{srv.port}")
    assert ask("hv-1", peer, TOKEN, 2).state == "lost"
    state[0] = "fresh"
    assert ask_all("hv-1", [peer], TOKEN, 2) == [Answer("hv-2", "fresh")]


def test_wrong_token_gets_no_answer_and_forged_answers_are_ignored(
    server: tuple[PeerServer, list[State]],
) -> None:
    srv, _ = server
    peer = Peer("hv-2", f"127.0.0.1:{srv.port}")
    refused = ask("hv-1", peer, b"another-token-of-16+bytes", 2)
    assert refused.state is None and "403" in refused.detail
    # An answer not signed with the token (a forger's "I lost it too") never counts.
    forger = ThreadingHTTPServer(("127.0.0.1", 0), _Forger)
    threading.Thread(target=forger.serve_forever, daemon=True).start()
    try:
        forged = ask("hv-1", Peer("hv-2", f"127.0.0.1:{forger.server_address[1]}"), TOKEN, 2)
    finally:
        forger.shutdown()
        forger.server_close()
    assert forged.state is None and "signature invalid" in forged.detail
    assert srv.asked == 0


class _Forger(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        nonce = parse_qs(urlsplit(self.path).query)["nonce"][0]
        body = json.dumps({"host": "hv-2", "nonce": nonce, "state": "lost"}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Hafence-Signature", "0" * 64)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return


def test_wrong_host_or_silent_peer_is_no_answer(server: tuple[PeerServer, list[State]]) -> None:
    srv, _ = server
    impostor = ask("hv-1", Peer("hv-3", f"127.0.0.1:{srv.port}"), TOKEN, 2)
    assert impostor.state is None and "another" in impostor.detail
    silent = ask("hv-1", Peer("hv-4", "127.0.0.1:1"), TOKEN, 0.5)
    assert silent.state is None and "no answer" in silent.detail
