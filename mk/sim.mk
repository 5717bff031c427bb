##@ Simulation
SEEDS ?= 1000
START ?= 0
SEED ?=
KEEP ?=

.PHONY: sim
sim: venv ## Seeded histories of the simulated cluster: SEEDS=N from START=0, or replay SEED=S (and KEEP=steps; NO_GATES=1 for a history found before flows had approval gates).
	$(PY) -m tests.sim.run $(if $(SEED),--seed $(SEED) $(if $(KEEP),--keep $(KEEP) --verbose),--seeds $(SEEDS) --start $(START)) $(if $(NO_GATES),--no-gates)
