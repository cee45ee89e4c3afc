#!/usr/bin/env bash
# Quick start: install synthratio into .venv, put the embedded OCT phantom in data/raw (unless data is
# already there) and run the whole pipeline with DVC. No network beyond the package index, no GPU.
set -euo pipefail
cd "$(dirname "$0")"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install --quiet --no-compile -r requirements.txt -e '.[dev]'  # no .pyc up front: a minute less
source .venv/bin/activate
python scripts/make_phantom.py
dvc repro
python scripts/show_results.py   # the answer in a few lines; the whole of it: plots/report.md
