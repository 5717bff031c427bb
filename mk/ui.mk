# The web dashboard. Included from the Makefile, which defines VENV and PYTEST. Its browser code is
# bundled into operator/dagflow/ui/static and committed (pip installs and offline clusters need no
# Node.js); tests/unit/test_ui_assets.py fails when ui/ changed and the bundle was not rebuilt.
UI_SOURCES := ui
# The browser tests write their screenshots here; `make screenshots` copies them into the docs.
SCREENSHOTS := build/screenshots
DOC_IMAGES := docs/images
SCREENSHOT_FILES := ui-flow-running.png ui-flow-serving.png

##@ Dashboard
.PHONY: ui-assets
ui-assets: ## Rebuild the dashboard's bundled browser code from ui/ (npm ci, then esbuild).
	cd $(UI_SOURCES) && npm ci --no-audit --no-fund --loglevel=error && node build.mjs

.PHONY: ui
ui: venv ## Serve the dashboard on http://127.0.0.1:8080 for the cluster in KUBECONFIG (dagflow ui).
	$(VENV)/bin/dagflow ui

.PHONY: test-browser
test-browser: venv tools ## The dashboard's browser tests in headless Chromium on the local cluster.
	$(PYTEST) tests/browser $(PYTEST_ARGS)

.PHONY: screenshots
screenshots: venv tools ## Remake the README's dashboard screenshots in docs/images (the browser test on the example).
	$(PYTEST) tests/browser/test_dashboard.py -k test_example_graph_is_drawn_and_coloured_live $(PYTEST_ARGS)
	cp $(addprefix $(SCREENSHOTS)/,$(SCREENSHOT_FILES)) $(DOC_IMAGES)/
