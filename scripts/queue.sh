#!/usr/bin/env bash
# Queue a DVC experiment only when its params pass synthratio's checks: every -S override (and every parameter
# set of a sweep such as `-S finetune.steps=300,600`) is applied to a copy of params.yaml and checked first
# (`python -m synthratio.config`: unknown keys with a did-you-mean, ranges, R=0 in sweep.ratios), so a typo
# never reaches the queue. Takes exactly `dvc exp run --queue`'s arguments:
#
#     bash scripts/queue.sh -n steps300 -S finetune.steps=300 evaluate_synthetic
#     dvc queue start -j 2
set -euo pipefail
overrides=()
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
    case "${args[i]}" in
        -S | --set-param) overrides+=(-S "${args[i + 1]:?"-S needs key=value"}"); i=$((i + 1)) ;;
        --set-param=*) overrides+=(-S "${args[i]#--set-param=}") ;;
        -S?*) overrides+=(-S "${args[i]#-S}") ;;
    esac
done
python -m synthratio.config "${overrides[@]}"
exec dvc exp run --queue "$@"
