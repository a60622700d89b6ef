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
