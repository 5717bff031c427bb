#!/usr/bin/env bash
# The DAGFlow demo: the local cluster, the operator and examples/ml-pipeline.yaml, followed until it
# serves. Usage: hack/demo.sh up|down|status
#
#   up      start (or reuse) the cluster and the operator, (re)run the example flow, show the outcome
#   down    stop the operator that `up` started and delete the local cluster
#   status  say what the demo left running
#
# Two modes. Where the machine runs the cluster's real node `real-0` (kubelet and containerd here),
# the images are built from their Dockerfiles and imported into the node, the operator is installed
# by its Helm chart, the pipeline really trains and serves, and a prediction is fetched from the
# serve work's Service. Otherwise (DAGFLOW_REAL_NODE=0, or no root or cgroups for a kubelet) kwok
# plays every node, the operator runs as a local process and nothing runs in a container.
#
# Settings (environment): DAGFLOW_CLUSTER_NAME (default dagflow), DAGFLOW_CACHE (default
# ~/.cache/dagflow), DAGFLOW_DEMO_NAMESPACE (default dagflow-demo), DAGFLOW_DEMO_TIMEOUT (seconds,
# default 600), DAGFLOW_REAL_NODE (0: the simulated demo even where a real node could run).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
cluster_name="${DAGFLOW_CLUSTER_NAME:-dagflow}"
cache_root="${DAGFLOW_CACHE:-$HOME/.cache/dagflow}"
namespace="${DAGFLOW_DEMO_NAMESPACE:-dagflow-demo}"
timeout="${DAGFLOW_DEMO_TIMEOUT:-600}"
state_dir="$cache_root/demo/$cluster_name"
pid_file="$state_dir/operator.pid"
log_file="$state_dir/operator.log"
ports_file="$state_dir/operator.ports"
venv="$repo/.venv"
example="$repo/examples/ml-pipeline.yaml"
flow="ml-pipeline"
flow_outcome=0   # what watching the flow ended with: 0 once it serves
claim="ml-pipeline-data"
volume="$namespace-$claim"   # PersistentVolumes are cluster-wide: the namespace keeps the name unique
real_node="real-0"
volumes_root="/var/lib/dagflow/volumes"   # local PersistentVolumes of the real node
release="dagflow"
operator_namespace="dagflow-system"
mode="simulated"
mode_reason=""

# The venv's kubectl matches the local control plane's version.
export PATH="$venv/bin:$PATH"

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
log() { printf '[demo] %s\n' "$*"; }
die() { printf '[demo] %s\n' "$*" >&2; exit 1; }

# Whether a process runs (a zombie, dead but not yet reaped, does not count).
alive() {
  [[ -r "/proc/$1/stat" ]] && [[ "$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null)" != "Z" ]]
}

# The pid in the pid file, if that process is still the operator this script started.
operator_pid() {
  [[ -f "$pid_file" ]] || return 1
  local pid
  pid="$(cat "$pid_file")"
  [[ "$pid" =~ ^[0-9]+$ ]] && alive "$pid" || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q 'dagflow-operator' || return 1
  echo "$pid"
}

free_port() {
  "$venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

http_ok() {
  "$venv/bin/python" - "$1" <<'PY' 2>/dev/null
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=2) as response:
    sys.exit(0 if response.status == 200 else 1)
PY
}

wait_until() {  # wait_until SECONDS COMMAND...: run COMMAND until it succeeds, at most SECONDS
  local seconds="$1"
  shift
  local deadline=$((SECONDS + seconds))
  until "$@"; do
    if ((SECONDS >= deadline)); then return 1; fi
    sleep 0.5
  done
}

start_cluster() {
  say "Local cluster \"$cluster_name\" (etcd, kube-apiserver, controller-manager, scheduler; kwok plays the simulated nodes)"
  local export_line
  export_line="$("$repo/tests/cluster/cluster.sh" up | tail -n 1)"
  [[ "$export_line" == "export KUBECONFIG="* ]] || die "tests/cluster/cluster.sh up did not print the KUBECONFIG export"
  export KUBECONFIG="${export_line#export KUBECONFIG=}"
  kubectl get nodes -L dagflow.dev/pool -L nvidia.com/gpu.present
}

