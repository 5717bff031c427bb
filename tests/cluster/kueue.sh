#!/usr/bin/env bash
# Kueue on the local cluster: its manager built from Kueue's Go module, run as a process on this
# machine against the cluster's kubeconfig (like the control plane's processes), its CRDs and
# webhooks installed, and the queues the tests use (kueue-queues.yaml).
#
#   kueue.sh build    build the manager and copy its CRDs and webhook manifests into the cache
#                     (~/.cache/dagflow/kueue-<version>/); nothing to do when they are there
#   kueue.sh up       build, install Kueue into the cluster, start the manager and make the queues
#   kueue.sh start    start the manager again if Kueue is installed in the cluster and it is not running
#   kueue.sh stop     stop the manager (cluster.sh down and stop call this); its webhooks stay and
#                     refuse every Job until it runs again
#   kueue.sh down     stop the manager and remove its webhooks: Jobs are created as without Kueue (its
#                     CRDs, queues and Workloads stay, inert); `up` brings it back
#   kueue.sh status   whether the manager runs for this cluster (exit 0: it does)
#   kueue.sh dir      the folder of this cluster's manager: config, certificates, log, pid
#
# The cluster is the one named by DAGFLOW_CLUSTER_NAME (default dagflow).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"
# shellcheck source=host.sh
source "$here/host.sh"
cluster_name="${DAGFLOW_CLUSTER_NAME:-dagflow}"
cache_root="${DAGFLOW_CACHE:-$HOME/.cache/dagflow}"
kueue_root="$cache_root/kueue-$KUEUE_VERSION"
cluster_dir="$cache_root/kwok/clusters/$cluster_name"
kubeconfig="$cluster_dir/kubeconfig.yaml"
# Inside the cluster's folder, so deleting the cluster deletes it too.
state="$cluster_dir/kueue"
export PATH="$repo/.venv/bin:$PATH"

