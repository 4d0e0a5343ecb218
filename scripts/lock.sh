#!/usr/bin/env bash
# Regenerates requirements/*.lock from pyproject.toml (`make lock`): exact versions and the sha256 of every file
# of them on PyPI, for Linux and macOS, Python 3.12. Needs the package index; installing from a lock does not
# resolve anything (`pip install --require-hashes -r requirements/<set>.lock`).
#   dev      the test extra: everything the suite needs, Seldon Core included (so numpy 1.26)  -> make setup, CI
#   serve    the serving image (serving/Dockerfile, target serving): numpy 2, no Seldon Core
#   train    training alone; gitops: the reconciler and the pipelines alone (each checked in a clean venv)
#   seldon   the serving image with Seldon Core's wrapper (target serving-seldon)
#   runtime  the pipeline steps, the reconciler, `sluice ui` and `sluice monitor` (target runtime): serve, batch,
#            train, gitops, ui, monitor,
#            DVC's S3 remote
set -euo pipefail
cd "$(dirname "$0")/.."
uv=$(realpath "${UV:-.venv/bin/uv}")
repo=$PWD
compile() {
  local name=$1
  shift
  "$uv" pip compile pyproject.toml "$@" --universal --python-version 3.12 --generate-hashes --quiet \
    --custom-compile-command "make lock" -o "$repo/requirements/$name.lock"
  echo "requirements/$name.lock: $(grep -c '==' "$repo/requirements/$name.lock") pinned"
}
# The dev venv is Python 3.12 only (seldon-core), on Linux or macOS: resolving it for later Pythons too would
# hold numpy-dependent packages back to versions that work with numpy 1.26 on every Python (an onnx that needs a
# newer ml-dtypes than it declares, for one). uv takes that restriction only from a project's pyproject.toml, so
# the dev lock is compiled from a copy that carries it.
dev=$(mktemp -d)
trap 'rm -rf "$dev"' EXIT
cp pyproject.toml README.md "$dev/"
cat >> "$dev/pyproject.toml" <<'TOML'

[tool.uv]
environments = ["python_version == '3.12' and sys_platform == 'linux'", "python_version == '3.12' and sys_platform == 'darwin'"]
TOML
(cd "$dev" && compile dev --extra test)
compile serve --extra serve
compile train --extra train
compile gitops --extra gitops
compile seldon --extra serve --extra seldon
compile runtime --extra serve --extra batch --extra train --extra gitops --extra ui --extra monitor requirements/runtime.in
