#!/usr/bin/env bash
# The local Kubernetes cluster: real etcd, kube-apiserver, kube-controller-manager and kube-scheduler,
# with nodes and pods played by kwok, and one real node (real-node.sh) where the machine can run it.
# With DAGFLOW_KUEUE=1, up also installs and starts Kueue (kueue.sh); a cluster that has it keeps it.
# up and start also start its storage provisioner (storage.sh: the default StorageClass dagflow-local).
# Up and start also start the cluster's object store (store.sh: versitygw, the bucket dagflow).
# Usage: cluster.sh up|down|stop|start|status|env|dir
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"
cluster_name="${DAGFLOW_CLUSTER_NAME:-dagflow}"
cache_root="${DAGFLOW_CACHE:-$HOME/.cache/dagflow}"
export KWOK_WORKDIR="$cache_root/kwok"
kubeconfig="$KWOK_WORKDIR/clusters/$cluster_name/kubeconfig.yaml"

log() { printf '[cluster] %s\n' "$*" >&2; }

bin_dir="$("$here/build.sh" bin-dir)"
# kwokctl and the tests use the venv's kubectl, which matches the control plane's version.
export PATH="$bin_dir:$repo/.venv/bin:$PATH"
export KWOK_KUBECTL_BINARY="${KWOK_KUBECTL_BINARY:-$repo/.venv/bin/kubectl}"

is_up() {
  [[ -f "$kubeconfig" ]] && kubectl --kubeconfig "$kubeconfig" --request-timeout=5s get --raw /readyz >/dev/null 2>&1
}

