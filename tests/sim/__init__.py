"""A deterministic simulation of the API server and its controllers that drives the real reconciler
through seeded histories, checking invariants after every step (docs/testing.md)."""