# Real containers where the cluster has its real node, Ready; else the simulated demo, and why.
choose_mode() {
  local ready
  if [[ "${DAGFLOW_REAL_NODE:-1}" == "0" ]]; then
    mode_reason="DAGFLOW_REAL_NODE=0"
  else
    ready="$(kubectl get node "$real_node" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null || true)"
    if [[ "$ready" == "True" ]]; then
      mode="real"
    else
      mode_reason="this machine runs no real node (tests/cluster/cluster.sh said why above)"
    fi
  fi
  if [[ "$mode" == "real" ]]; then
    say "Mode: real containers on node $real_node (kubelet + containerd on this machine)"
  else
    say "Mode: simulated ($mode_reason): kwok plays every node, no container runs"
  fi
}

build_images() {
  say "Images: dagflow/operator and dagflow/examples from their Dockerfiles, imported into $real_node (no registry)"
  "$repo/images/build-local.sh" build
  "$repo/images/build-local.sh" import
}

helm_binary() {
  echo "$("$repo/tests/cluster/build.sh" bin-dir)/helm"
}

# The operator as a user installs it: its chart, in a namespace enforcing the restricted Pod Security
# Standard, on the real node (hack/real-node-values.yaml).
install_operator_chart() {
  say "Operator: helm upgrade --install $release charts/dagflow-operator -n $operator_namespace"
  stop_operator   # a local process left by a simulated demo would act beside the chart's pod
  kubectl create namespace "$operator_namespace" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
  kubectl label namespace "$operator_namespace" --overwrite \
    pod-security.kubernetes.io/enforce=restricted pod-security.kubernetes.io/enforce-version=latest >/dev/null
  # The image keeps its tag when rebuilt from changed code: its ID in a pod annotation rolls the pod.
  "$(helm_binary)" upgrade --install "$release" "$repo/charts/dagflow-operator" \
    --namespace "$operator_namespace" --values "$here/real-node-values.yaml" \
    --set-string "podAnnotations.dagflow\.dev/image-id=$("$repo/images/build-local.sh" id operator)" \
    --wait --timeout 5m
  if ! wait_until 60 kubectl get validatingwebhookconfiguration dagflow.dev -o name >/dev/null 2>&1; then
    kubectl -n "$operator_namespace" logs "deployment/$release-dagflow-operator" --tail 30 >&2 || true
    die "The operator did not register its admission webhook in 60 s"
  fi
  kubectl -n "$operator_namespace" get pods -o wide
}

# Every pod of the demo's namespace goes to the real node: the API server's PodNodeSelector and
# PodTolerationRestriction admission plugins add the node's label and toleration to each pod.
place_namespace_on_real_node() {
  kubectl annotate namespace "$namespace" --overwrite \
    "scheduler.alpha.kubernetes.io/node-selector=dagflow.dev/pool=real" \
    'scheduler.alpha.kubernetes.io/defaultTolerations=[{"key": "dagflow.dev/pool", "operator": "Equal", "value": "real", "effect": "NoSchedule"}]' >/dev/null
}

# apply_volume ACCESS_MODES SOURCE: a PersistentVolume bound in advance to the example's claim; SOURCE
# is the volume's own part of the spec (hostPath, local, ...), indented as in the spec.
apply_volume() {
  kubectl apply -f - <<YAML
apiVersion: v1
kind: PersistentVolume
metadata:
  name: $volume
  labels: {app.kubernetes.io/part-of: dagflow-demo}
spec:
  capacity: {storage: 1Gi}
  accessModes: $1
  persistentVolumeReclaimPolicy: Retain
  storageClassName: ""
  claimRef: {namespace: $namespace, name: $claim}
$2
YAML
}

# The claim's volume on the real node: a local PersistentVolume, a folder of this machine that every
# pod of the flow mounts. It starts empty on every run: the claim of an earlier run goes first (a
# volume bound to a claim is kept until the claim is gone), then the volume and its files.
prepare_local_volume() {
  local path="$volumes_root/$volume"
  kubectl -n "$namespace" delete pvc "$claim" --ignore-not-found --wait=true --timeout=120s >/dev/null
  kubectl delete pv "$volume" --ignore-not-found --wait=true --timeout=60s >/dev/null
  rm -rf "$path"
  mkdir -p "$path"
  chmod 1777 "$path"   # the example image runs as user 10001
  apply_volume "[ReadWriteOnce, ReadWriteMany]" "  local: {path: $path}
  nodeAffinity:
    required:
      nodeSelectorTerms:
      - matchExpressions:
        - {key: kubernetes.io/hostname, operator: In, values: [$real_node]}"
}

