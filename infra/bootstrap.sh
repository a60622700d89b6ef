#!/usr/bin/env bash
# Installs what a fresh machine is missing to build and run Sluice: pnpm (pinned, without
# corepack, whose signature check fails on some registries) and the workspace's packages.
# Idempotent and quiet when everything is in place. Java, Maven and PostgreSQL binaries are
# checked by the stack itself, with a message naming what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need() { command -v "$1" >/dev/null 2>&1 || { echo "bootstrap: $1 is required: $2" >&2; exit 1; }; }
need node "install Node.js 20.19 or newer"
need npm "install npm (it ships with Node.js)"

node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a===20&&b>=19)?0:1)' \
  || { echo "bootstrap: Node.js >= 20.19 is required (found $(node -v))" >&2; exit 1; }

pnpm_version=$(node -p 'require("./package.json").packageManager.split("@")[1]')
if [ "$(pnpm --version 2>/dev/null || true)" != "$pnpm_version" ]; then
  echo "bootstrap: installing pnpm@$pnpm_version" >&2
  npm install --global --no-fund --no-audit --loglevel=error "pnpm@$pnpm_version" >&2
  hash -r
fi

# Reinstall only when the lockfile changed since the last install.
stamp=node_modules/.sluice-install-stamp
lock_hash=$(cat pnpm-lock.yaml pnpm-workspace.yaml package.json */*/package.json 2>/dev/null | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$lock_hash" ]; then
  pnpm install --frozen-lockfile --reporter=append-only >&2
  echo "$lock_hash" > "$stamp"
fi

# Installs Debian package $1 quietly, as root or through passwordless sudo; $2 says what needs it.
# A policy-rc.d that forbids starting services keeps a package's daemon (prometheus) from starting.
apt_install() {
  local package=$1 why=$2 as_root=() policy=/usr/sbin/policy-rc.d own_policy=false log
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
      as_root=(sudo -n)
    else
      echo "bootstrap: install Debian's $package package: $why" >&2
      return 0
    fi
  fi
  echo "bootstrap: installing $package (Debian package)" >&2
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | "${as_root[@]}" tee "$policy" >/dev/null
    "${as_root[@]}" chmod 755 "$policy" && own_policy=true
  fi
  log=$(mktemp)
  # Another install may hold dpkg's lock: wait for it rather than fail.
  { "${as_root[@]}" apt-get update -qq &&
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      -o DPkg::Lock::Timeout=600 --no-install-recommends "$package"; } >"$log" 2>&1 || {
    cat "$log" >&2
    if $own_policy; then "${as_root[@]}" rm -f "$policy"; fi
    exit 1
  }
  if $own_policy; then "${as_root[@]}" rm -f "$policy"; fi
  rm -f "$log"
}

# promtool checks and unit-tests infra/prometheus/sluice-alerts.yml; Chromium runs the console's
# browser tests (test/console, through playwright-core).
command -v promtool >/dev/null 2>&1 || apt_install prometheus "the alert rule tests need promtool"
[ -x /usr/bin/chromium ] || apt_install chromium "the console's browser tests need /usr/bin/chromium"

# helm and kubeconform check the chart (test/deploy), and Kubernetes' OpenAPI document gives
# kubeconform its schemas offline: built and fetched with Go into SLUICE_TOOLS_DIR, once.
tools_dir=${SLUICE_TOOLS_DIR:-$HOME/.cache/sluice-tools}
helm_version=v3.22.0 kubeconform_version=v0.8.0 kubernetes_version=v1.34.4
go_install() {
  local name=$1 module=$2 version=$3
  [ -x "$tools_dir/bin/$name" ] && [ "$(cat "$tools_dir/bin/.$name-version" 2>/dev/null)" = "$version" ] && return 0
  echo "bootstrap: building $name $version with go (a few minutes, once)" >&2
  GOBIN="$tools_dir/bin" go install "$module@$version" >&2
  echo "$version" > "$tools_dir/bin/.$name-version"
}
if command -v go >/dev/null 2>&1; then
  mkdir -p "$tools_dir/bin"
  go_install helm helm.sh/helm/v3/cmd/helm "$helm_version"
  go_install kubeconform github.com/yannh/kubeconform/cmd/kubeconform "$kubeconform_version"
  swagger="$tools_dir/kubernetes-$kubernetes_version-swagger.json"
  if [ ! -f "$swagger" ]; then
    echo "bootstrap: fetching Kubernetes $kubernetes_version's OpenAPI document" >&2
    module_dir=$(go mod download -json "k8s.io/kubernetes@$kubernetes_version" | node -e \
      'let s="";process.stdin.on("data",(d)=>s+=d).on("end",()=>console.log(JSON.parse(s).Dir))')
    install -m 644 "$module_dir/api/openapi-spec/swagger.json" "$swagger"
  fi
else
  echo "bootstrap: install Go to build helm and kubeconform: the chart's checks need them" >&2
fi
