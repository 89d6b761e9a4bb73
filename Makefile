# hafence — `make demo` runs the lab, `make test` runs the tests. Both set up first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Debian packages the tests and the lab talk to (real peers, never mocks).
SYSTEM_PACKAGES := ipmitool fence-agents openssh-server openssh-client libvirt-clients
# What the fence_* agents spawn (the table in operator/hafence/fencing/agent_types.py):
# fence-agents only recommends telnet/ssh/snmp and never mentions gnutls-cli.
FENCE_AGENT_PACKAGES := fence-agents ipmitool gnutls-bin openssh-client snmp telnet
SYSTEM_PACKAGES += $(FENCE_AGENT_PACKAGES)
# Real VMs: a libvirt daemon per virtual host running qemu (TCG), and what
# libvirt-python (the agent's libvirt driver, pip) builds against.
LIBVIRT_PACKAGES := libvirt-daemon libvirt-daemon-driver-qemu qemu-system-x86 libvirt-dev pkg-config gcc
SETUP_STAMP := $(VENV)/.setup-done

.PHONY: setup system-packages control-plane test demo crds lint clean kind-up kind-e2e

setup: $(SETUP_STAMP) system-packages control-plane

$(SETUP_STAMP): pyproject.toml | system-packages
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

system-packages:
	@missing=$$(for p in $(sort $(SYSTEM_PACKAGES) $(LIBVIRT_PACKAGES)); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

# etcd + kube-apiserver + kubectl, built once from the Go module proxy into ~/.cache/hafence.
control-plane: $(SETUP_STAMP)
	$(BIN)/hafence control-plane build

test: setup
	$(BIN)/pytest -q tests

demo: setup
	$(BIN)/hafence lab --scenario all

crds: $(SETUP_STAMP)
	$(BIN)/hafence crds --output crds
	$(BIN)/python hack/sync_generated.py

lint: $(SETUP_STAMP)
	$(BIN)/ruff check operator tests bench
	$(BIN)/ruff format --check operator tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

kind-up kind-e2e:
	@command -v docker >/dev/null && docker info >/dev/null 2>&1 && command -v kind >/dev/null || \
	  { echo "skipped: $@ needs a running Docker engine and kind (none here); see README 'kind'"; exit 0; }; \
	./hack/kind.sh $@

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
