#!/usr/bin/env bash
# The study's method at its real size, rehearsed on the CPU: a pipeline with Stable Diffusion 1.5's shapes and
# random weights (scripts/save_sd15.py, 3.8 GB) is fine-tuned by the latent backend at 512 px, fully and with
# LoRA, sampled with classifier-free guidance, judged, and the classifiers (torchvision resnet18 at 224 px) and
# the report run on its scans: two DVC experiments (dvc exp run --temp: the workspace stays as it is) on a small
# phantom whose scans are 496 px high, as Kermany's are. A few steps and scans each: it shows that every stage
# runs at SD 1.5's sizes and what each costs (the table at the end: wall time and peak memory per stage); its
# numbers mean nothing, and its report says so (report.preset=rehearsal).
#
#     bash scripts/rehearse_sd15.sh     # after quickstart.sh's install; about 25 minutes on two cores, 16 GB RAM
#
# REHEARSAL_DIR (default .cache/rehearsal, git-ignored) holds the SD folder, the phantom and the logs.
set -euo pipefail
cd "$(dirname "$0")/.."
source .venv/bin/activate
dir=$(realpath -m "${REHEARSAL_DIR:-.cache/rehearsal}")
mkdir -p "$dir"
[ -f "$dir/sd15-random/model_index.json" ] || python scripts/save_sd15.py "$dir/sd15-random"

REHEARSAL=(
    -S report.preset=rehearsal
    # 24 patients per class, 3 scans each, 512-1024 px wide and 496 high: squeezed to 512 px, enlarged 1.03x;
    # 6 of them in val, so that FID's patient-disjoint halves of the held-out CNV scans hold 3 patients each
    -S paths.raw.kermany="$dir/raw"
    -S phantom.patients.train=8 -S phantom.patients.val=4 -S phantom.patients.test=12 -S 'phantom.widths=[512,768,1024]'
    -S prepare.val_fraction=0.25 -S prepare.test_fraction=0.35
    # the study's generator (README: The latent backend), at 512 px, for 2 steps on 4 scans (and their mirrors)
    -S finetune.backend=latent -S finetune.pretrained="$dir/sd15-random" -S finetune.image_size=512
    -S finetune.beta_schedule=pretrained -S finetune.prediction_type=pretrained -S finetune.learning_rate=0.0001
    -S finetune.steps=2 -S finetune.batch_size=1 -S finetune.max_images=4 -S finetune.checkpoint_every=1
    -S finetune.gradient_checkpointing=true
    # 8 scans in 2 sampling steps with guidance 7.5 (params.yaml's), judged against real scans at 512 px
    -S generate.num_images=8 -S generate.inference_steps=2 -S generate.batch_size=4
    -S evaluate.nearest_k=3 -S evaluate.kid_subset_size=4 -S evaluate.detector_epochs=1 -S evaluate.bootstrap=100
    # a torchvision classifier at 224 px, one epoch, two seeds (the report's bounds need two), one regime and R
    -S classifier.arch=resnet18 -S classifier.image_size=224 -S classifier.epochs=1
    -S 'sweep.ratios=[100]' -S 'sweep.keep=[100]' -S 'sweep.generator_seeds=[0]' -S 'sweep.seeds=[0,1]'
    -S report.bootstrap=100
)
python scripts/make_phantom.py "${REHEARSAL[@]}"
python -m synthratio.config "${REHEARSAL[@]}" -S finetune.lora_rank=8
for variant in full lora; do
    rank=$([ "$variant" = full ] && echo 0 || echo 8)
    echo "rehearsal: SD-1.5-shaped latent backend, $variant fine-tune (finetune.lora_rank=$rank); log: $dir/$variant.log"
    dvc exp remove "sd15-$variant" > /dev/null 2>&1 || true  # a rerun replaces the experiment of that name
    dvc exp run --temp -n "sd15-$variant" "${REHEARSAL[@]}" -S finetune.lora_rank=$rank 2>&1 | tee "$dir/$variant.log"
done
python benchmarks/stage_table.py "$dir/full.log" "$dir/lora.log"
echo "the two experiments: dvc exp show (sd15-full, sd15-lora); each one's answer: dvc exp apply sd15-lora && python scripts/show_results.py"
