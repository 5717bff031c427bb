#!/usr/bin/env bash
# An S3-compatible object store for the local cluster: versitygw (an S3 gateway over a POSIX folder),
# built from its Go module, run as a process on this machine (like Kueue's manager, kueue.sh), one per
# cluster, with the bucket `dagflow`. Pods reach it through the Service dagflow-store/store, whose
# EndpointSlice points at this machine's address; a namespace is pointed at it with its own user, a
# ConfigMap dagflow-artifacts and a Secret (`store.sh namespace NAME`).
#
#   store.sh build            build versitygw into ~/.cache/dagflow/versitygw-<version>/bin
#   store.sh up               build, start the gateway (root credentials made once per cluster), make
#                             the bucket and the Service pods use (cluster.sh up and start do this)
#   store.sh start            the same as up: every step is idempotent
#   store.sh stop             stop the gateway (cluster.sh stop and down call this); its data stays
#   store.sh down             stop it, delete its data, users and credentials, and its Service
#   store.sh status           whether the gateway runs for this cluster (exit 0: it does)
#   store.sh dir              the gateway's folder: data/ (one folder per bucket), iam/, credentials, log
#   store.sh env [NAMESPACE]  `export AWS_...` lines for a client on this machine (aws, boto3): the
#                             root user's, or the user of a namespace that `namespace` pointed at it
#   store.sh namespace NAME   point a namespace at the store (made if missing; idempotent): its own
#                             user, the ConfigMap dagflow-artifacts and the Secret it names; prints
#                             that namespace's `env`
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
gateway_root="$cache_root/versitygw-$VERSITYGW_VERSION"
gateway="$gateway_root/bin/versitygw"
cluster_dir="$cache_root/kwok/clusters/$cluster_name"
kubeconfig="$cluster_dir/kubeconfig.yaml"
# Inside the cluster's folder, so deleting the cluster deletes it too.
state="$cluster_dir/store"
bucket=dagflow
region=us-east-1
# Where pods find it: a Service without a selector, its EndpointSlice at this machine's address.
service_namespace=dagflow-store
service=store
service_port=7070
# What `namespace` makes in a namespace (the names the artifacts contract reads).
configmap=dagflow-artifacts
secret=dagflow-artifacts-credentials
labels='app.kubernetes.io/name: dagflow-store, app.kubernetes.io/managed-by: dagflow-local-cluster'
export PATH="$repo/.venv/bin:$PATH"

log() { printf '[store] %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

build() {
  if [[ -x "$gateway" ]]; then return; fi
  log "Building versitygw $VERSITYGW_VERSION"
  local started=$SECONDS
  mkdir -p "$gateway_root/bin"
  # Its go.mod has no replace directives, so its own module builds as it is.
  CGO_ENABLED=0 GOFLAGS="-buildvcs=false" GOTOOLCHAIN="${GOTOOLCHAIN:-local}" GOBIN="$gateway_root/bin" \
    nice -n 10 go install -p 2 -trimpath \
    -ldflags "-s -w -X main.Version=$VERSITYGW_VERSION -X main.Build=module -X main.BuildTime=1970-01-01T00:00:00Z" \
    "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION"
  log "Built versitygw $VERSITYGW_VERSION in $((SECONDS - started)) s"
}


# A port free on every address (the gateway listens on loopback and on this machine's address), or $1
# when that one is free.
free_port() {
  python3 - "${1:-0}" <<'PY'
import socket, sys
for port in (int(sys.argv[1]), 0):
    s = socket.socket()
    # As the gateway binds it: a port whose last connections wait in TIME_WAIT is free.
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("0.0.0.0", port))
    except OSError:
        continue
    print(s.getsockname()[1])
    break
PY
}

random_hex() { python3 -c "import secrets; print(secrets.token_hex($1))"; }

kube() { kubectl --kubeconfig "$kubeconfig" --request-timeout=30s "$@"; }

# The gateway's pid if it runs (its command line names this cluster's data folder).
pid() {
  local pid
  pid="$(cat "$state/versitygw.pid" 2>/dev/null)" || return 1
  [[ -n "$pid" ]] && tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -qF -- "$state/data" && echo "$pid"
}

port() { cat "$state/port" 2>/dev/null; }

ready() {
  curl -fsS --max-time 2 "http://127.0.0.1:$(port)/health" >/dev/null 2>&1
}

# The root user's keys, made once per cluster and kept (owner-only) in its folder.
root_credentials() {
  if [[ ! -f "$state/root.env" ]]; then
    (
      umask 077
      printf 'ACCESS_KEY_ID=%s\nSECRET_ACCESS_KEY=%s\n' "root-$(random_hex 8)" "$(random_hex 20)" >"$state/root.env.new"
    )
    mv "$state/root.env.new" "$state/root.env"
  fi
}

# KEY from a credentials file (ACCESS_KEY_ID or SECRET_ACCESS_KEY).
credential() { sed -n "s/^$2=//p" "$1"; }

