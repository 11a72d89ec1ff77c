#!/usr/bin/env bash
# Renders a campaign's report.html in headless Chromium, saves a screenshot next to it
# (report.png), and fails if the page logged a console error or a request failed (a
# self-contained report makes none).
#
#   scripts/screenshot-report.sh DIR [WIDTH] [HEIGHT]
#
# Chromium comes from Debian's packages: apt-get update && apt-get install -y chromium
set -euo pipefail
dir="${1:?usage: scripts/screenshot-report.sh DIR [WIDTH] [HEIGHT]}"
width="${2:-1100}"
height="${3:-5200}"
html="$(cd "$dir" && pwd)/report.html"
[ -f "$html" ] || { echo "error: $html does not exist; run \`sculpt report $dir\` first" >&2; exit 1; }
browser="$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)"
[ -n "$browser" ] || { echo "error: no Chromium found; install it with: apt-get install -y chromium" >&2; exit 1; }
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
shot="$(dirname "$html")/report.png"
"$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars --no-first-run \
    --disable-extensions --disable-background-networking --enable-logging=stderr --v=0 \
    --window-size="$width,$height" --virtual-time-budget=3000 \
    --screenshot="$shot" "file://$html" >"$log" 2>&1 || { cat "$log" >&2; exit 1; }
if grep -E 'CONSOLE|Uncaught|Failed to load resource|net::ERR' "$log" >/dev/null; then
    echo "error: the report logged console errors or failed requests:" >&2
    grep -E 'CONSOLE|Uncaught|Failed to load resource|net::ERR' "$log" >&2
    exit 1
fi
echo "wrote $shot (${width}x${height}; no console errors, no failed requests)"
