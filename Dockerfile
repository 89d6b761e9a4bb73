# syntax=docker/dockerfile:1
# hafence: the operator (`hafence operator`, the default) and every other subcommand.
#   docker build -t ghcr.io/hafence/hafence:0.1.0 .
# The registry name is a placeholder: push to your own and set it with kustomize
# `images:` (docs/deploy.md). Stage 1 builds wheels; stage 2 has no compiler, no pip.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
# hafence's wheel and every dependency's, so the final stage installs offline from them.
RUN python -m pip wheel --no-cache-dir --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="hafence" \
      org.opencontainers.image.description="High availability for VMs on hypervisor hosts, as a Kubernetes operator" \
      org.opencontainers.image.licenses="Apache-2.0"

# Debian's fence agents (fence_ipmilan, fence_ilo*, fence_idrac, fence_redfish,
# fence_apc...) and what they spawn, which fence-agents only recommends or omits:
# ipmitool (fence_ipmilan), gnutls-cli (fence_ilo/ilo2's RIBCL over TLS), ssh and
# telnet (the agents that log in to a BMC or PDU), net-snmp's tools (fence_apc_snmp).
# The list is operator/hafence/fencing/agent_types.py's; tests/fencing checks it.
# Versions follow the bookworm base image; they are not pinned so a rebuild picks up
# Debian's security updates.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
       fence-agents ipmitool gnutls-bin openssh-client snmp telnet \
    && rm -rf /var/lib/apt/lists/*

# Installed from the builder's wheels only (no index), then pip, setuptools and wheel
# leave the image: nothing in it can build or fetch code at run time.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    python -m pip install --no-cache-dir --no-index --find-links=/wheels /wheels/hafence-*.whl \
    && python -m pip uninstall --yes pip setuptools wheel

# The Deployment runs it read-only with an emptyDir on /tmp: HOME there for ssh.
RUN groupadd --system --gid 65532 hafence \
    && useradd --system --uid 65532 --gid 65532 --home-dir /tmp --no-create-home \
       --shell /usr/sbin/nologin hafence
ENV HOME=/tmp \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 65532:65532
WORKDIR /tmp
EXPOSE 8080
ENTRYPOINT ["hafence"]
CMD ["operator"]