# The admin CLI of versitygw against this gateway's admin port (loopback only), as the root user.
admin() {
  ADMIN_ACCESS_KEY_ID="$(credential "$state/root.env" ACCESS_KEY_ID)" \
    ADMIN_SECRET_ACCESS_KEY="$(credential "$state/root.env" SECRET_ACCESS_KEY)" \
    ADMIN_ENDPOINT_URL="http://127.0.0.1:$(cat "$state/admin-port")" ADMIN_REGION="$region" \
    "$gateway" admin "$@"
}

start_gateway() {
  if pid >/dev/null && ready; then return 0; fi
  stop
  mkdir -p "$state/data" "$state/iam"
  root_credentials
  local ip port admin_port listen
  ip="$(node_ip)"
  # The same port as before when it is free, so that clients on this machine keep their endpoint.
  port="$(free_port "$(port || echo 0)")"
  admin_port="$(free_port)"
  echo "$port" >"$state/port"
  echo "$admin_port" >"$state/admin-port"
  listen=(--port "127.0.0.1:$port")
  if [[ -n "$ip" ]]; then
    listen+=(--port "$ip:$port")
    echo "$ip" >"$state/node-ip"
  else
    log "No IPv4 address but loopback: pods cannot reach the store"
    rm -f "$state/node-ip"
  fi
  local started=$SECONDS
  log "Starting versitygw $VERSITYGW_VERSION (port $port, data $state/data, log $state/versitygw.log)"
  # Root keys through the environment, not the command line. The admin API (users) on loopback only.
  ROOT_ACCESS_KEY_ID="$(credential "$state/root.env" ACCESS_KEY_ID)" \
    ROOT_SECRET_ACCESS_KEY="$(credential "$state/root.env" SECRET_ACCESS_KEY)" \
    setsid "$gateway" "${listen[@]}" --admin-port "127.0.0.1:$admin_port" --region "$region" \
    --iam-dir "$state/iam" --health /health posix "$state/data" \
    >>"$state/versitygw.log" 2>&1 </dev/null &
  echo $! >"$state/versitygw.pid"
  for _ in $(seq 1 120); do
    if ready; then
      log "versitygw is ready in $((SECONDS - started)) s"
      return 0
    fi
    pid >/dev/null || die "versitygw exited; see $state/versitygw.log"
    sleep 0.25
  done
  die "versitygw did not answer in 30 s; see $state/versitygw.log"
}

# The Service pods use and its EndpointSlice at this machine's address and the gateway's port (both
# change from one start to the next; the Service's address and port do not).
apply_service() {
  local ip
  ip="$(cat "$state/node-ip" 2>/dev/null)" || return 0
  # After a `down`, its namespace may still be going away, with whatever is made in it.
  for _ in $(seq 1 120); do
    [[ "$(kube get namespace "$service_namespace" -o 'jsonpath={.status.phase}' 2>/dev/null)" == Terminating ]] || break
    sleep 0.5
  done
  kube apply --server-side --force-conflicts --field-manager dagflow-store -f - >/dev/null <<YAML
apiVersion: v1
kind: Namespace
metadata:
  name: $service_namespace
  labels: {$labels}
---
apiVersion: v1
kind: Service
metadata:
  name: $service
  namespace: $service_namespace
  labels: {$labels}
spec:
  ports:
  - {name: s3, port: $service_port, protocol: TCP, targetPort: $(port)}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: $service-host
  namespace: $service_namespace
  # Not the EndpointSlice controller's: it leaves a slice of a Service without a selector alone.
  labels: {$labels, kubernetes.io/service-name: $service}
addressType: IPv4
endpoints:
- addresses: ["$ip"]
  conditions: {ready: true}
ports:
- {name: s3, port: $(port), protocol: TCP}
YAML
}

up() {
  build
  mkdir -p "$state"
  start_gateway
  # The bucket, owned by the root user (already there: fine).
  local out
  if ! out="$(admin create-bucket --owner "$(credential "$state/root.env" ACCESS_KEY_ID)" --bucket "$bucket" 2>&1)" \
    && ! grep -q BucketAlreadyOwnedByYou <<<"$out"; then
    die "Could not make the bucket $bucket: $out"
  fi
  if kube get --raw /readyz >/dev/null 2>&1; then
    apply_service
  else
    log "Cluster $cluster_name does not answer: the Service $service_namespace/$service was not updated"
  fi
  log "Object store of cluster $cluster_name: bucket $bucket at http://127.0.0.1:$(port) (pods: the Service $service_namespace/$service)"
}

stop() {
  local pid
  pid="$(pid)" || return 0
  stop_process "$pid"
}

down() {
  stop
  # The Service goes too (cluster.sh down deletes the cluster anyway); the namespaces' ConfigMaps and
  # Secrets stay, with keys no store knows: `namespace` writes new ones.
  if [[ -f "$kubeconfig" ]] && kubectl --kubeconfig "$kubeconfig" --request-timeout=5s get --raw /readyz >/dev/null 2>&1; then
    kube delete namespace "$service_namespace" --ignore-not-found --wait=false >/dev/null || true
  fi
  if [[ -d "$state" ]]; then
    rm -rf "$state"
    log "Removed the object store of cluster $cluster_name (its data, users and credentials)"
  fi
}