# The simulated nodes. A Node's status is only taken from the object that creates it; a cluster made
# when they reported something else gets their status applied too (server-side, to the subresource).
apply_nodes() {
  # As the real node's kubelet reports it: without the tag's leading v.
  local nodes; nodes="$(sed "s|@CONTAINERD_VERSION@|${CONTAINERD_VERSION#v}|g" "$here/nodes.yaml")"
  kubectl --kubeconfig "$kubeconfig" apply -f - <<<"$nodes" >/dev/null
  kubectl --kubeconfig "$kubeconfig" apply --server-side --force-conflicts --field-manager dagflow-nodes \
    --subresource status -f - <<<"$nodes" >/dev/null
}

wait_for_nodes() {
  local i
  for i in $(seq 1 120); do
    local ready
    ready="$(kubectl --kubeconfig "$kubeconfig" get nodes --no-headers 2>/dev/null | awk '$2=="Ready"' | wc -l)"
    if [[ "$ready" -ge 4 ]]; then return 0; fi
    sleep 0.5
  done
  log "Nodes did not become Ready:"; kubectl --kubeconfig "$kubeconfig" get nodes >&2 || true
  return 1
}

wait_for_api() {
  local i
  for i in $(seq 1 240); do
    if is_up; then return 0; fi
    sleep 0.5
  done
  log "The API server did not become ready"; return 1
}

wait_for_default_service_account() {
  local i
  for i in $(seq 1 120); do
    if kubectl --kubeconfig "$kubeconfig" -n default get serviceaccount default >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  log "The default ServiceAccount never appeared"; return 1
}

# A restarted kwok controller has a new identity and would wait for the old one's node leases to expire
# before it plays the nodes' pods again; deleting the leases hands the nodes over at once.
release_node_leases() {
  kubectl --kubeconfig "$kubeconfig" -n kube-node-lease delete leases --all >/dev/null 2>&1 || true
}

# How a cluster is made: the kwokctl arguments below, stages.yaml and kwokctl.yaml. A cluster made
# another way (an older checkout) is made anew, as kwokctl keeps these from the day it was created.
create_args() {
  local audit_args=()
  # DAGFLOW_AUDIT=1: the API server writes an audit log (logs/audit.log in the cluster's folder).
  if [[ "${DAGFLOW_AUDIT:-0}" == "1" ]]; then audit_args=(--kube-audit-policy "$here/audit-policy.yaml"); fi
  # For the real node (real-node.sh): kwok plays only the nodes annotated as fake, so it leaves
  # real-0 to its kubelet. The Service range is the API server's default, named so that the
  # certificate's SAN in kwokctl.yaml stays right. PodNodeSelector and PodTolerationRestriction
  # (added to the default admission plugins) let a namespace's annotations send all of its pods
  # to the real node.
  # shellcheck disable=SC2054 # the commas belong to a flag's value
  local real_node_args=(
    --extra-args kwok-controller=manage-all-nodes=false
    --extra-args kwok-controller=manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake
    --extra-args kube-apiserver=service-cluster-ip-range=10.0.0.0/24
    --extra-args kube-apiserver=enable-admission-plugins=PodNodeSelector,PodTolerationRestriction
  )
  # enable-aggregator-routing: the API server calls a webhook registered as a Service at one of
  # the Service's endpoints, as no kube-proxy routes ClusterIPs here. leader-elect=false: the one
  # controller-manager and scheduler keep running through an API server that stops answering for
  # a while (with leader election they would exit once their lease could not be renewed).
  printf '%s\n' --runtime binary \
    --disable-qps-limits \
    --extra-args kube-apiserver=enable-aggregator-routing=true \
    --extra-args kube-controller-manager=leader-elect=false \
    --extra-args kube-scheduler=leader-elect=false \
    "${real_node_args[@]}" \
    --heartbeat-factor 1 --node-lease-duration-seconds 20 \
    "${audit_args[@]}"
}

config_fingerprint() {
  # Contents, not paths: the same cluster serves every checkout of the project.
  { create_args | sed "s|$here|.|"; cat "$here/stages.yaml" "$here/kwokctl.yaml"; } | sha256sum | cut -d' ' -f1
}

fingerprint_file() { echo "$KWOK_WORKDIR/clusters/$cluster_name/dagflow-config.sha256"; }

create() {
  log "Creating cluster $cluster_name"
  local args
  mapfile -t args < <(create_args)
  kwokctl create cluster --name "$cluster_name" \
    --kubeconfig "$kubeconfig" \
    --etcd-binary "$bin_dir/etcd" \
    --kube-apiserver-binary "$bin_dir/kube-apiserver" \
    --kube-controller-manager-binary "$bin_dir/kube-controller-manager" \
    --kube-scheduler-binary "$bin_dir/kube-scheduler" \
    --kwok-controller-binary "$bin_dir/kwok" \
    "${args[@]}" \
    --config "$here/stages.yaml" --config "$here/kwokctl.yaml" \
    --wait 2m >&2
  config_fingerprint >"$(fingerprint_file)"
}

made_as_now() {
  [[ "$(cat "$(fingerprint_file)" 2>/dev/null)" == "$(config_fingerprint)" ]]
}

up() {
  "$here/build.sh" all >/dev/null
  if [[ -d "$KWOK_WORKDIR/clusters/$cluster_name" ]] && ! made_as_now; then
    log "Cluster $cluster_name was made with another configuration (stages, arguments); making it anew"
    down
  fi
  if is_up; then
    log "Cluster $cluster_name is already running"
  elif [[ -d "$KWOK_WORKDIR/clusters/$cluster_name" ]]; then
    log "Starting the stopped cluster $cluster_name"
    kwokctl start cluster --name "$cluster_name" >&2
    wait_for_api
    release_node_leases
  else
    create
  fi
  apply_nodes
  wait_for_nodes
  wait_for_default_service_account
  start_real_node
  start_storage
  start_kueue
  "$here/store.sh" up || log "The object store did not start (see above)"
  log "Cluster $cluster_name is ready"
  echo "export KUBECONFIG=$kubeconfig"
}

# The real node real-0 (real-node.sh), unless DAGFLOW_REAL_NODE=0. Where the machine cannot run
# one, the cluster goes on with its simulated nodes; DAGFLOW_REAL_NODE=1 makes that an error.
start_real_node() {
  if [[ "${DAGFLOW_REAL_NODE:-}" == "0" ]]; then return 0; fi
  local started=$SECONDS code=0
  "$here/real-node.sh" up || code=$?
  if [[ "$code" == 0 ]]; then
    log "The real node added $((SECONDS - started)) s"
    return 0
  fi
  if [[ "${DAGFLOW_REAL_NODE:-}" == "1" ]]; then
    log "DAGFLOW_REAL_NODE=1 but the real node did not start"; return 1
  fi
  if [[ "$code" == 3 ]]; then
    log "Going on with the simulated nodes only"
  else
    log "The real node failed to start (see above); going on with the simulated nodes only"
  fi
}

# The storage provisioner (storage.sh), whether or not the real node serves the cluster: its volumes
# are folders of this machine, which every node mounts. A cluster where it does not start keeps the
# StorageClass; its claims wait.
start_storage() {
  "$here/storage.sh" up || log "The storage provisioner did not start (see above): claims of class dagflow-local wait"
}

stop_storage() { "$here/storage.sh" stop || log "Could not stop the storage provisioner"; }

# Kueue (kueue.sh) with DAGFLOW_KUEUE=1; without, it is started again only where it was installed
# before, as its webhooks would refuse every Job while its manager is away.
start_kueue() {
  if [[ "${DAGFLOW_KUEUE:-0}" == "1" ]]; then
    "$here/kueue.sh" up
  else
    "$here/kueue.sh" start
  fi
}

stop_kueue() { "$here/kueue.sh" stop || log "Could not stop Kueue"; }

# Stops the real node if it serves this cluster (it goes back to the cluster it came from).
release_real_node() {
  if [[ -x "$here/real-node.sh" ]]; then "$here/real-node.sh" release || log "Could not stop the real node"; fi
}

down() {
  "$here/store.sh" down || log "Could not remove the object store"
  stop_kueue
  stop_storage
  release_real_node
  # The cluster's volume folders, once the real node has stopped the pods that used them.
  "$here/storage.sh" down || log "Could not remove the cluster's volumes"
  if [[ -d "$KWOK_WORKDIR/clusters/$cluster_name" ]]; then
    kwokctl delete cluster --name "$cluster_name" >&2
  fi
  log "Cluster $cluster_name is gone"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  stop) "$here/store.sh" stop || log "Could not stop the object store"; stop_kueue; stop_storage; release_real_node; kwokctl stop cluster --name "$cluster_name" >&2 ;;
  start)
    kwokctl start cluster --name "$cluster_name" >&2; wait_for_api; release_node_leases; wait_for_nodes
    start_real_node
    start_storage
    start_kueue
    "$here/store.sh" up || log "The object store did not start (see above)"
    ;;
  status) if is_up; then echo "running"; else echo "stopped"; exit 1; fi ;;
  env) echo "export KUBECONFIG=$kubeconfig" ;;
  dir) echo "$KWOK_WORKDIR/clusters/$cluster_name" ;;
  *) echo "usage: $0 up|down|stop|start|status|env|dir" >&2; exit 2 ;;
esac
