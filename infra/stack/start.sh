#!/usr/bin/env bash
# `npm start`: installs what is missing, builds, then runs the embedded stack and every service in
# the foreground (infra/stack/src/cli.ts `run`) until Ctrl-C.
#
# The cli runs as this script's child, never in its place: Ctrl-C signals the terminal's whole
# foreground process group, and npm forwards its own copy to the shell it started. This shell
# absorbs that copy while it waits for the cli, so the cli sees exactly one SIGINT per press (a
# second press kills the services instead of draining them), whichever shell /bin/sh is.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash infra/bootstrap.sh
pnpm -s build
node infra/stack/dist/cli.js run