# Back to the simulated nodes: no placement on the real node, no chart operator beside the local one.
unplace_namespace() {
  kubectl annotate namespace "$namespace" --overwrite \
    scheduler.alpha.kubernetes.io/node-selector- scheduler.alpha.kubernetes.io/defaultTolerations- >/dev/null
  if "$(helm_binary)" status "$release" --namespace "$operator_namespace" >/dev/null 2>&1; then
    log "Uninstalling the operator's chart that a real-node demo installed"
    "$(helm_binary)" uninstall "$release" --namespace "$operator_namespace" --wait --timeout 2m
  fi
}

fetch_prediction() {
  local address port
  address="$(kubectl -n "$namespace" get service "$flow-serve" -o jsonpath='{.spec.clusterIP}')"
  port="$(kubectl -n "$namespace" get service "$flow-serve" -o jsonpath='{.spec.ports[0].port}')"
  say "A prediction from the served model, through its Service $flow-serve ($address:$port, routed by kube-proxy)"
  "$venv/bin/python" "$here/predict.py" "http://$address:$port" --wait 60
}

install_crd() {
  say "CRDs: DAGFlow, and kopf's peerings (where operators see each other)"
  local attempt
  for attempt in 1 2 3 4 5; do
    kubectl apply --server-side --force-conflicts -f "$repo/crds/" && break
    ((attempt < 5)) || die "Could not apply the CRD"
    log "Trying again in 2 s (a fresh API server may still be initialising its storage)"
    sleep 2
  done
  # `kubectl wait` fails, rather than waits, while a brand-new CRD has no conditions yet.
  local crds=(crd/dagflows.dagflow.dev crd/clusterkopfpeerings.kopf.dev crd/kopfpeerings.kopf.dev)
  for attempt in $(seq 30); do
    kubectl wait --for=condition=Established "${crds[@]}" --timeout=60s >/dev/null 2>&1 && return 0
    sleep 1
  done
  kubectl wait --for=condition=Established "${crds[@]}" --timeout=5s >/dev/null
}

webhook_points_at() {
  kubectl get validatingwebhookconfiguration dagflow.dev \
    -o jsonpath='{.webhooks[*].clientConfig.url}' 2>/dev/null | grep -q ":$1/"
}

start_operator() {
  say "Operator"
  mkdir -p "$state_dir"
  local pid health_port="" metrics_port="" webhook_port=""
  if pid="$(operator_pid)"; then
    # shellcheck source=/dev/null
    [[ -f "$ports_file" ]] && source "$ports_file"
    if [[ -n "$health_port" ]] && http_ok "http://127.0.0.1:$health_port/healthz"; then
      log "The operator of an earlier run is still running (pid $pid); reusing it."
      return
    fi
    log "The operator of an earlier run (pid $pid) does not answer its health check; restarting it."
    stop_operator
  fi
  health_port="$(free_port)"
  metrics_port="$(free_port)"
  webhook_port="$(free_port)"
  printf 'health_port=%s\nmetrics_port=%s\nwebhook_port=%s\n' \
    "$health_port" "$metrics_port" "$webhook_port" >"$ports_file"
  printf '\n--- %s: operator started by hack/demo.sh against cluster %s\n' "$(date -u +%FT%TZ)" \
    "$cluster_name" >>"$log_file"
  # A session of its own, so Ctrl-C in this terminal does not stop it; `make demo-down` does.
  DAGFLOW_METRICS_PORT="$metrics_port" DAGFLOW_WEBHOOK_PORT="$webhook_port" \
    setsid "$venv/bin/dagflow-operator" --liveness "http://127.0.0.1:$health_port/healthz" \
    >>"$log_file" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$pid_file"
  local deadline=$((SECONDS + 60))
  until http_ok "http://127.0.0.1:$health_port/healthz"; do
    if ! alive "$pid" || ((SECONDS >= deadline)); then
      tail -n 30 "$log_file" >&2
      die "The operator did not become healthy; its log is $log_file"
    fi
    sleep 0.5
  done
  # A crashed operator leaves its webhook configuration behind; wait until it points at this one.
  if ! wait_until 30 webhook_points_at "$webhook_port"; then
    tail -n 30 "$log_file" >&2
    die "The operator did not register its admission webhook in 30 s; its log is $log_file"
  fi
  log "Started the operator: pid $pid, log $log_file"
  log "  health http://127.0.0.1:$health_port/healthz, metrics http://127.0.0.1:$metrics_port/metrics, webhook port $webhook_port"
}

