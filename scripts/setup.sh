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
# pip compiles the modules it copies into the venv, not an editable install's, and where
# PYTHONDONTWRITEBYTECODE is set (as on the team's machines) Python never caches them itself: every
# command would compile fedgc's ~100 modules again, 0.25 s before it starts. Python reads the cache
# even when it writes none, and recompiles (in memory) any module edited since.
.venv/bin/python -m compileall -q fedgc clients server flwr_internals
# The HTML report (fedgc inspect --html, fedgc serve) inlines plotly.js. Its cartesian bundle from the npm
# registry draws everything the report draws and is a third of the full bundle the plotly package ships,
# so a report opens about twice as fast; without it the pages fall back to the full bundle.
PLOTLY_JS="plotly.js-cartesian-dist-min@4.1.1"
vendor=fedgc/report/web/assets/vendor
if [ "$(cat "$vendor/VERSION" 2>/dev/null)" != "$PLOTLY_JS" ] || [ ! -s "$vendor/plotly-cartesian.min.js" ]; then
  command -v npm >/dev/null 2>&1 || { echo "scripts/setup.sh: npm is needed to fetch $PLOTLY_JS (the HTML report's plotly.js)" >&2; exit 1; }
  tmp="$(mktemp -d)"
  (cd "$tmp" && npm pack --silent "$PLOTLY_JS" >/dev/null && tar -xzf ./*.tgz)
  mkdir -p "$vendor"
  cp "$tmp/package/plotly-cartesian.min.js" "$tmp/package/LICENSE" "$vendor/"
  echo "$PLOTLY_JS" > "$vendor/VERSION"
  rm -rf "$tmp"
fi
echo "fedgc is set up in .venv" >&2
