#!/usr/bin/env bash
# hafence on a kind cluster (Kubernetes in Docker), for trying the real install path:
#   ./hack/kind.sh kind-up    create cluster "hafence", build and load the image, apply base
#   ./hack/kind.sh kind-e2e   kind-up, then the lab's hard-fencing scenario against it
#   ./hack/kind.sh kind-down  delete the cluster
# Without Docker or kind it prints "skipped: ..." and exits 0 (CI machines have neither).
# Environment: CLUSTER (hafence), IMAGE (ghcr.io/hafence/hafence:0.1.0), KUBECTL
# (kubectl), HAFENCE (hafence; the CLI that runs the lab), ROLLOUT_TIMEOUT (180s).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CLUSTER="${CLUSTER:-hafence}"
IMAGE="${IMAGE:-ghcr.io/hafence/hafence:0.1.0}"
KUBECTL="${KUBECTL:-kubectl}"
HAFENCE="${HAFENCE:-hafence}"
ROLLOUT_TIMEOUT="${ROLLOUT_TIMEOUT:-180s}"
KUBECONFIG_FILE="${KUBECONFIG_FILE:-${TMPDIR:-/tmp}/hafence-kind-${CLUSTER}.kubeconfig}"

log() { printf 'kind.sh: %s\n' "$*" >&2; }

usage() {
  sed -n '2,8p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

# Exits 0 with a reason when the tools are missing: a skip, not a failure.
require_tools() {
  local missing=()
  command -v docker >/dev/null 2>&1 || missing+=("docker")
  command -v kind >/dev/null 2>&1 || missing+=("kind")
  command -v "${KUBECTL}" >/dev/null 2>&1 || missing+=("${KUBECTL}")
  if ((${#missing[@]})); then
    echo "skipped: $1 needs ${missing[*]} on PATH (not found); see docs/deploy.md, 'kind'"
    exit 0
  fi
  if ! docker info >/dev/null 2>&1; then
    echo "skipped: $1 needs a running Docker engine (docker info failed); see docs/deploy.md, 'kind'"
    exit 0
  fi
}

kind_up() {
  if kind get clusters 2>/dev/null | grep -qx "${CLUSTER}"; then
    log "cluster ${CLUSTER} exists; reusing it"
  else
    log "creating cluster ${CLUSTER}"
    kind create cluster --name "${CLUSTER}" --wait 120s
  fi
  kind get kubeconfig --name "${CLUSTER}" >"${KUBECONFIG_FILE}"
  chmod 600 "${KUBECONFIG_FILE}"

  log "building ${IMAGE}"
  docker build --tag "${IMAGE}" "${ROOT}"
  log "loading ${IMAGE} into the cluster's nodes"
  kind load docker-image --name "${CLUSTER}" "${IMAGE}"

  log "applying manifests/base"
  "${KUBECTL}" --kubeconfig "${KUBECONFIG_FILE}" apply --server-side -k "${ROOT}/manifests/base"
  "${KUBECTL}" --kubeconfig "${KUBECONFIG_FILE}" wait --for=condition=Established \
    crd/hosts.hafence.io crd/fenceagents.hafence.io crd/havirtualmachines.hafence.io \
    crd/fenceconfirmations.hafence.io --timeout=60s
  # kind load gives the image a fixed tag; a changed build with the same tag needs a
  # restart to be picked up.
  "${KUBECTL}" --kubeconfig "${KUBECONFIG_FILE}" -n hafence-system \
    rollout restart deployment/hafence-operator
  "${KUBECTL}" --kubeconfig "${KUBECONFIG_FILE}" -n hafence-system \
    rollout status deployment/hafence-operator --timeout="${ROLLOUT_TIMEOUT}"
  echo "kind-up: hafence is running in kind cluster ${CLUSTER}; export KUBECONFIG=${KUBECONFIG_FILE}"
}

kind_e2e() {
  kind_up
  if ! command -v "${HAFENCE}" >/dev/null 2>&1; then
    echo "skipped: kind-e2e needs the hafence CLI (make setup; or HAFENCE=.venv/bin/hafence)"
    exit 0
  fi
  log "running the lab's network-cut scenario against cluster ${CLUSTER}"
  "${HAFENCE}" lab --kubeconfig "${KUBECONFIG_FILE}" --scenario network-cut
  echo "kind-e2e: network-cut passed against kind cluster ${CLUSTER}"
}

kind_down() {
  if kind get clusters 2>/dev/null | grep -qx "${CLUSTER}"; then
    kind delete cluster --name "${CLUSTER}"
  fi
  rm -f "${KUBECONFIG_FILE}"
}

main() {
  local target="${1:-}"
  case "${target}" in
    kind-up) require_tools kind-up; kind_up ;;
    kind-e2e) require_tools kind-e2e; kind_e2e ;;
    kind-down) require_tools kind-down; kind_down ;;
    -h | --help | help) usage ;;
    *) usage >&2; exit 2 ;;
  esac
}

main "$@"
