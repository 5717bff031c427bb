# DAGFlow operator. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST := $(VENV)/bin/pytest
CLUSTER := tests/cluster/cluster.sh
CRD_FILE := crds/dagflow.dev_dagflows.yaml
CHART_CRD_FILE := charts/dagflow-operator/crds/dagflow.dev_dagflows.yaml
CACHE_CRD_FILE := crds/dagflow.dev_dagflowcacheentries.yaml
CHART_CACHE_CRD_FILE := charts/dagflow-operator/crds/dagflow.dev_dagflowcacheentries.yaml
# kopf's peering CRDs (operators on one cluster see each other there); the chart's copy is the source.
PEERING_CRD_FILE := charts/dagflow-operator/crds/kopf.dev_peerings.yaml
CRD_NAMES := crd/dagflows.dagflow.dev crd/dagflowcacheentries.dagflow.dev crd/clusterkopfpeerings.kopf.dev crd/kopfpeerings.kopf.dev
# kubectl and helm that match the local control plane.
BIN_DIR = $(shell tests/cluster/build.sh bin-dir)
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
PYTEST_ARGS ?=

##@ General
.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make <target>\n"} \
		/^[a-zA-Z0-9_-]+:.*?##/ { printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2 } \
		/^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Setup
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $@

.PHONY: venv
venv: $(VENV)/.installed ## Create the Python venv with the package and its dev tools.

.PHONY: host-packages
host-packages: ## Install the Debian packages of the real node (runc, CNI plugins, iptables...; containerd is built by tools).
	@tests/cluster/host-packages.sh

.PHONY: tools
tools: host-packages ## Build etcd, the Kubernetes control plane and node, containerd, kwok, helm, crictl and the node's images (cached in ~/.cache/dagflow); kind-tools too where a Docker engine can run.
	tests/cluster/build.sh all
	@if tests/cluster/kind.sh can-run; then $(MAKE) --no-print-directory kind-tools; \
	else echo "No Docker engine here, and none can be installed and started (root with apt-get): no kind tools"; fi

##@ Local cluster
.PHONY: cluster
cluster: venv tools ## Start the local cluster; prints the KUBECONFIG export as its last line.
	@$(CLUSTER) up

.PHONY: cluster-down
cluster-down: ## Stop and delete the local cluster.
	@$(CLUSTER) down

.PHONY: real-node
real-node: tools ## Start the real node real-0 for the local cluster (cluster does it too; DAGFLOW_REAL_NODE=0 skips it there).
	@tests/cluster/real-node.sh up

.PHONY: real-node-down
real-node-down: ## Stop the real node real-0, whatever cluster it serves (containerd's images stay).
	@tests/cluster/real-node.sh down

.PHONY: storage-tools
storage-tools: ## Build the local cluster's storage provisioner (local-path-provisioner; cached, pinned in versions.env).
	@tests/cluster/storage.sh build

# cluster.sh starts it with every local cluster, for its default StorageClass dagflow-local.
tools: storage-tools

##@ Development
.PHONY: lint
lint: venv ## Run ruff and mypy.
	$(VENV)/bin/ruff check operator tests bench
	$(VENV)/bin/ruff format --check operator tests bench
	$(VENV)/bin/mypy

.PHONY: crds
crds: venv ## Generate the CRD YAML from the pydantic models; copy kopf's peering CRDs next to it.
	$(PY) -m dagflow.api.crd $(CRD_FILE) $(if $(wildcard $(dir $(CHART_CRD_FILE))),$(CHART_CRD_FILE))
	$(PY) -m dagflow.api.crd --cache-entries $(CACHE_CRD_FILE) $(if $(wildcard $(dir $(CHART_CACHE_CRD_FILE))),$(CHART_CACHE_CRD_FILE))
	cp $(PEERING_CRD_FILE) crds/

.PHONY: install
install: venv ## Apply the CRDs (DAGFlow and kopf's peerings) to the cluster in KUBECONFIG.
	kubectl apply --server-side --force-conflicts -f crds/
	@# `kubectl wait` fails, rather than waits, while a brand-new CRD has no conditions yet.
	@for attempt in $$(seq 30); do \
		kubectl wait --for=condition=Established $(CRD_NAMES) --timeout=60s 2>/dev/null && exit 0; \
		sleep 1; \
	done; kubectl wait --for=condition=Established $(CRD_NAMES) --timeout=5s

.PHONY: uninstall
uninstall: venv ## Delete the CRDs (and with them every DAGFlow) from the cluster in KUBECONFIG.
	kubectl delete --ignore-not-found -f crds/

.PHONY: run
run: venv install ## Run the operator in the foreground against the cluster in KUBECONFIG.
	$(VENV)/bin/dagflow-operator

##@ Tests
.PHONY: test
test: venv tools lint ## Run the whole suite: lint, unit, integration and end-to-end tests.
	$(PYTEST) $(PYTEST_ARGS)

.PHONY: bench
bench: venv tools ## Measure latency, makespan, API cost and memory on a local cluster (~20 min).
	$(PY) -m bench.harness

.PHONY: bench-quick
bench-quick: venv tools ## A small run of the benchmarks that proves the harness works (~3 min).
	$(PY) -m bench.harness --quick

.PHONY: chaos
chaos: venv tools ## Run the chaos drills (part of test): kills, restarts, stalls and deletions while flows run.
	$(PYTEST) tests/chaos $(PYTEST_ARGS)

.PHONY: test-unit
test-unit: venv ## Run the unit tests only (no cluster).
	$(PYTEST) tests/unit $(PYTEST_ARGS)

include mk/deploy.mk
include mk/demo.mk
include mk/ui.mk
include mk/sim.mk
include mk/kueue.mk
include mk/store.mk
