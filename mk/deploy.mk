# The operator's image, a kind cluster with real containers, and the Helm release.
# Included by the Makefile; uses its VENV, PYTEST, PYTEST_ARGS and BIN_DIR.
#
#   make image kind-up kind-load deploy     the operator from this checkout on a fresh kind cluster
#   make e2e-kind                           the same, then the end-to-end suite against it
#
# deploy and undeploy act on the cluster of $KUBECONFIG (or the current context), like `make install`;
# e2e-kind points them at the kind cluster itself.

IMAGE_REPOSITORY ?= dagflow/operator
IMAGE_TAG ?= dev
IMAGE ?= $(IMAGE_REPOSITORY):$(IMAGE_TAG)
LAUNCHER_REPOSITORY ?= dagflow/launcher
LAUNCHER_IMAGE ?= $(LAUNCHER_REPOSITORY):$(IMAGE_TAG)
DOCKER ?= docker

RELEASE ?= dagflow
DEPLOY_NAMESPACE ?= dagflow-system
CHART := charts/dagflow-operator
# Extra arguments for `helm upgrade --install`, e.g. HELM_ARGS='--set watchNamespaces={team-a}'.
HELM_ARGS ?=
HELM = $(BIN_DIR)/helm

KIND_VERSION ?= v0.33.0
KIND_CLUSTER ?= dagflow
KIND_CONFIG ?= images/kind/kind-config.yaml
KIND_KUBECONFIG ?= $(or $(DAGFLOW_CACHE),$(HOME)/.cache/dagflow)/kind-$(KIND_CLUSTER).kubeconfig
# kind from PATH, else built from its Go module into the tools cache.
KIND ?= $(or $(shell command -v kind 2>/dev/null),$(BIN_DIR)/kind-$(KIND_VERSION)/kind)
# What kind nodes lack: GPUs. The GPU worker advertises this many fake ones.
KIND_FAKE_GPUS ?= 8

# Images: `docker build` where a Docker engine answers; elsewhere (no engine, no registry) buildah builds
# the same Dockerfiles on a local Debian base into archives for containerd (images/build-local.sh).
BUILD_LOCAL := images/build-local.sh

##@ Deploy
.PHONY: image
image: ## Build the operator's image (IMAGE_REPOSITORY:IMAGE_TAG): with Docker if an engine answers, else buildah.
	@if $(DOCKER) info >/dev/null 2>&1; then \
		echo "Docker engine found: $(DOCKER) build"; \
		$(DOCKER) build -f images/operator/Dockerfile -t $(IMAGE) .; \
	else \
		echo "No Docker engine: building with buildah ($(BUILD_LOCAL))"; \
		OPERATOR_IMAGE=$(IMAGE) $(BUILD_LOCAL) build operator; \
	fi

.PHONY: launcher-image
launcher-image: ## Build the matrix launcher's image (LAUNCHER_REPOSITORY:IMAGE_TAG): with Docker if an engine answers, else buildah.
	@if $(DOCKER) info >/dev/null 2>&1; then \
		echo "Docker engine found: $(DOCKER) build"; \
		$(DOCKER) build -t $(LAUNCHER_IMAGE) images/launcher; \
	else \
		echo "No Docker engine: building with buildah ($(BUILD_LOCAL))"; \
		LAUNCHER_IMAGE=$(LAUNCHER_IMAGE) $(BUILD_LOCAL) build launcher; \
	fi

.PHONY: images-local
images-local: ## Build the images (operator, launcher, examples) with buildah, no Docker or registry needed (archives in ~/.cache/dagflow/images).
	$(BUILD_LOCAL) build

.PHONY: images-import
images-import: ## Import those archives into the containerd at DAGFLOW_CONTAINERD_ADDRESS (namespace k8s.io).
	$(BUILD_LOCAL) import

$(BIN_DIR)/kind-$(KIND_VERSION)/kind:
	GOBIN=$(dir $@) go install sigs.k8s.io/kind@$(KIND_VERSION)

