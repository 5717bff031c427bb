#!/usr/bin/env bash
# Dynamic storage for every node of the local cluster: rancher's local-path-provisioner, built from its
# Go module, run as a process on this machine against the cluster's kubeconfig (like Kueue's manager,
# kueue.sh), behind the cluster's default StorageClass `dagflow-local`. Every node of the cluster,
# simulated or real, is this one machine, so one folder of it (/var/lib/dagflow/local-path/<cluster>)
# is a filesystem that all of them share: the provisioner's shared-filesystem mode gives each claim a
# folder there that any node may mount (no node affinity; ReadWriteMany too). Deleting the claim
# deletes the volume and its folder.
#
#   storage.sh build    build the provisioner into ~/.cache/dagflow/local-path-provisioner-<version>/bin
#   storage.sh up       build, install its namespace, ServiceAccount, scripts and StorageClass
#                       (storage.yaml) and start it (cluster.sh up and start do this)
#   storage.sh start    start it again if it was installed in the cluster and it is not running
#   storage.sh stop     stop it (cluster.sh stop and down call this): claims wait until it runs again
#   storage.sh down     stop it and remove this cluster's volume folders on this machine (cluster.sh
#                       down calls this once the real node has let go of the cluster's pods)
#   storage.sh status   whether it runs for this cluster (exit 0: it does)
#   storage.sh dir      the folder of this cluster's provisioner: config, helper pod, log, pid
#   storage.sh volumes-dir  the folder of this cluster's volumes
#
# The cluster is the one named by DAGFLOW_CLUSTER_NAME (default dagflow). kind.sh runs it for a kind
# cluster, whose nodes share a folder of this machine too, with DAGFLOW_STORAGE_KUBECONFIG (its
# kubeconfig), DAGFLOW_STORAGE_DIR (the provisioner's files) and DAGFLOW_STORAGE_VOLUMES (the folder
# of the volumes, as its nodes see it; `down` then leaves the files to kind.sh).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"
# shellcheck source=host.sh
source "$here/host.sh"
cluster_name="${DAGFLOW_CLUSTER_NAME:-dagflow}"
cache_root="${DAGFLOW_CACHE:-$HOME/.cache/dagflow}"
provisioner_root="$cache_root/local-path-provisioner-$LOCAL_PATH_PROVISIONER_VERSION"
provisioner="$provisioner_root/bin/local-path-provisioner"
cluster_dir="$cache_root/kwok/clusters/$cluster_name"
kubeconfig="${DAGFLOW_STORAGE_KUBECONFIG:-$cluster_dir/kubeconfig.yaml}"
# Inside the cluster's folder, so deleting the cluster deletes it too.
state="${DAGFLOW_STORAGE_DIR:-$cluster_dir/local-path}"
# The volumes' folders on this machine, one folder per cluster. real-node.sh down and purge remove
# them all (the real node leaves nothing behind).
volumes_root=/var/lib/dagflow/local-path
volumes_dir="${DAGFLOW_STORAGE_VOLUMES:-$volumes_root/$cluster_name}"
# The one node whose helper pods really run (elsewhere kwok plays them: stages.yaml).
real_node=real-0
namespace=local-path-storage
# Not upstream's rancher.io/local-path: this one is set up for this cluster (its machine's folder, the
# local busybox image for helpers), and a StorageClass of an upstream install elsewhere never reaches it.
provisioner_name=dagflow.dev/local-path
export PATH="$repo/.venv/bin:$PATH"

