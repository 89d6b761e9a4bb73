"""The scale bench's load generator sends what a real agent sends.

A real ``Agent`` (in this process, its client's requests recorded where they leave
for the API server) and a load-generator host run side by side against the real API
server, each with a Host and a VM placed on it.  Their requests are compared as
signatures: verb, path (names replaced), the query keys that change what the API
server does, content type, and the body's fields (label and annotation names,
spec fields, the runtime report's fields).  Neither may send a request the other
does not.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from hafence.agent.process import ProcessDriver, kill_all
from hafence.agent.service import Agent, AgentConfig
from hafence.agent.state import StateDir
from hafence.kube import Api, load_api
from hafence.lab.loadgen import Request, SimHost, Wire

from ..agent.helpers import SLEEP, make_host, make_vm

# Query keys that change what the API server does (an empty labelSelector does not).
QUERY_KEYS = (
    "fieldSelector",
    "labelSelector",
    "watch",
    "limit",
    "resourceVersion",
    "timeoutSeconds",
)


def signature(req: Request, names: dict[str, str]) -> str:
    path = req.path
    for name, placeholder in names.items():
        path = re.sub(rf"/{re.escape(name)}(/|$)", rf"/{placeholder}\1", path)
    query = {}
    for key in QUERY_KEYS:
        value = str(req.query.get(key, ""))
        if value:
            for name, placeholder in names.items():
                value = value.replace(name, placeholder)
            query[key] = "RV" if key == "resourceVersion" else value.lower()
    body = shape(req.body)
    if body is not None:
        body["labels"] = [[k, names.get(v, v)] for k, v in body["labels"]]
    return json.dumps([req.verb, path, query, req.content_type, body], sort_keys=True)


def shape(body: Any) -> dict[str, Any] | None:
    """Field names, with the values that are the contract (labels, lease duration)."""
    if not isinstance(body, dict):
        return None
    meta = body.get("metadata") or {}
    out: dict[str, Any] = {
        "top": sorted(body),
        "metadata": sorted(meta),
        "labels": sorted((meta.get("labels") or {}).items()),
        "annotations": sorted(meta.get("annotations") or {}),
    }
    spec = body.get("spec") or {}
    if "leaseDurationSeconds" in spec:
        out["spec"] = sorted(spec)
        out["leaseDurationSeconds"] = spec["leaseDurationSeconds"]
    runtime = (body.get("status") or {}).get("runtime")
    if runtime is not None:
        out["runtime"] = sorted(runtime)
        out["state"] = runtime.get("state")
    return out


def record_client(api: Api, into: list[Request]) -> None:
    """Record each request of ``api``'s client where urllib3 sends it."""
    pool = api.client.rest_client.pool_manager
    send = pool.request

    def request(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        query.update({k: str(v) for k, v in kwargs.get("fields") or ()})
        headers = kwargs.get("headers") or {}
        body = kwargs.get("body")
        # The client sends a JSON body without a Content-Type (the API server takes
        # it as JSON, what the load generator says).
        ctype = next((v for k, v in headers.items() if k.lower() == "content-type"), None)
        ctype = None if body is None else (ctype or "application/json")
        into.append(Request(method, parts.path, query, ctype, json.loads(body) if body else None))
        return send(method, url, *args, **kwargs)

    pool.request = request


async def until(pred: Any, within: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not pred():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def test_loadgen_requests_match_a_real_agent(
    api: Api, kubeconfig: str, namespace: str, tmp_path: Path
) -> None:
    for host in ("real", "sim"):
        make_host(api, namespace, host)
        make_vm(api, namespace, f"vm-{host}", [SLEEP, "600"], host=host)

    real: list[Request] = []
    agent_api, watch_api = load_api(kubeconfig, timeout=2), load_api(kubeconfig)
    for client in (agent_api, watch_api):
        record_client(client, real)
    state = StateDir(tmp_path / "state")
    state.ensure()
    cfg = AgentConfig(
        host="real",
        namespace=namespace,
        state_dir=tmp_path / "state",
        boot_id="0123abcd-0000-4000-8000-00000000beef",
        lease_duration=3,
    )
    agent = Agent(cfg, agent_api, watch_api, {"process": ProcessDriver(state, "real")})

    sim: list[Request] = []
    wire = Wire(Path(kubeconfig))
    wire.record = sim.append
    host = SimHost("sim", namespace, wire, lease_duration=3)

    def running(vm: str) -> bool:
        rt = (api.get("HAVirtualMachine", namespace, vm).get("status") or {}).get("runtime")
        return (rt or {}).get("state") == "Running"

    task = asyncio.create_task(agent.run())
    host.start()
    try:
        await until(
            lambda: running("vm-real") and running("vm-sim"), 30, "both VMs reported Running"
        )
        # A few renewals each, and both watches open.
        await until(lambda: agent.renewals >= 3 and host.renewals >= 3, 30, "renewals")
    finally:
        agent.request_stop()
        await host.stop()
        await asyncio.wait_for(task, 30)
        await wire.close()
        kill_all(tmp_path / "state")
        agent_api.close()
        watch_api.close()

    real_sigs = {signature(r, {"real": "HOST", "vm-real": "VM"}) for r in real}
    sim_sigs = {signature(r, {"sim": "HOST", "vm-sim": "VM"}) for r in sim}
    assert real_sigs - sim_sigs == set(), "the real agent sends what the load generator does not"
    assert sim_sigs - real_sigs == set(), "the load generator sends what a real agent does not"
    verbs = {json.loads(s)[0] for s in real_sigs}
    assert verbs == {"GET", "POST", "PUT", "PATCH"}  # read, create, renew, report