.PHONY: kind-up
kind-up: venv | $(KIND) ## Create the kind cluster (a CPU and a GPU worker); prints its KUBECONFIG export.
	@if ! $(KIND) get clusters 2>/dev/null | grep -qx '$(KIND_CLUSTER)'; then \
		$(KIND) create cluster --name $(KIND_CLUSTER) --config $(KIND_CONFIG) \
			--kubeconfig $(KIND_KUBECONFIG) --wait 3m; \
	else \
		$(KIND) export kubeconfig --name $(KIND_CLUSTER) --kubeconfig $(KIND_KUBECONFIG); \
	fi
	@# An extended resource in the node's status, as a device plugin would advertise it.
	@for node in $$(kubectl --kubeconfig $(KIND_KUBECONFIG) get nodes -l nvidia.com/gpu.present=true -o name); do \
		kubectl --kubeconfig $(KIND_KUBECONFIG) patch $$node --subresource=status --type=json \
			-p '[{"op":"add","path":"/status/capacity/nvidia.com~1gpu","value":"$(KIND_FAKE_GPUS)"}]' >/dev/null; \
	done
	@echo "export KUBECONFIG=$(KIND_KUBECONFIG)"

.PHONY: kind-down
kind-down: | $(KIND) ## Delete the kind cluster.
	$(KIND) delete cluster --name $(KIND_CLUSTER) --kubeconfig $(KIND_KUBECONFIG)

.PHONY: kind-load
kind-load: | $(KIND) ## Load the operator's, the launcher's and the example pipeline's images into the kind cluster's nodes.
	$(KIND) load docker-image $(IMAGE) $(LAUNCHER_IMAGE) $(EXAMPLES_IMAGE) --name $(KIND_CLUSTER)

.PHONY: deploy
deploy: venv ## Install or upgrade the Helm release (RELEASE, DEPLOY_NAMESPACE) in the cluster of KUBECONFIG.
	@tests/cluster/build.sh helm >/dev/null
	$(HELM) upgrade --install $(RELEASE) $(CHART) --namespace $(DEPLOY_NAMESPACE) --create-namespace \
		--set image.repository=$(IMAGE_REPOSITORY) --set image.tag=$(IMAGE_TAG) \
		--set launcher.repository=$(LAUNCHER_REPOSITORY) --set launcher.tag=$(IMAGE_TAG) \
		--wait --timeout 5m $(HELM_ARGS)

.PHONY: undeploy
undeploy: ## Uninstall the Helm release; the CRDs and every DAGFlow stay (see the chart's README).
	@tests/cluster/build.sh helm >/dev/null
	$(HELM) uninstall $(RELEASE) --namespace $(DEPLOY_NAMESPACE) --ignore-not-found --wait --timeout 5m
	@echo "The CRDs stay. To remove them and every DAGFlow: kubectl delete crd dagflows.dagflow.dev"

# The end-to-end suite against kind: the cluster is the one in KUBECONFIG (the tests neither start nor
# stop it: DAGFLOW_TEST_CLUSTER=external) and the operator is the release deployed above
# (DAGFLOW_TEST_OPERATOR=<namespace>/<release>), stopped and started by scaling its Deployment. Works
# run in real containers there; the tests marked local_cluster (they steer kwok's simulated pods, run
# their own operator process, or need the example image and shared storage) are not selected.
.PHONY: e2e-kind
e2e-kind: venv image launcher-image examples-image kind-up kind-load ## Deploy this checkout to kind and run the end-to-end suite there.
	$(MAKE) --no-print-directory deploy KUBECONFIG=$(KIND_KUBECONFIG)
	KUBECONFIG=$(KIND_KUBECONFIG) DAGFLOW_TEST_CLUSTER=external \
		DAGFLOW_TEST_OPERATOR=$(DEPLOY_NAMESPACE)/$(RELEASE) \
		$(PYTEST) tests/e2e -m 'not local_cluster' $(PYTEST_ARGS)