stop_operator() {
  local pid
  if ! pid="$(operator_pid)"; then
    rm -f "$pid_file"
    return
  fi
  log "Stopping the operator (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 60); do
    alive "$pid" || break
    sleep 0.5
  done
  if alive "$pid"; then
    log "The operator did not stop in 30 s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pid_file"
}

# A PersistentVolume bound in advance to the example's claim lets the claim bind and the scheduler
# place its pods (the cluster's default class would provision one too). Nothing ever mounts it.
prepare_volume() {
  local phase claim_uid claim_phase
  claim_phase="$(kubectl -n "$namespace" get pvc "$claim" -o jsonpath='{.status.phase}' 2>/dev/null || true)"
  [[ "$claim_phase" == "Bound" ]] && return
  phase="$(kubectl get pv "$volume" -o jsonpath='{.status.phase}' 2>/dev/null || true)"
  claim_uid="$(kubectl get pv "$volume" -o jsonpath='{.spec.claimRef.uid}' 2>/dev/null || true)"
  if [[ "$phase" == "Released" || "$phase" == "Failed" || ( -n "$phase" && -n "$claim_uid" ) ]]; then
    # Left bound to a claim of an earlier run that is gone: make a fresh one.
    kubectl delete pv "$volume" --wait=true --timeout=60s >/dev/null
  fi
  apply_volume "[ReadWriteMany]" "  hostPath: {path: /tmp/dagflow-demo/$namespace, type: DirectoryOrCreate}"
}

run_flow() {
  say "The example flow: examples/ml-pipeline.yaml in namespace $namespace"
  kubectl create namespace "$namespace" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
  if kubectl -n "$namespace" get dagflow "$flow" >/dev/null 2>&1; then
    log "Deleting the flow of an earlier demo (and its Jobs, Deployment and Service) to run it from the start"
    kubectl -n "$namespace" delete dagflow "$flow" --cascade=foreground --wait=true --timeout=120s
  fi
  if [[ "$mode" == "real" ]]; then
    place_namespace_on_real_node
    prepare_local_volume
  else
    unplace_namespace
    prepare_volume
  fi
  kubectl -n "$namespace" apply -f "$example"

  say "Progress (work phases: pending, RUNNING, done, SERVING, FAILED, skipped)"
  "$venv/bin/python" "$here/demo_status.py" watch "$namespace" "$flow" --timeout "$timeout" || flow_outcome=$?

  say "kubectl get dagflows -n $namespace"
  kubectl -n "$namespace" get dagflows
  if [[ "$mode" == "real" ]]; then
    say "Works (every pod on $real_node, which advertises fake GPUs as a device plugin would)"
  else
    say "Works (process and serve on CPU nodes, the GPU trainings on GPU nodes)"
  fi
  "$venv/bin/python" "$here/demo_status.py" report "$namespace" "$flow"
  say "Events of the flow (kubectl describe dagflow shows them too)"
  local uid
  uid="$(kubectl -n "$namespace" get dagflow "$flow" -o jsonpath='{.metadata.uid}')"
  kubectl -n "$namespace" get events --field-selector "involvedObject.uid=$uid" \
    --sort-by=.eventTime -o custom-columns=TYPE:.type,REASON:.reason,MESSAGE:.message
}

