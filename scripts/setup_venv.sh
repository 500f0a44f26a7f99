#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment in .venv.
#
# Fast when nothing changed: the install is keyed by a hash of the dependency files and the
# Python version, and skipped while that hash is unchanged. With ARCFLOW_VENV_CACHE set (CI
# does), the venv lives in "$ARCFLOW_VENV_CACHE/venv-<hash>" outside the clone and .venv is a
# symlink to it, so fresh clones reuse it and only the first run pays for the install.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
# the face detectors, pinned: the same file infra/Dockerfile installs
DETECTORS=requirements/detectors.txt

deps_hash=$( { cat pyproject.toml "$DETECTORS" scripts/setup_venv.sh;
  "$PYTHON" -c 'import sys; print(sys.version)'; } | sha256sum | cut -c1-16)
stamp_name=".arcflow-deps-$deps_hash"

if [ -n "${ARCFLOW_VENV_CACHE:-}" ]; then
  target="$ARCFLOW_VENV_CACHE/venv-$deps_hash"
  mkdir -p "$ARCFLOW_VENV_CACHE"
  [ -L .venv ] || rm -rf .venv
else
  target=.venv
  [ -L .venv ] && rm -f .venv
fi

if [ ! -f "$target/$stamp_name" ]; then
  echo "setup: installing dependencies into $target (first run takes a few minutes)"
  rm -rf "$target"
  "$PYTHON" -m venv "$target"
  pip=("$target/bin/python" -m pip --disable-pip-version-check)
  "${pip[@]}" install -q --upgrade pip "setuptools>=77" wheel
  "${pip[@]}" install -q -e ".[test,gpu,cluster,detectors]"
  # The detectors pin torch==1.9, numpy<2 … (see the file); the code of theirs that ArcFlow
  # runs works on the versions above, so they go in without their pins. Their remaining
  # imports are the `detectors` group just installed.
  "${pip[@]}" install -q --no-deps -r "$DETECTORS"
  touch "$target/$stamp_name"
fi

[ "$target" = .venv ] || ln -sfn "$target" .venv

# A cached venv may hold an editable install of another clone: point it at this one. The
# check runs from / so that this checkout's own arcflow/ (the cwd) cannot answer for it.
if ! (here=$(pwd -P) && cd / && ARCFLOW_HERE="$here" "$here/.venv/bin/python" - <<'PY' 2>/dev/null
import os, pathlib, sys
import arcflow
here = pathlib.Path(os.environ["ARCFLOW_HERE"]).resolve()
sys.exit(pathlib.Path(arcflow.__file__).resolve().parents[1] != here)
PY
)
then
  .venv/bin/python -m pip --disable-pip-version-check install -q --no-deps \
    --no-build-isolation -e .
fi
