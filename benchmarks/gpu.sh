#!/usr/bin/env bash
# Every GPU speed table of the project in one command (one device call): each script measures the bare
# model and our stage's loop in the same run and prints a markdown table. Needs CUDA; on the lent device
# machine, install the wheels first (see ../shared/tools/gpu-wheels.sh for the line to start with).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
echo "## latent backend, SD-1.5-sized UNet, 512 px, bf16";       $PY benchmarks/latent_speed.py --device cuda
echo "## pixel backend, 128 px";                                 $PY benchmarks/pixel_speed.py
echo "## classifier, resnet18 at 224 px";                        $PY benchmarks/classifier_speed.py --arch resnet18 --size 224 --batch 256 --device cuda
echo "## features, 10k scans at 512 px";                         $PY benchmarks/feature_speed.py --n 10000 --workers 16 --device cuda
