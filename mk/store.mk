# The local cluster's object store. Included from the Makefile, which defines `tools` and `cluster`.
#
#   make store-tools                   build versitygw into ~/.cache/dagflow/versitygw-<version>/ (once)
#   make store                         (re)start the running cluster's store; prints the root user's
#                                      `export AWS_...` lines for aws or boto3 on this machine
#   make store-namespace NAMESPACE=ns  point a namespace at it: its own user, the ConfigMap
#                                      dagflow-artifacts and its Secret; prints that user's exports
#
# cluster.sh starts it with every cluster (DAGFLOW_CLUSTER_NAME, default dagflow).
STORE := tests/cluster/store.sh
NAMESPACE ?=

##@ Object store
.PHONY: store-tools
store-tools: ## Build the local cluster's S3 object store (versitygw from its Go module; cached, pinned in versions.env).
	@$(STORE) build

# cluster.sh starts it with the cluster, so the suite's tools include it.
tools: store-tools

.PHONY: store
store: venv store-tools ## Start the running local cluster's object store (bucket dagflow); prints its root keys as `export AWS_...`.
	@$(STORE) up
	@$(STORE) env

.PHONY: store-namespace
store-namespace: venv ## Point NAMESPACE at the local cluster's object store (ConfigMap dagflow-artifacts, Secret); prints its keys.
	@test -n "$(NAMESPACE)" || { echo "usage: make store-namespace NAMESPACE=name" >&2; exit 2; }
	@$(STORE) namespace $(NAMESPACE)
