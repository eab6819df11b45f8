#!/usr/bin/env bash
# Refresh the vendored front-end files in static/vendor/ from the versions pinned in
# package.json / package-lock.json. The panel never loads anything from a CDN: run this after
# changing a pin, then commit package.json, package-lock.json and static/vendor/ together.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

cp "$ROOT/package.json" "$ROOT/package-lock.json" "$WORK/"
(cd "$WORK" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error)

copy() {  # copy SRC (inside node_modules) to DEST (inside static/vendor)
    mkdir -p "$(dirname "$ROOT/static/vendor/$2")"
    cp "$WORK/node_modules/$1" "$ROOT/static/vendor/$2"
    echo "vendored $1 -> static/vendor/$2"
}

HTMX_VERSION="$(node -p "require('$WORK/node_modules/htmx.org/package.json').version")"
copy htmx.org/dist/htmx.min.js htmx/htmx.min.js
copy htmx.org/LICENSE htmx/LICENSE
echo "$HTMX_VERSION" >"$ROOT/static/vendor/htmx/VERSION"

# noVNC (ES modules, served as they are) and xterm.js.
NOVNC="$WORK/node_modules/@novnc/novnc"
rm -rf "$ROOT/static/vendor/novnc"
mkdir -p "$ROOT/static/vendor/novnc"
cp -r "$NOVNC/core" "$NOVNC/vendor" "$ROOT/static/vendor/novnc/"
cp "$NOVNC/AUTHORS" "$NOVNC/LICENSE.txt" "$NOVNC"/docs/LICENSE* "$ROOT/static/vendor/novnc/"
echo "vendored @novnc/novnc -> static/vendor/novnc"
copy @xterm/xterm/lib/xterm.js xterm/xterm.js
copy @xterm/xterm/css/xterm.css xterm/xterm.css
copy @xterm/xterm/LICENSE xterm/LICENSE

# uPlot (charts of the Summary tabs): the IIFE build (window.uPlot) and its stylesheet.
UPLOT_VERSION="$(node -p "require('$WORK/node_modules/uplot/package.json').version")"
copy uplot/dist/uPlot.iife.min.js uplot/uPlot.iife.min.js
copy uplot/dist/uPlot.min.css uplot/uPlot.min.css
copy uplot/LICENSE uplot/LICENSE
echo "$UPLOT_VERSION" >"$ROOT/static/vendor/uplot/VERSION"
