#!/usr/bin/env bash
# The DAGFlow demo: the local cluster, the operator in the background and examples/ml-pipeline.yaml,
# followed until it serves. Usage: hack/demo.sh up|down|status
#
#   up      start (or reuse) the cluster and the operator, (re)run the example flow, show the outcome
#   down    stop the operator that `up` started and delete the local cluster
#   status  say what the demo left running
#
# Settings (environment): DAGFLOW_CLUSTER_NAME (default dagflow), DAGFLOW_CACHE (default
# ~/.cache/dagflow), DAGFLOW_DEMO_NAMESPACE (default dagflow-demo), DAGFLOW_DEMO_TIMEOUT (seconds,
# default 300).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
cluster_name="${DAGFLOW_CLUSTER_NAME:-dagflow}"
cache_root="${DAGFLOW_CACHE:-$HOME/.cache/dagflow}"
namespace="${DAGFLOW_DEMO_NAMESPACE:-dagflow-demo}"
timeout="${DAGFLOW_DEMO_TIMEOUT:-300}"
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
  say "Local cluster \"$cluster_name\" (etcd, kube-apiserver, controller-manager, scheduler; kwok plays the nodes)"
  local export_line
  export_line="$("$repo/tests/cluster/cluster.sh" up | tail -n 1)"
  [[ "$export_line" == "export KUBECONFIG="* ]] || die "tests/cluster/cluster.sh up did not print the KUBECONFIG export"
  export KUBECONFIG="${export_line#export KUBECONFIG=}"
  kubectl get nodes -L dagflow.dev/pool -L nvidia.com/gpu.present
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

# The simulated cluster has no storage provisioner: a PersistentVolume bound in advance to the
# example's claim lets the claim bind and the scheduler place its pods. Nothing ever mounts it.
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
  kubectl apply -f - <<YAML
apiVersion: v1
kind: PersistentVolume
metadata:
  name: $volume
  labels: {app.kubernetes.io/part-of: dagflow-demo}
spec:
  capacity: {storage: 1Gi}
  accessModes: [ReadWriteMany]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: ""
  claimRef: {namespace: $namespace, name: $claim}
  hostPath: {path: /tmp/dagflow-demo/$namespace, type: DirectoryOrCreate}
YAML
}

run_flow() {
  say "The example flow: examples/ml-pipeline.yaml in namespace $namespace"
  kubectl create namespace "$namespace" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
  if kubectl -n "$namespace" get dagflow "$flow" >/dev/null 2>&1; then
    log "Deleting the flow of an earlier demo (and its Jobs, Deployment and Service) to run it from the start"
    kubectl -n "$namespace" delete dagflow "$flow" --cascade=foreground --wait=true --timeout=120s
  fi
  prepare_volume
  kubectl -n "$namespace" apply -f "$example"

  say "Progress (work phases: pending, RUNNING, done, SERVING, FAILED, skipped)"
  "$venv/bin/python" "$here/demo_status.py" watch "$namespace" "$flow" --timeout "$timeout" || flow_outcome=$?

  say "kubectl get dagflows -n $namespace"
  kubectl -n "$namespace" get dagflows
  say "Works (process and serve on CPU nodes, the GPU trainings on GPU nodes)"
  "$venv/bin/python" "$here/demo_status.py" report "$namespace" "$flow"
  say "Events of the flow (kubectl describe dagflow shows them too)"
  local uid
  uid="$(kubectl -n "$namespace" get dagflow "$flow" -o jsonpath='{.metadata.uid}')"
  kubectl -n "$namespace" get events --field-selector "involvedObject.uid=$uid" \
    --sort-by=.eventTime -o custom-columns=TYPE:.type,REASON:.reason,MESSAGE:.message
}

print_left_running() {
  local pid down="make demo-down"
  pid="$(operator_pid || echo "(not running)")"
  if [[ -n "${DAGFLOW_CLUSTER_NAME:-}" ]]; then down="DAGFLOW_CLUSTER_NAME=$cluster_name $down"; fi
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
  start_cluster
  install_crd
  start_operator
  # From here on, whatever happens, say what is left running and how to stop it.
  trap print_left_running EXIT
  run_flow
  if ((flow_outcome != 0)); then
    die "The flow did not reach Serving; see \`kubectl -n $namespace describe dagflow $flow\` and $log_file"
  fi
  printf '\nThe flow is Serving at %s (an in-cluster address).\n' \
    "$(kubectl -n "$namespace" get dagflow "$flow" -o jsonpath='{.status.endpoint}')"
  echo "The simulated cluster runs no containers, so nothing answers there: \`make run-examples\` runs"
  echo "the same steps as local processes and asks the served model for a prediction."
}

down() {
  stop_operator
  rm -f "$ports_file"
  "$repo/tests/cluster/cluster.sh" down
  log "Nothing of the demo is left running. The operator's log stays at $log_file"
}

status() {
  local pid
  if pid="$(operator_pid)"; then
    log "operator: running, pid $pid, log $log_file"
  else
    log "operator: not running"
  fi
  if "$repo/tests/cluster/cluster.sh" status >/dev/null 2>&1; then
    log "cluster $cluster_name: running ($("$repo/tests/cluster/cluster.sh" env))"
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
