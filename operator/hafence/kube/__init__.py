"""Thin, synchronous access to the Kubernetes API shared by every shell.

The operator, the agent and the CLI all talk to the API server through these few
functions, so authentication, the resource paths of our kinds, and the rule that
Secret values never leave this module in an error live in one place.  Async callers
wrap them in ``asyncio.to_thread``.
"""

from hafence.kube.client import (
    Api,
    Conflict,
    Gone,
    KubeError,
    NotFound,
    SecretError,
    Unavailable,
    call,
    load_api,
)

__all__ = [
    "Api",
    "Conflict",
    "Gone",
    "KubeError",
    "NotFound",
    "SecretError",
    "Unavailable",
    "call",
    "load_api",
]
