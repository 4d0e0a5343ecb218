#!/usr/bin/env bash
# Makes sure the servers the tests start themselves (redis-server, prometheus; promtool comes with it), the
# load generator (wrk), chromium (the dashboard's browser test), kubectl (kustomize), jq (Argo CD's
# ignoreDifferences expressions are checked with it) and busybox (the image build step's script runs under
# BusyBox sh, as in BuildKit's Alpine image) are installed.
# The test fixtures start and stop their own instances on loopback; nothing here is left running.
set -euo pipefail
need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v git >/dev/null 2>&1 || need+=(git)
command -v jq >/dev/null 2>&1 || need+=(jq)
command -v busybox >/dev/null 2>&1 || need+=(busybox)
# kustomize (`kubectl kustomize`, what Argo CD runs) renders the environments the gitops tests check
command -v kubectl >/dev/null 2>&1 || need+=(kubectl)
# the dashboard's browser test drives Debian's chromium (Playwright never downloads a browser of its own)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]} (Debian packages)"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