# `export` lines for a client on this machine, with the keys of credentials file $1.
print_env() {
  cat <<ENV
export AWS_ENDPOINT_URL=http://127.0.0.1:$(port)
export AWS_ACCESS_KEY_ID=$(credential "$1" ACCESS_KEY_ID)
export AWS_SECRET_ACCESS_KEY=$(credential "$1" SECRET_ACCESS_KEY)
export AWS_DEFAULT_REGION=$region
ENV
}

env_of() {
  [[ -f "$state/root.env" ]] || die "No object store for cluster $cluster_name: run $0 up"
  if [[ -z "${1:-}" ]]; then
    print_env "$state/root.env"
  else
    [[ -f "$state/namespaces/$1.env" ]] || die "Namespace $1 has no user of the store: run $0 namespace $1"
    print_env "$state/namespaces/$1.env"
  fi
}

# A user per namespace (role user: no admin API, no bucket of its own), its keys kept in
# namespaces/NAME.env; the bucket's policy lets every such user read, write, list and delete objects.
namespace() {
  local name="$1"
  [[ "$name" =~ ^[a-z0-9]([-a-z0-9]*[a-z0-9])?$ && ${#name} -le 63 ]] || die "Not a namespace name: $name"
  if ! pid >/dev/null || ! ready; then die "The object store of cluster $cluster_name does not run: run $0 up"; fi
  python3 -c 'import boto3' 2>/dev/null || die "No boto3 for $(command -v python3) (it writes the bucket's policy): make venv"
  mkdir -p "$state/namespaces"
  # One at a time: the bucket's policy is read, changed and written back.
  exec 9>"$state/namespaces.lock"
  flock 9
  local file="$state/namespaces/$name.env"
  if [[ ! -f "$file" ]]; then
    (
      umask 077
      printf 'ACCESS_KEY_ID=%s\nSECRET_ACCESS_KEY=%s\n' "ns-$name" "$(random_hex 20)" >"$file.new"
    )
    mv "$file.new" "$file"
  fi
  local access_key secret_key out
  access_key="$(credential "$file" ACCESS_KEY_ID)"
  secret_key="$(credential "$file" SECRET_ACCESS_KEY)"
  # A user that is there already (its keys file was lost) gets the keys of the file.
  if ! out="$(admin create-user --access "$access_key" --secret "$secret_key" --role user 2>&1)"; then
    grep -q XAdminUserExists <<<"$out" || die "Could not make the user of namespace $name: $out"
    admin update-user --access "$access_key" --secret "$secret_key" --role user >/dev/null
  fi
  local principals=()
  for file in "$state"/namespaces/*.env; do principals+=("$(credential "$file" ACCESS_KEY_ID)"); done
  eval "$(print_env "$state/root.env")"
  python3 "$here/store_policy.py" "$bucket" "${principals[@]}"
  flock -u 9
  local endpoint
  endpoint="$(kube -n "$service_namespace" get service "$service" -o 'jsonpath={.spec.clusterIP}')" \
    || die "No Service $service_namespace/$service: run $0 up"
  kube get namespace "$name" >/dev/null 2>&1 || kube create namespace "$name" >/dev/null
  kube apply --server-side --force-conflicts --field-manager dagflow-store -f - >/dev/null <<YAML
apiVersion: v1
kind: ConfigMap
metadata:
  name: $configmap
  namespace: $name
  labels: {$labels}
data:
  endpoint: "http://$endpoint:$service_port"
  bucket: "$bucket"
  secretName: "$secret"
  region: "$region"
---
apiVersion: v1
kind: Secret
metadata:
  name: $secret
  namespace: $name
  labels: {$labels}
type: Opaque
data:
  accessKeyId: "$(printf '%s' "$access_key" | base64 -w0)"
  secretAccessKey: "$(printf '%s' "$secret_key" | base64 -w0)"
YAML
  log "Namespace $name uses bucket $bucket at http://$endpoint:$service_port (ConfigMap $configmap, Secret $secret)"
  env_of "$name"
}

case "${1:-}" in
  build) build ;;
  up | start) up ;;
  stop) stop ;;
  down) down ;;
  status) if pid >/dev/null && ready; then echo "running"; else echo "stopped"; exit 1; fi ;;
  dir) echo "$state" ;;
  bin-dir) echo "$gateway_root/bin" ;;
  env) env_of "${2:-}" ;;
  namespace)
    [[ -n "${2:-}" ]] || { echo "usage: $0 namespace NAME" >&2; exit 2; }
    namespace "$2"
    ;;
  *) echo "usage: $0 build|up|start|stop|down|status|dir|bin-dir|env [NAMESPACE]|namespace NAME" >&2; exit 2 ;;
esac