print_left_running() {
  local pid down="make demo-down"
  if [[ -n "${DAGFLOW_CLUSTER_NAME:-}" ]]; then down="DAGFLOW_CLUSTER_NAME=$cluster_name $down"; fi
  if [[ "$mode" == "real" ]]; then
    cat <<EOF

Left running:
  cluster   $cluster_name  (etcd, API server, controller-manager, scheduler and kwok on loopback;
            kubelet, kube-proxy and containerd of node $real_node on this machine)
  operator  Helm release $release in namespace $operator_namespace, its pod on $real_node

Look around (the venv's kubectl matches the cluster's version):
  export KUBECONFIG=$KUBECONFIG PATH=$venv/bin:\$PATH
  kubectl -n $namespace get dagflow $flow -o yaml
  kubectl -n $namespace get jobs,pods,deployments,services -o wide
  kubectl -n $namespace logs -l dagflow.dev/work=train --prefix
  kubectl -n $operator_namespace logs deployment/$release-dagflow-operator
  .venv/bin/python hack/predict.py http://\$(kubectl -n $namespace get service $flow-serve -o jsonpath='{.spec.clusterIP}'):8080

Clean up (stops the real node and deletes the cluster):
  $down
EOF
    return
  fi
  pid="$(operator_pid || echo "(not running)")"
  cat <<EOF

Left running:
  cluster   $cluster_name  (etcd, API server, controller-manager, scheduler and kwok on loopback)
  operator  pid $pid, log $log_file

Look around (the venv's kubectl matches the cluster's version):
  export KUBECONFIG=$KUBECONFIG PATH=$venv/bin:\$PATH
  kubectl -n $namespace get dagflow $flow -o yaml
  kubectl -n $namespace describe dagflow $flow
  kubectl -n $namespace get jobs,pods,deployments,services -o wide
  kubectl -n $namespace apply -f examples/hello.yaml
  tail -f $log_file

Clean up (stops that operator and deletes the cluster):
  $down
EOF
}

up() {
  [[ -x "$venv/bin/dagflow-operator" ]] || die "No venv with the operator; run \`make demo\` (or \`make venv\` first)."
  command -v setsid >/dev/null || die "setsid (util-linux) is needed to run the operator in the background"
  local started=$SECONDS
  start_cluster
  choose_mode
  install_crd
  if [[ "$mode" == "real" ]]; then
    build_images
    install_operator_chart
  else
    start_operator
  fi
  # From here on, whatever happens, say what is left running and how to stop it.
  trap print_left_running EXIT
  run_flow
  if ((flow_outcome != 0)); then
    if [[ "$mode" == "real" ]]; then
      die "The flow did not reach Serving; see \`kubectl -n $namespace describe dagflow $flow\` and \`kubectl -n $operator_namespace logs deployment/$release-dagflow-operator\`"
    fi
    die "The flow did not reach Serving; see \`kubectl -n $namespace describe dagflow $flow\` and $log_file"
  fi
  printf '\nThe flow is Serving at %s (an in-cluster address).\n' \
    "$(kubectl -n "$namespace" get dagflow "$flow" -o jsonpath='{.status.endpoint}')"
  if [[ "$mode" == "real" ]]; then
    fetch_prediction
  else
    echo "The simulated cluster runs no containers, so nothing answers there: \`make run-examples\` runs"
    echo "the same steps as local processes and asks the served model for a prediction."
  fi
  log "Mode: $mode. Done in $((SECONDS - started)) s."
}

down() {
  stop_operator
  rm -f "$ports_file"
  "$repo/tests/cluster/cluster.sh" down
  rm -rf "${volumes_root:?}/$volume"
  log "Nothing of the demo is left running. The operator's log stays at $log_file"
}

status() {
  local pid
  if pid="$(operator_pid)"; then
    log "operator process: running, pid $pid, log $log_file"
  else
    log "operator process (simulated demo): not running"
  fi
  if "$repo/tests/cluster/cluster.sh" status >/dev/null 2>&1; then
    log "cluster $cluster_name: running ($("$repo/tests/cluster/cluster.sh" env))"
    eval "$("$repo/tests/cluster/cluster.sh" env)"
    if "$(helm_binary)" status "$release" --namespace "$operator_namespace" >/dev/null 2>&1; then
      log "operator chart: Helm release $release in namespace $operator_namespace"
    fi
    log "real node: $("$repo/tests/cluster/real-node.sh" status 2>&1 | head -n 1)"
  else
    log "cluster $cluster_name: not running"
  fi
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
