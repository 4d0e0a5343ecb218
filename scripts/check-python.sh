#!/usr/bin/env bash
# Refuses to build .venv on anything but Python 3.12: on 3.11 pip silently resolves seldon-core to a 2019 release.
set -euo pipefail
py="${1:-}"
if [ -z "$py" ] || ! command -v "$py" >/dev/null 2>&1; then
  echo "error: no Python 3.12 found. Install it (e.g. 'pyenv install 3.12') or run 'make PYTHON=/path/to/python3.12 ...'." >&2
  exit 1
fi
ver=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if [ "$ver" != "3.12" ]; then
  echo "error: $py is Python $ver; Sluice needs Python 3.12 (seldon-core 1.19 requires >= 3.12, and on $ver pip would" >&2
  echo "       silently install seldon-core 0.5 from 2019). Run 'make PYTHON=/path/to/python3.12 ...'." >&2
  exit 1
fi
