"""The web dashboard: `dagflow ui` serves it on localhost; the chart can run it in the cluster.

The pure parts (`views`) turn flows, Jobs, pods and Events into what the pages show; `access` says
whose identity each request reads with; `hub` keeps one watch per namespace and fans it out to the
browsers; `server` is the Starlette application; `static/` holds the bundled browser code, built
from `ui/` at the top of the repository by `make ui-assets`.
"""