log() { printf '[storage] %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

build() {
  if [[ -x "$provisioner" ]]; then return; fi
  log "Building local-path-provisioner $LOCAL_PATH_PROVISIONER_VERSION"
  local started=$SECONDS
  mkdir -p "$provisioner_root/bin"
  # Its go.mod has no replace directives, so its own module builds as it is (its vendor folder is
  # ignored in module mode).
  CGO_ENABLED=0 GOFLAGS="-buildvcs=false" GOTOOLCHAIN="${GOTOOLCHAIN:-local}" GOBIN="$provisioner_root/bin" \
    nice -n 10 go install -p 2 -trimpath -ldflags "-s -w" \
    "github.com/rancher/local-path-provisioner@$LOCAL_PATH_PROVISIONER_VERSION"
  log "Built local-path-provisioner $LOCAL_PATH_PROVISIONER_VERSION in $((SECONDS - started)) s"
}

kube() { kubectl --kubeconfig "$kubeconfig" --request-timeout=30s "$@"; }

# The provisioner's pid if it runs (its command line names this cluster's config file).
pid() {
  local pid
  pid="$(cat "$state/provisioner.pid" 2>/dev/null)" || return 1
  [[ -n "$pid" ]] && tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -qF -- "$state/config.json" && echo "$pid"
}

# Its files: the shared folder of the volumes, and its helper pod, a template it completes (node,
# folders, command, tolerations of every taint). A helper makes a volume's folder on the node that the
# claim's first pod was scheduled to, and removes it on whatever node the scheduler picks, since in
# this mode the volume names no node: real-0 is preferred, where the helper really removes the folder
# (on a simulated node kwok only plays it, and the label lets stages.yaml end it at once). v0.0.30
# takes the helper's image from here only; upstream's priorityClassName system-node-critical is left
# out, as this machine refuses the negative OOM score the kubelet gives critical pods.
write_config() {
  cat >"$state/config.json" <<JSON
{"sharedFileSystemPath": "$volumes_dir"}
JSON
  cat >"$state/helperPod.yaml" <<YAML
apiVersion: v1
kind: Pod
metadata:
  name: helper-pod
  labels:
    dagflow.dev/local-path-helper: "true"
spec:
  automountServiceAccountToken: false
  affinity:
    nodeAffinity:
      preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 100
        preference:
          matchExpressions:
          - {key: kubernetes.io/hostname, operator: In, values: [$real_node]}
  containers:
  - name: helper-pod
    image: $BUSYBOX_IMAGE
    imagePullPolicy: Never
YAML
}

config_files() { cat "$state/config.json" "$state/helperPod.yaml" 2>/dev/null || true; }

# Installs (or updates) what the provisioner needs in the cluster and starts it unless it runs with
# these files (one started by an older checkout is started anew); it is ready once it has said that
# its controller started.
start() {
  build
  kube get --raw /readyz >/dev/null || die "Cluster $cluster_name does not answer"
  mkdir -p "$state"
  kube apply --server-side --force-conflicts --field-manager dagflow-storage -f "$here/storage.yaml" >/dev/null
  touch "$state/installed"
  local before; before="$(config_files | sha256sum)"
  write_config
  if pid >/dev/null; then
    if [[ "$(config_files | sha256sum)" == "$before" ]]; then
      log "local-path-provisioner runs for cluster $cluster_name"; return 0
    fi
    log "local-path-provisioner runs with another configuration: starting it anew"
    stop
  fi
  local started=$SECONDS lines
  touch "$state/provisioner.log"
  lines="$(wc -l <"$state/provisioner.log")"
  log "Starting local-path-provisioner $LOCAL_PATH_PROVISIONER_VERSION (default StorageClass dagflow-local, volumes in $volumes_dir, log $state/provisioner.log)"
  setsid "$provisioner" --debug start --kubeconfig "$kubeconfig" --namespace "$namespace" \
    --config "$state/config.json" --helper-pod-file "$state/helperPod.yaml" \
    --configmap-name local-path-config --service-account-name local-path-helper \
    --provisioner-name "$provisioner_name" >>"$state/provisioner.log" 2>&1 </dev/null &
  echo $! >"$state/provisioner.pid"
  for _ in $(seq 1 120); do
    if tail -n +"$((lines + 1))" "$state/provisioner.log" | grep -q 'Started provisioner controller'; then
      log "local-path-provisioner is ready in $((SECONDS - started)) s"
      return 0
    fi
    pid >/dev/null || die "local-path-provisioner exited; see $state/provisioner.log"
    sleep 0.25
  done
  die "local-path-provisioner did not start its controller in 30 s; see $state/provisioner.log"
}

stop() {
  local pid
  pid="$(pid)" || return 0
  stop_process "$pid"
}

start_if_installed() {
  if [[ -f "$state/installed" ]]; then start; fi
}

down() {
  stop
  rm -f "$state/installed"
  if [[ -z "${DAGFLOW_STORAGE_VOLUMES:-}" && -d "$volumes_dir" ]]; then
    rm -rf "$volumes_dir"
    rmdir "$volumes_root" 2>/dev/null || true
    log "Removed the volumes of cluster $cluster_name ($volumes_dir)"
  fi
}

case "${1:-}" in
  build) build ;;
  up) start ;;
  start) start_if_installed ;;
  stop) stop ;;
  down) down ;;
  status) if pid >/dev/null; then echo "running"; else echo "stopped"; exit 1; fi ;;
  dir) echo "$state" ;;
  volumes-dir) echo "$volumes_dir" ;;
  *) echo "usage: $0 build|up|start|stop|down|status|dir|volumes-dir" >&2; exit 2 ;;
esac
