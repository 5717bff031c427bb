# The operator's image, a kind cluster with real containers, and the Helm release.
# Included by the Makefile; uses its VENV, PYTEST, PYTEST_ARGS and BIN_DIR.
#
#   make kind-deploy      the operator from this checkout on a kind cluster (image kind-up kind-load deploy)
#   make e2e-kind         the same, then the end-to-end suite against it
#
# kind runs on a Docker engine: `make kind-tools` (part of `make tools` where one can run) installs
# Debian's docker.io where no engine answers, starts dockerd, builds kind and the node image
# (tests/cluster/kind.sh, images/kind/README.md). `make kind-engine-down` stops that dockerd.
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

# kind's version and the node image are pinned in tests/cluster/versions.env (KIND_VERSION, KIND_NODE_IMAGE).
KIND_SCRIPT := tests/cluster/kind.sh
KIND_CLUSTER ?= dagflow
KIND_CONFIG ?= images/kind/kind-config.yaml
# What kind nodes lack: GPUs. The GPU worker advertises this many fake ones.
KIND_FAKE_GPUS ?= 8
KIND_KUBECONFIG = $(shell KIND_CLUSTER=$(KIND_CLUSTER) $(KIND_SCRIPT) kubeconfig)
KIND_ENV = KIND_CLUSTER=$(KIND_CLUSTER) KIND_CONFIG=$(abspath $(KIND_CONFIG)) KIND_FAKE_GPUS=$(KIND_FAKE_GPUS)

# Images: `docker build` where a Docker engine answers and the Dockerfile's base image can be had;
# elsewhere (no engine, or no registry) buildah builds the same Dockerfiles on a local Debian base into
# archives for containerd (images/build-local.sh), loaded into Docker too where an engine answers.
BUILD_LOCAL := images/build-local.sh
BUILD_IMAGE := images/build-image.sh

##@ Deploy
.PHONY: image
image: ## Build the operator's image (IMAGE_REPOSITORY:IMAGE_TAG): Docker, or buildah where Docker cannot (images/build-image.sh).
	@DOCKER=$(DOCKER) $(BUILD_IMAGE) operator $(IMAGE)

.PHONY: launcher-image
launcher-image: ## Build the matrix launcher's image (LAUNCHER_REPOSITORY:IMAGE_TAG): Docker, or buildah where Docker cannot.
	@DOCKER=$(DOCKER) $(BUILD_IMAGE) launcher $(LAUNCHER_IMAGE)

.PHONY: images-local
images-local: ## Build the images (operator, launcher, examples) with buildah, no Docker or registry needed (archives in ~/.cache/dagflow/images).
	$(BUILD_LOCAL) build

.PHONY: images-import
images-import: ## Import those archives into the containerd at DAGFLOW_CONTAINERD_ADDRESS (namespace k8s.io).
	$(BUILD_LOCAL) import

.PHONY: kind-tools
kind-tools: ## Make a Docker engine answer (Debian's docker.io, dockerd started), build kind and the kind node image.
	@$(KIND_ENV) $(KIND_SCRIPT) engine
	@$(KIND_ENV) $(KIND_SCRIPT) tools >/dev/null
	@$(KIND_ENV) $(KIND_SCRIPT) node-image

.PHONY: kind-engine-down
kind-engine-down: ## Stop the dockerd that kind-tools started (an engine started otherwise is left alone).
	@$(KIND_SCRIPT) engine-down

.PHONY: kind-up
kind-up: kind-tools ## Create the kind cluster (a CPU and a GPU worker with fake GPUs); prints its KUBECONFIG export.
	@$(KIND_ENV) $(KIND_SCRIPT) up

.PHONY: kind-down
kind-down: ## Delete the kind cluster.
	@$(KIND_ENV) $(KIND_SCRIPT) down

.PHONY: kind-load
kind-load: ## Load the operator's, the launcher's and the example pipeline's images into the kind cluster's nodes.
	@$(KIND_ENV) $(KIND_SCRIPT) load $(IMAGE) $(LAUNCHER_IMAGE) $(EXAMPLES_IMAGE)

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

.PHONY: kind-deploy
kind-deploy: venv image launcher-image examples-image kind-up kind-load ## kind-up, this checkout's images on its nodes and the chart installed there; prints the KUBECONFIG export.
	@$(MAKE) --no-print-directory deploy KUBECONFIG=$(KIND_KUBECONFIG)
	@echo "export KUBECONFIG=$(KIND_KUBECONFIG)"

# The end-to-end suite against kind: the cluster is the one in KUBECONFIG (the tests neither start nor
# stop it: DAGFLOW_TEST_CLUSTER=external) and the operator is the release deployed above
# (DAGFLOW_TEST_OPERATOR=<namespace>/<release>), stopped and started by scaling its Deployment.
# 21 tests run (about a minute on two cores): the 5 of tests/kind (the nodes, the operator under
# restricted Pod Security, exit codes and DNS, a claim's volume on both workers, the example pipeline's
# real prediction) and 16 of the 121 in tests/e2e, those that need only the API server, the CRD schema,
# the webhook and the chart's admission policy, the CLI, or the operator acting on works whose pods
# never have to finish (refused children, names held by others, quotas and Pod Security, a stop, the
# metrics): the fake image of tests/e2e/flows.py is never pulled there. The other 105 are marked
# local_cluster and not selected: they need kwok's simulated pods to run, succeed or fail as their
# sim.dagflow.dev/* annotations say (durations, exit codes, outputs, readiness), run operator processes
# of their own (webhook, peering, resilience, the chart's RBAC), need Kueue, run the examples that use
# the example image and a claim on simulated nodes (tests/kind runs ml-pipeline.yaml for real), or
# apply flows while the operator is down (the chart's webhook refuses them then).
# examples/hello.yaml names a public image (busybox): loaded into the nodes where Docker has it or can
# pull it; where no registry can be reached its test is left out (20 run then), and the run says so.
HELLO_IMAGE = $(shell awk '/image:/ {print $$2; exit}' examples/hello.yaml)
HELLO_TEST := tests/e2e/test_examples.py::test_example_runs_to_its_end[hello.yaml]
.PHONY: e2e-kind
e2e-kind: kind-deploy ## Deploy this checkout to kind and run the end-to-end suite there.
	@deselect=""; \
	if $(DOCKER) image inspect $(HELLO_IMAGE) >/dev/null 2>&1 || $(DOCKER) pull -q $(HELLO_IMAGE) >/dev/null 2>&1; then \
		$(KIND_ENV) $(KIND_SCRIPT) load $(HELLO_IMAGE); \
	else \
		echo "$(HELLO_IMAGE) cannot be had (no registry): $(HELLO_TEST) is left out"; \
		deselect="--deselect $(HELLO_TEST)"; \
	fi; \
	set -x; KUBECONFIG=$(KIND_KUBECONFIG) DAGFLOW_TEST_CLUSTER=external \
		DAGFLOW_TEST_OPERATOR=$(DEPLOY_NAMESPACE)/$(RELEASE) EXAMPLES_IMAGE=$(EXAMPLES_IMAGE) \
		DAGFLOW_KIND_CLUSTER=$(KIND_CLUSTER) \
		$(PYTEST) tests/kind tests/e2e -m 'not local_cluster' $$deselect $(PYTEST_ARGS)
