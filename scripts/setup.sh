#!/usr/bin/env bash
# Create .venv in the repo root and install fedgc with everything it needs.
# torch is installed first, pinned, so that pip takes the CPU build on this
# machine instead of resolving an unpinned torch to a multi-gigabyte CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# pip warns once per missing local mirror folder; keep its real errors, drop that noise.
pip_install() {
  .venv/bin/python -m pip install --quiet --disable-pip-version-check "$@" 2> >(grep -v '^WARNING: Location' >&2)
}
pip_install --upgrade pip
pip_install "torch==2.13.0"
pip_install -e ".[dev]"
echo "fedgc is set up in .venv" >&2
