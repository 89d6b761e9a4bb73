#!/usr/bin/env bash
# Builds Prometheus's promtool from the Go module proxy into ~/.cache/hafence/tools
# (about 8 minutes on two cores, once), so tests/deploy can check and unit-test the
# alert rules: `promtool check rules` and `promtool test rules`.
#   ./hack/promtool.sh            build unless cached; print its path
#   PROMTOOL_VERSION=v0.x.y ...   pin a version (default: latest)
set -euo pipefail

TOOLS="${HAFENCE_TOOLS:-${HOME}/.cache/hafence/tools}"
VERSION="${PROMTOOL_VERSION:-latest}"

if [[ -x "${TOOLS}/promtool" ]]; then
  echo "${TOOLS}/promtool"
  exit 0
fi
if ! command -v go >/dev/null 2>&1; then
  echo "skipped: building promtool needs Go (https://go.dev/dl)" >&2
  exit 0
fi
mkdir -p "${TOOLS}"
GOBIN="${TOOLS}" go install "github.com/prometheus/prometheus/cmd/promtool@${VERSION}"
echo "${TOOLS}/promtool"
