# The demo and the example pipeline. Included from the Makefile, which defines VENV and PY (and, from
# mk/deploy.mk, DOCKER and BUILD_LOCAL).
DEMO := hack/demo.sh
EXAMPLES_IMAGE ?= dagflow/examples:0.1.0

##@ Demo
.PHONY: demo
demo: venv tools ## Local cluster + operator in the background + examples/ml-pipeline.yaml until it serves.
	@$(DEMO) up

.PHONY: demo-down
demo-down: ## Stop the operator `make demo` started and delete the local cluster.
	@$(DEMO) down

.PHONY: demo-status
demo-status: ## Say whether the demo's operator and cluster are running.
	@$(DEMO) status

.PHONY: run-examples
run-examples: venv ## Run the example pipeline's steps as local processes (no cluster), then one prediction.
	@PYTHON=$(PY) hack/run-examples.sh

.PHONY: examples-image
examples-image: ## Build the example pipeline's image (EXAMPLES_IMAGE): with Docker if an engine answers, else buildah.
	@if $(DOCKER) info >/dev/null 2>&1; then \
		echo "Docker engine found: $(DOCKER) build"; \
		$(DOCKER) build -t $(EXAMPLES_IMAGE) images/examples; \
	else \
		echo "No Docker engine: building with buildah ($(BUILD_LOCAL))"; \
		EXAMPLES_IMAGE=$(EXAMPLES_IMAGE) $(BUILD_LOCAL) build examples; \
	fi
