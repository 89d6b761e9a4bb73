"""Errors of the fencing drivers: one small hierarchy, raised by every driver.

::

    FenceError             any failed fencing operation (message names agent and address)
    ├── Unreachable        no answer at all: connection refused, no route, no reply
    ├── AuthFailed         the device answered and refused the credentials or key
    ├── TimedOut           the operation started but did not finish within its timeout
    ├── Unsupported        unknown agent type, bad options, or an operation the device lacks
    └── DeviceError        the device answered with an error (or a state we cannot read)

    HostKeyError(AuthFailed)  an SSH host key is unknown or does not match the pinned one
    TLSError(AuthFailed)      a TLS certificate does not verify (Redfish without ssl_insecure)
    ConfigError(Unsupported)  a referenced Secret, key or FenceAgent is missing or invalid

Messages never contain a password, a private key or a token: drivers build them from
the agent's type and address and the device's reply, and scrub any credential they
were given before raising (see :func:`scrub`).
"""

from __future__ import annotations

from collections.abc import Iterable


class FenceError(RuntimeError):
    """A fencing operation failed; ``str(exc)`` is safe to log and to write to status."""


class Unreachable(FenceError):
    pass


class AuthFailed(FenceError):
    pass


class HostKeyError(AuthFailed):
    pass


class TLSError(AuthFailed):
    pass


class TimedOut(FenceError):
    pass


class Unsupported(FenceError):
    pass


class ConfigError(Unsupported):
    pass


class DeviceError(FenceError):
    pass


def scrub(text: str, secrets: Iterable[str | bytes | None]) -> str:
    """``text`` with every non-trivial secret replaced, for messages built from replies."""
    for secret in secrets:
        if secret is None:
            continue
        value = secret.decode(errors="replace") if isinstance(secret, bytes) else secret
        if len(value) >= 3:
            text = text.replace(value, "***")
    return text
