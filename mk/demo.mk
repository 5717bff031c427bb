# The demo and the example pipeline. Included from the Makefile, which defines VENV and PY (and, from
# mk/deploy.mk, DOCKER and BUILD_IMAGE).
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
examples-image: ## Build the example pipeline's image (EXAMPLES_IMAGE): Docker, or buildah where Docker cannot (images/build-image.sh).
	@DOCKER=$(DOCKER) $(BUILD_IMAGE) examples $(EXAMPLES_IMAGE)
