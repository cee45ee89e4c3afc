#!/usr/bin/env bash
# A PNG of the page `dvc plots show` (no revisions) or `dvc plots diff REV...` writes, rendered headless by
# Chromium, to look at the Vega-Lite views (.dvc/plots) without a desktop or a network.
#
#   bash scripts/plots_screenshot.sh OUT.png              # the workspace's plots (dvc plots show)
#   bash scripts/plots_screenshot.sh OUT.png HEAD~3       # HEAD~3 against the workspace (dvc plots diff)
#   bash scripts/plots_screenshot.sh OUT.png main exp-1   # two revisions
#
# Needs chromium (Debian: apt-get install -y chromium; another binary: CHROMIUM=...). The page loads no
# JavaScript from a CDN: .dvc/config's plots.html_template is configs/dvc_plots/offline.html, DVC's page with
# vega, vega-lite and vega-embed inlined; the script refuses a page that would fetch a script. Window size
# (CSS pixels): WIDTH (default 1400) and HEIGHT (default 3000); the PNG holds what fits in it.
set -euo pipefail
[[ $# -ge 1 && $1 == *.png ]] || { echo "usage: bash $0 OUT.png [revisions...]" >&2; exit 2; }
out=$(realpath "$1")
shift
cd "$(dirname "$0")/.."
chromium=${CHROMIUM:-chromium}
command -v "$chromium" >/dev/null || { echo "$chromium not found: apt-get install -y chromium, or set CHROMIUM" >&2; exit 2; }

page=$(mktemp -d)
trap 'rm -rf "$page"' EXIT
if [[ $# -eq 0 ]]; then
  dvc plots show -o "$page" >/dev/null
else
  dvc plots diff "$@" -o "$page" >/dev/null
fi
if grep -Eq '<script[^>]+src="https?://' "$page/index.html"; then
  echo "$page/index.html loads scripts from the network (plots.html_template unset?): it would render blank" >&2
  exit 1
fi
# --virtual-time-budget: the screenshot waits until the page's scripts have drawn every view
"$chromium" --headless --no-sandbox --disable-gpu --hide-scrollbars --virtual-time-budget=10000 \
  --window-size="${WIDTH:-1400},${HEIGHT:-3000}" --screenshot="$out" "file://$page/index.html" 2>/dev/null
[[ -s $out ]] || { echo "chromium wrote no $out" >&2; exit 1; }
echo "$out"