log() { printf '[kueue] %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

build() {
  if [[ -x "$kueue_root/bin/kueue" && -f "$kueue_root/manifests/webhooks.yaml" ]]; then return; fi
  log "Building Kueue's manager $KUEUE_VERSION"
  local started=$SECONDS
  mkdir -p "$kueue_root/bin" "$kueue_root/manifests/crds"
  local pkg=sigs.k8s.io/kueue/pkg/version
  # Kueue's go.mod has no replace directives, so its own module builds as it is, with the dependency
  # versions Kueue was released with.
  CGO_ENABLED=0 GOFLAGS="-buildvcs=false" GOTOOLCHAIN="${GOTOOLCHAIN:-local}" GOBIN="$kueue_root/bin" \
    nice -n 10 go install -p 2 -trimpath \
    -ldflags "-s -w -X $pkg.GitVersion=$KUEUE_VERSION -X $pkg.GitCommit=module -X $pkg.BuildDate=1970-01-01T00:00:00Z" \
    "sigs.k8s.io/kueue/cmd/kueue@$KUEUE_VERSION"
  # The CRDs and the webhook manifests as generated in Kueue's own module, for the version built.
  local source_dir
  source_dir="$(go mod download -json "sigs.k8s.io/kueue@$KUEUE_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
  cp "$source_dir"/config/components/crd/bases/*.yaml "$kueue_root/manifests/crds/"
  cp "$source_dir/config/components/webhook/manifests.yaml" "$kueue_root/manifests/webhooks.yaml"
  chmod -R u+w "$kueue_root/manifests"
  log "Built Kueue $KUEUE_VERSION in $((SECONDS - started)) s"
}


free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

kube() { kubectl --kubeconfig "$kubeconfig" --request-timeout=30s "$@"; }

# The manager's pid if it runs (its command line names this cluster's config file).
pid() {
  local pid
  pid="$(cat "$state/kueue.pid" 2>/dev/null)" || return 1
  [[ -n "$pid" ]] && tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -qF -- "$state/config.yaml" && echo "$pid"
}

ready() {
  curl -fsS --max-time 2 "http://127.0.0.1:$(cat "$state/health-port")/readyz" >/dev/null 2>&1
}

# Kueue's certificate rotator keeps the webhooks' serving certificate in its Secret and waits for the
# files in its certDir, where a pod has that Secret mounted and the kubelet keeps them in sync. With no
# kubelet in between, this copies them (only when they changed: the webhook server reloads on change).
mount_certs() {
  local crt key
  crt="$(kube -n kueue-system get secret kueue-webhook-server-cert -o 'jsonpath={.data.tls\.crt}' 2>/dev/null)" || return 1
  key="$(kube -n kueue-system get secret kueue-webhook-server-cert -o 'jsonpath={.data.tls\.key}' 2>/dev/null)" || return 1
  [[ -n "$crt" && -n "$key" ]] || return 1
  if [[ "$(base64 -d <<<"$crt")" == "$(cat "$state/certs/tls.crt" 2>/dev/null)" ]]; then return 0; fi
  (
    umask 077
    base64 -d <<<"$key" >"$state/certs/tls.key.new"
    base64 -d <<<"$crt" >"$state/certs/tls.crt.new"
  )
  mv "$state/certs/tls.key.new" "$state/certs/tls.key"
  mv "$state/certs/tls.crt.new" "$state/certs/tls.crt"
}

# Kueue's configuration (config.kueue.x-k8s.io/v1beta2) for a manager on this machine: its ports are
# free ones (several local clusters may each run one), its webhook server listens on the address the
# EndpointSlice names, its certificates live in this cluster's folder.
write_config() {
  local ip="$1" webhook_port="$2" health_port="$3" metrics_port="$4"
  cat >"$state/config.yaml" <<YAML
apiVersion: config.kueue.x-k8s.io/v1beta2
kind: Configuration
namespace: kueue-system
health:
  healthProbeBindAddress: 127.0.0.1:$health_port
metrics:
  bindAddress: 127.0.0.1:$metrics_port
webhook:
  host: $ip
  port: $webhook_port
  certDir: $state/certs
# One manager per cluster. Without leader election it keeps running through an API server that stops
# answering for a while, as the controller-manager and the scheduler do here.
leaderElection:
  leaderElect: false
# Kueue's own certificate management (as installed by its manifests): it keeps the serving certificate
# in the Secret kueue-webhook-server-cert and its CA in the webhook configurations and the CRDs.
internalCertManagement:
  enable: true
  webhookServiceName: kueue-webhook-service
  webhookSecretName: kueue-webhook-server-cert
clientConnection:
  qps: 50
  burst: 100
# Only Jobs carrying kueue.x-k8s.io/queue-name are queued.
manageJobsWithoutQueueName: false
integrations:
  frameworks:
  - batch/job
featureGates:
  # The on-demand visibility API is an aggregated API server of its own (an APIService, its own
  # Service, delegated authentication): not set up here.
  VisibilityOnDemand: false
YAML
}

# `kubectl wait` fails, rather than waits, while a brand-new CRD has no conditions yet.
wait_for_crds() {
  local crds i
  mapfile -t crds < <(kube get crd -l app.kubernetes.io/name=kueue -o name)
  for i in $(seq 1 60); do
    if kube wait --for=condition=Established --timeout=30s "${crds[@]}" >/dev/null 2>&1; then return 0; fi
    sleep 1
  done
  die "Kueue's CRDs did not become Established"
}

# Installs (or updates) Kueue's CRDs, webhooks and Service, and starts the manager; waits until its
# webhooks answer the API server. Each start takes new free ports and points the Service at them.
start() {
  if pid >/dev/null && ready; then log "Kueue runs for cluster $cluster_name"; return 0; fi
  build
  kube get --raw /readyz >/dev/null || die "Cluster $cluster_name does not answer"
  local ip; ip="$(node_ip)"
  [[ -n "$ip" ]] || die "No IPv4 address but loopback: the API server could not reach Kueue's webhooks"
  stop_manager
  mkdir -p "$state/certs"
  local webhook_port health_port metrics_port
  webhook_port="$(free_port)"; health_port="$(free_port)"; metrics_port="$(free_port)"
  write_config "$ip" "$webhook_port" "$health_port" "$metrics_port"
  echo "$health_port" >"$state/health-port"
  echo "$metrics_port" >"$state/metrics-port"
  local started=$SECONDS
  python3 "$here/kueue_manifests.py" "$kueue_root/manifests" "$ip" "$webhook_port" >"$state/install.yaml"
  kube apply --server-side --force-conflicts --field-manager dagflow-kueue -f "$state/install.yaml" >/dev/null
  # Kueue's certificate rotator fills the Secret in; it must exist.
  kube -n kueue-system get secret kueue-webhook-server-cert >/dev/null 2>&1 \
    || kube -n kueue-system create secret generic kueue-webhook-server-cert >/dev/null
  wait_for_crds
  touch "$state/installed"
  # A restart serves the certificate of the run before at once.
  mount_certs || true
  log "Starting Kueue's manager $KUEUE_VERSION (webhook $ip:$webhook_port, log $state/kueue.log)"
  KUBECONFIG="$kubeconfig" setsid "$kueue_root/bin/kueue" --config "$state/config.yaml" \
    >>"$state/kueue.log" 2>&1 </dev/null &
  echo $! >"$state/kueue.pid"
  local i
  for i in $(seq 1 240); do
    # Until it is ready, it may still make a new certificate (the first start, or one near its end).
    mount_certs || true
    if ready; then break; fi
    pid >/dev/null || die "Kueue's manager exited; see $state/kueue.log"
    sleep 0.5
  done
  ready || die "Kueue's manager did not become ready in 120 s; see $state/kueue.log"
  # Ready means its webhook server serves the certificate; the API server answers through it once the
  # CA it injected has reached the webhook configurations (a server-side dry run goes through them).
  for i in $(seq 1 120); do
    if kube create --dry-run=server -o name -f - >/dev/null 2>&1 <<'YAML'
apiVersion: kueue.x-k8s.io/v1beta2
kind: ResourceFlavor
metadata:
  name: webhook-probe
YAML
    then
      log "Kueue is ready in $((SECONDS - started)) s"
      return 0
    fi
    sleep 0.5
  done
  die "The API server does not reach Kueue's webhooks; see $state/kueue.log"
}

up() {
  start
  kube apply -f "$here/kueue-queues.yaml" >/dev/null
  log "Queues: ClusterQueue dagflow (ResourceFlavors cpu, gpu), LocalQueue queued/default"
}

stop_manager() {
  local pid
  pid="$(pid)" || return 0
  stop_process "$pid"
}

# Started again only where it was installed: its webhooks fail closed, so a cluster with Kueue's
# webhook configurations and no manager would refuse every Job.
start_if_installed() {
  if [[ -f "$state/installed" ]]; then start; fi
}

down() {
  stop_manager
  kube delete mutatingwebhookconfiguration,validatingwebhookconfiguration -l app.kubernetes.io/name=kueue \
    --ignore-not-found >/dev/null
  rm -f "$state/installed"
  log "Kueue's manager stopped and its webhooks removed from cluster $cluster_name"
}

case "${1:-}" in
  build) build ;;
  down) down ;;
  up) up ;;
  start) start_if_installed ;;
  stop) stop_manager ;;
  status) if pid >/dev/null && ready; then echo "running"; else echo "stopped"; exit 1; fi ;;
  bin-dir) echo "$kueue_root/bin" ;;
  dir) echo "$state" ;;
  *) echo "usage: $0 build|up|start|stop|down|status|bin-dir|dir" >&2; exit 2 ;;
esac
