#!/usr/bin/env bash
# Quick start: install synthratio into .venv, put the embedded OCT phantom in data/raw (unless data is already
# there) and run the whole pipeline as one DVC experiment on the smoke preset below. No network beyond the
# package index, no GPU.
set -euo pipefail
cd "$(dirname "$0")"
[ -x .venv/bin/python ] || python3 -m venv .venv
# pip compiles every module it installs (.pyc) once: each Python process of a run (every stage, every dvc call)
# then imports torch, diffusers and dvc in less than half the time
.venv/bin/pip install --quiet -r requirements.txt -e '.[dev]'
.venv/bin/python -m compileall -q src  # the project's own modules too (installed editable, so pip left them)
source .venv/bin/activate

# The smoke preset: the recipe's stages (params.yaml) at a size that runs in minutes on two CPU cores (half the
# patients, a third of the generator's steps, half its scans, one generator and two classifier seeds instead of
# three and five; the classifiers' recipe unchanged). Its answer says so on its first lines (report.preset=smoke,
# and that one generator's verdict is not calibrated for the recipe); the README says how to run the recipe.
SMOKE=(
    -S report.preset=smoke
    -S phantom.patients.train=50 -S phantom.patients.val=10 -S phantom.patients.test=90  # half the recipe's phantom
    -S finetune.steps=200        # recipe: 600
    -S generate.num_images=128   # recipe: 256
    -S 'sweep.generator_seeds=[0]' -S 'sweep.seeds=[0,1]'  # recipe: [0,1,2] and [0,1,2,3,4]
)
python scripts/make_phantom.py "${SMOKE[@]}"
dvc exp run "${SMOKE[@]}"
python scripts/show_results.py   # the answer in a few lines; the whole of it: plots/report.md
python scripts/compare_run.py    # against the smoke run recorded on a fresh clone (docs/quickstart/): rounding or not
echo "git status: the smoke run's params, metrics and plots over the committed recipe's ('git checkout -- .' restores those)"
