# Kueue on the local cluster. Included from the Makefile, which defines `tools` and `cluster`.
#
#   make kueue-tools              build Kueue's manager into ~/.cache/dagflow/kueue-<version>/ (once)
#   DAGFLOW_KUEUE=1 make cluster  the local cluster with Kueue, its queues and a LocalQueue queued/default
#   make kueue                    Kueue on the running local cluster (DAGFLOW_CLUSTER_NAME, default dagflow)
#   make kueue-down               without it again
KUEUE := tests/cluster/kueue.sh

##@ Kueue
.PHONY: kueue-tools
kueue-tools: ## Build Kueue's manager from its Go module and keep its CRDs and webhook manifests (cached; pinned in versions.env).
	@$(KUEUE) build

# The tests that queue Jobs start Kueue themselves, so the suite's tools include it.
tools: kueue-tools

.PHONY: kueue
kueue: venv kueue-tools ## Install and start Kueue on the running local cluster, with its ClusterQueue and LocalQueue.
	@$(KUEUE) up

.PHONY: kueue-down
kueue-down: ## Stop the local cluster's Kueue and remove its webhooks: Jobs are created as without it (its CRDs and queues stay).
	@$(KUEUE) down
