"""SSH with paramiko: soft fencing (restart the host agent) and fence-proxy execution.

Host keys are checked strictly: the target carries a pinned key or a known_hosts
text; an unknown or different key is refused (:class:`HostKeyError`), never added.
Soft fencing restarts a service: it is never proof that a host is off (rule S4).
paramiko is synchronous: each call runs in a thread with socket/channel timeouts and
an outer hard deadline.
"""

from __future__ import annotations

import asyncio
import io
import re
import shlex
import time
from dataclasses import dataclass

import paramiko

from hafence.fencing.errors import (
    AuthFailed,
    DeviceError,
    FenceError,
    HostKeyError,
    TimedOut,
    Unreachable,
    Unsupported,
)
from hafence.fencing.fence_agents import Completed, Runner
from hafence.fencing.protocol import SSHTarget, bounded

OUTPUT_LIMIT = 2000
_KEY_TYPES: tuple[type[paramiko.PKey], ...] = (
    paramiko.Ed25519Key,
    paramiko.ECDSAKey,
    paramiko.RSAKey,
)


@dataclass(frozen=True)
class CommandResult:
    exit_status: int
    output: str  # stdout + stderr, trimmed to the last OUTPUT_LIMIT characters
    elapsed: float


def _load_key(target: SSHTarget) -> paramiko.PKey:
    for cls in _KEY_TYPES:
        try:
            return cls.from_private_key(io.StringIO(target.private_key))
        except (paramiko.SSHException, ValueError, TypeError):
            continue
    raise AuthFailed(
        f"ssh {target.label()}: the private key could not be read (OpenSSH or PEM, unencrypted)"
    )


def _host_keys(target: SSHTarget) -> paramiko.HostKeys:
    keys = paramiko.HostKeys()
    entry = target.address if target.port == 22 else f"[{target.address}]:{target.port}"
    if target.host_key:
        line = f"{entry} {target.host_key.strip()}"
        parsed = paramiko.hostkeys.HostKeyEntry.from_line(line)
        if parsed is None or parsed.key is None:
            raise Unsupported(f"ssh {target.label()}: hostKey is not 'TYPE BASE64'")
        keys.add(entry, parsed.key.get_name(), parsed.key)
    if target.known_hosts:
        for number, raw in enumerate(target.known_hosts.splitlines(), 1):
            if not raw.strip() or raw.lstrip().startswith("#"):
                continue
            try:
                parsed = paramiko.hostkeys.HostKeyEntry.from_line(raw, number)
            except (paramiko.SSHException, ValueError) as exc:
                raise Unsupported(
                    f"ssh {target.label()}: known_hosts line {number}: {exc}"
                ) from None
            if parsed is not None and parsed.key is not None:
                for name in parsed.hostnames:
                    keys.add(name, parsed.key.get_name(), parsed.key)
    if not target.host_key and not target.known_hosts:
        raise HostKeyError(
            f"ssh {target.label()}: no pinned host key or known_hosts: "
            "host keys are never accepted on first use"
        )
    return keys


def _connect(target: SSHTarget, timeout: float) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    keys = _host_keys(target)
    for host, entry in keys.items():
        for keytype, key in entry.items():
            client.get_host_keys().add(host, keytype, key)
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    where = f"ssh {target.label()}"
    try:
        client.connect(
            target.address,
            port=target.port,
            username=target.user,
            pkey=_load_key(target),
            timeout=timeout,
            banner_timeout=timeout,
            auth_timeout=timeout,
            channel_timeout=timeout,
            allow_agent=False,
            look_for_keys=False,
        )
    except paramiko.BadHostKeyException as exc:
        client.close()
        raise HostKeyError(
            f"{where}: host key mismatch: the server offered "
            f"{exc.key.get_name()} {exc.key.fingerprint}, which is not "
            "the pinned key"
        ) from None
    except paramiko.AuthenticationException:
        client.close()
        raise AuthFailed(f"{where}: the server refused the key for user {target.user!r}") from None
    except paramiko.SSHException as exc:
        client.close()
        if "not found in known_hosts" in str(exc):
            raise HostKeyError(
                f"{where}: unknown host key (not pinned, not in known_hosts); refused"
            ) from None
        raise Unreachable(f"{where}: {exc}") from None
    except TimeoutError:
        client.close()
        raise Unreachable(f"{where}: no answer within {timeout:g}s") from None
    except OSError as exc:
        client.close()
        raise Unreachable(f"{where}: {exc.strerror or exc}") from None
    except FenceError:
        client.close()
        raise
    return client


def _run(target: SSHTarget, command: str, stdin: bytes, timeout: float) -> Completed:
    deadline = time.monotonic() + timeout
    client = _connect(target, timeout)
    try:
        channel = client.get_transport().open_session(timeout=timeout)  # type: ignore[union-attr]
        channel.settimeout(max(0.1, deadline - time.monotonic()))
        channel.exec_command(command)
        if stdin:
            channel.sendall(stdin)
        channel.shutdown_write()
        out, err = bytearray(), bytearray()
        while True:
            if time.monotonic() > deadline:
                raise TimedOut(f"ssh {target.label()}: command still running after {timeout:g}s")
            if channel.recv_ready():
                out += channel.recv(65536)
            elif channel.recv_stderr_ready():
                err += channel.recv_stderr(65536)
            elif (
                channel.exit_status_ready()
                and not channel.recv_ready()
                and not channel.recv_stderr_ready()
            ):
                break
            else:
                time.sleep(0.02)
        return Completed(
            channel.recv_exit_status(), out.decode(errors="replace"), err.decode(errors="replace")
        )
    except TimeoutError:
        raise TimedOut(f"ssh {target.label()}: no result within {timeout:g}s") from None
    except paramiko.SSHException as exc:
        raise DeviceError(f"ssh {target.label()}: {exc}") from None
    finally:
        client.close()


async def run_command(
    target: SSHTarget,
    command: str,
    timeout: float,  # noqa: ASYNC109 — bounds a thread/process too
    stdin: bytes = b"",
) -> Completed:
    """``command`` on ``target`` (stdin fed, never argv), bounded by ``timeout``."""
    return await bounded(
        asyncio.to_thread(_run, target, command, stdin, timeout),
        timeout + 1.0,
        f"ssh {target.label()}",
    )


async def soft_fence(target: SSHTarget, command: str, timeout: float) -> CommandResult:  # noqa: ASYNC109 — bounds a thread/process too
    """Run the soft-fence command (restart the host agent); report exit status and output.

    A non-zero exit is reported, not raised: the caller decides what it means.
    Connection, key and timeout failures raise :class:`FenceError` subclasses.
    """
    start = time.monotonic()
    done = await run_command(target, command, timeout)
    output = (done.stdout + done.stderr).strip()
    if len(output) > OUTPUT_LIMIT:
        output = "..." + output[-OUTPUT_LIMIT:]
    return CommandResult(done.returncode, output, time.monotonic() - start)


_PROGRAM = re.compile(r"^fence_[a-z0-9_]+$")


def proxy_runner(proxy: SSHTarget) -> Runner:
    """A fence-agent runner that executes the agent on ``proxy`` with stdin over SSH."""

    async def run(program: str, stdin: bytes, timeout: float) -> Completed:  # noqa: ASYNC109 — bounds a thread/process too
        if not _PROGRAM.match(program):
            raise Unsupported(f"fence proxy: {program!r} is not a fence agent name")
        command = f"PATH=$PATH:/usr/sbin:/sbin PYTHONWARNINGS=ignore {shlex.quote(program)}"
        return await run_command(proxy, command, timeout, stdin)

    return run
