"""The agent runs what is placed on its host, and only that (real processes)."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

from hafence.agent.process import kill_all
from hafence.kube import Api

from .conftest import AgentProc
from .helpers import SLEEP, env_has, make_host, make_vm, pid_alive, place, runtime, wait_for


def running_pid(
    api: Api, namespace: str, name: str, other_than: int | None = None, epoch: int | None = None
) -> int:
    def check() -> int | None:
        rt = runtime(api, namespace, name)
        pid = rt.get("pid")
        fits = epoch is None or rt.get("placementEpoch") == epoch
        if rt.get("state") == "Running" and pid and pid != other_than and fits:
            return int(pid)
        return None

    pid: int = wait_for(check, what=f"{name} Running")
    return pid


def test_placed_vm_starts_and_stops_when_moved(
    api: Api, namespace: str, start_agent: Callable[..., AgentProc]
) -> None:
    make_host(api, namespace, "h1")
    start_agent("h1", namespace)
    make_vm(api, namespace, "vm1", [SLEEP, "300"], host="h1", epoch=1)
    make_vm(api, namespace, "other", [SLEEP, "300"], host="h2", epoch=1)
    pid = running_pid(api, namespace, "vm1")
    assert pid_alive(pid)
    assert env_has(pid, f"HAFENCE_VM={namespace}/vm1")
    rt = runtime(api, namespace, "vm1")
    assert rt["host"] == "h1" and rt["placementEpoch"] == 1 and rt["restarts"] == 0
    assert runtime(api, namespace, "other") == {}, "the agent wrote a VM placed elsewhere"

    place(api, namespace, "vm1", "h2", 2)
    wait_for(lambda: not pid_alive(pid), what="the VM process to stop after the move")
    # Placed on h2 now: h2's agent owns status.runtime, h1's must not overwrite it.
    assert runtime(api, namespace, "vm1")["state"] == "Running"


def test_halted_vm_is_stopped(
    api: Api, namespace: str, start_agent: Callable[..., AgentProc]
) -> None:
    make_host(api, namespace, "h1")
    start_agent("h1", namespace)
    make_vm(api, namespace, "vm1", [SLEEP, "300"], host="h1")
    pid = running_pid(api, namespace, "vm1")
    api.patch("HAVirtualMachine", namespace, "vm1", {"spec": {"runStrategy": "Halted"}})
    wait_for(lambda: runtime(api, namespace, "vm1").get("state") == "Stopped", what="Stopped")
    assert not pid_alive(pid)


def test_killed_vm_is_restarted_and_counted(
    api: Api, namespace: str, start_agent: Callable[..., AgentProc]
) -> None:
    make_host(api, namespace, "h1")
    start_agent("h1", namespace)
    make_vm(api, namespace, "vm1", [SLEEP, "300"], host="h1")
    pid = running_pid(api, namespace, "vm1")
    os.kill(pid, signal.SIGKILL)
    new_pid = running_pid(api, namespace, "vm1", other_than=pid)
    assert pid_alive(new_pid)
    assert runtime(api, namespace, "vm1")["restarts"] == 1


def test_crash_loop_ends_failed_with_reason(
    api: Api, namespace: str, start_agent: Callable[..., AgentProc]
) -> None:
    make_host(api, namespace, "h1")
    agent = start_agent("h1", namespace, "--restart-limit", "2")
    make_vm(api, namespace, "vm1", ["/bin/sh", "-c", "exit 3"], host="h1")
    rt = wait_for(
        lambda: (r := runtime(api, namespace, "vm1")).get("state") == "Failed" and r,
        what="Failed after the restart limit",
    )
    assert rt["restarts"] == 3
    assert "crashed 3 times" in rt["message"] and "exited with code 3" in rt["message"], rt
    # A new placement epoch (the operator re-placing it) gets a fresh budget.
    place(api, namespace, "vm1", "h1", 2)
    wait_for(
        lambda: (
            (r := runtime(api, namespace, "vm1")).get("placementEpoch") == 2
            and r.get("state") in ("Running", "Crashed")
        ),
        what="a new try under epoch 2",
    )
    assert agent.proc.poll() is None


def test_missing_command_fails_and_others_keep_running(
    api: Api, namespace: str, start_agent: Callable[..., AgentProc]
) -> None:
    make_host(api, namespace, "h1")
    agent = start_agent("h1", namespace)
    make_vm(api, namespace, "bad", ["/nonexistent/qemu-kvm", "-m", "512"], host="h1")
    make_vm(api, namespace, "good", [SLEEP, "300"], host="h1")
    rt = wait_for(
        lambda: (r := runtime(api, namespace, "bad")).get("state") == "Failed" and r,
        what="bad VM Failed",
    )
    assert "spec.runtime.process.command[0] '/nonexistent/qemu-kvm'" in rt["message"], rt
    assert "no such executable" in rt["message"]
    assert pid_alive(running_pid(api, namespace, "good"))
    assert agent.proc.poll() is None


def test_process_driver_is_off_unless_enabled(
    api: Api, namespace: str, start_agent: Callable[..., AgentProc], tmp_path
) -> None:
    marker = tmp_path / "ran"
    make_host(api, namespace, "h1")
    start_agent("h1", namespace, process_driver=False)
    make_vm(api, namespace, "vm1", ["/usr/bin/touch", str(marker)], host="h1")
    rt = wait_for(
        lambda: (r := runtime(api, namespace, "vm1")).get("state") == "Failed" and r,
        what="VM Failed with a reason",
    )
    assert "--enable-process-driver" in rt["message"], rt
    assert not marker.exists()


def test_vms_survive_agent_restart_and_are_adopted(
    api: Api, namespace: str, start_agent: Callable[..., AgentProc]
) -> None:
    make_host(api, namespace, "h1")
    first = start_agent("h1", namespace)
    make_vm(api, namespace, "vm1", [SLEEP, "300"], host="h1")
    pid = running_pid(api, namespace, "vm1")
    assert first.stop() == 0
    assert pid_alive(pid), "SIGTERM of the agent took its VM down"
    second = start_agent("h1", namespace, state_dir=first.state_dir)
    wait_for(lambda: "S3 sweep done: 1 VMs" in second.log_text(), what="the VM adopted")
    # Killed behind the new agent's back: it must notice (adopted, not its child).
    os.kill(pid, signal.SIGKILL)
    new_pid = running_pid(api, namespace, "vm1", other_than=pid)
    assert runtime(api, namespace, "vm1")["restarts"] == 1
    assert pid_alive(new_pid)


def test_kill_vms_on_exit(api: Api, namespace: str, start_agent: Callable[..., AgentProc]) -> None:
    make_host(api, namespace, "h1")
    agent = start_agent("h1", namespace, "--kill-vms-on-exit")
    make_vm(api, namespace, "vm1", [SLEEP, "300"], host="h1")
    pid = running_pid(api, namespace, "vm1")
    assert agent.stop() == 0
    wait_for(lambda: not pid_alive(pid), timeout=5, what="the VM killed with the agent")


def test_host_reboot_is_not_a_vm_crash(
    api: Api, namespace: str, start_agent: Callable[..., AgentProc]
) -> None:
    """The lab's power loss: agent and VMs killed, the host comes back with a new boot
    ID; a VM still placed here starts again without spending its crash budget."""
    make_host(api, namespace, "h1")
    first = start_agent("h1", namespace, boot_id="0000000a-0000-4000-8000-000000000001")
    make_vm(api, namespace, "vm1", [SLEEP, "300"], host="h1")
    pid = running_pid(api, namespace, "vm1")
    first.proc.kill()
    first.proc.wait()
    assert kill_all(first.state_dir) == [f"{namespace}/vm1"]
    wait_for(lambda: not pid_alive(pid), timeout=5, what="the VM to die with the host")
    second = start_agent(
        "h1", namespace, state_dir=first.state_dir, boot_id="0000000b-0000-4000-8000-000000000002"
    )
    new_pid = running_pid(api, namespace, "vm1", other_than=pid)
    assert pid_alive(new_pid)
    assert runtime(api, namespace, "vm1")["restarts"] == 0
    assert "did not survive the reboot" in second.log_text()
