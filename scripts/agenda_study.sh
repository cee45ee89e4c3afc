#!/usr/bin/env bash
# The study's agenda on real scans (README: "The agenda on real scans"), as queued `dvc exp run`s.
#
#   bash scripts/agenda_study.sh rank [variant...]    # queue generator variants (all by default) up to evaluate_synthetic
#   bash scripts/agenda_study.sh sweep default laplace   # queue the full ratio sweep of the named variants
#   dvc queue start -j 1 && dvc queue status          # run them (one worker: two cores)
#   python scripts/agenda_findings.py                 # the findings table from `dvc exp show --json`
#
# Every run uses the same real-data preset on top of the committed params.yaml: the Kermany sample (SAMPLE,
# default ../shared/kermany-sample; any folder of class folders will do, e.g. one of symlinks to several
# samples) re-split by patient with larger validation and test sets than the phantom's, one cohort (all real CNV
# training patients), three generator seeds and five classifier seeds. Every experiment trains one generator per
# generator seed, so a variant is judged as a recipe, not by one generator. "rank" runs stop at the
# synthetic-scan figures of every generator (the stage group evaluate_synthetic), which are taken against the
# validation split (evaluate.real_split: val): no test scan is looked at to choose a variant. "sweep" runs add
# the classifiers (every classifier seed on every generator's scans) and the report on the test split.
set -euo pipefail
cd "$(dirname "$0")/.."

SAMPLE=$(realpath "${SAMPLE:-../shared/kermany-sample}")
[[ -d $SAMPLE/CNV ]] || { echo "SAMPLE=$SAMPLE has no CNV folder: point SAMPLE at the Kermany sample" >&2; exit 2; }
PRESET=(
  -S "paths.raw.kermany=$SAMPLE"
  -S prepare.val_fraction=0.3 -S prepare.test_fraction=0.35
  -S "sweep.keep=[100]" -S "sweep.seeds=[0,1,2,3,4]" -S "sweep.generator_seeds=[0,1,2]"
  -S runtime.progress=false
  # the study's reference ("default") is params.yaml's unconditional generator, pinned so that rerunning the
  # study reproduces its rows whatever params.yaml's default becomes
  -S finetune.class_conditional=false
)

# Variant name -> its overrides of the preset.
declare -A VARIANTS=(
  [default]=""
  [linear]="finetune.beta_schedule=linear"
  [scaled_linear]="finetune.beta_schedule=scaled_linear"
  [sigmoid]="finetune.beta_schedule=sigmoid"
  [laplace]="finetune.beta_schedule=laplace"
  [ztsnr]="finetune.zero_terminal_snr=true"
  [minsnr5]="finetune.snr_gamma=5"
  [noise]="generate.noise_injection=true"
  [ema]="finetune.ema_decay=0.995"
  [steps1200]="finetune.steps=1200"
  [classcond]="finetune.class_conditional=true"
  [wide]="finetune.block_channels=[64,128,128] finetune.layers_per_block=2"
  [px64]="finetune.image_size=64"
  [linear_ema]="finetune.beta_schedule=linear finetune.ema_decay=0.995"  # the two best single changes together
  [classcond_linear]="finetune.class_conditional=true finetune.beta_schedule=linear"
  # classifier-free guidance: 10 % of the labels dropped to a null class; sampled unguided, at 2 and at 3
  [classcond_drop]="finetune.class_conditional=true finetune.label_dropout=0.1"
  [classcond_cfg2]="finetune.class_conditional=true finetune.label_dropout=0.1 generate.class_guidance_scale=2"
  [classcond_cfg3]="finetune.class_conditional=true finetune.label_dropout=0.1 generate.class_guidance_scale=3"
  # curation: scans the seed-1 real-only classifier is less sure are CNV than of 95 % (75 %) of real val CNV left out
  [classcond_curate5]="finetune.class_conditional=true curate.real_quantile=0.05"
  [classcond_curate25]="finetune.class_conditional=true curate.real_quantile=0.25"
  # sweep only: classifier and detector at 64 px too, so its figures are not comparable with the ranked ones
  [px64all]="finetune.image_size=64 classifier.image_size=64 evaluate.detector_image_size=64"
  [px64all_classcond]="finetune.class_conditional=true finetune.image_size=64 classifier.image_size=64 evaluate.detector_image_size=64"
  # sweep only, the scarce-class question: four classes, a class-conditional generator trained on all of them,
  # synthetic DRUSEN (35 scans in the sample) added on top of the real ones
  [drusen4]="prepare.classes=[CNV,DME,DRUSEN,NORMAL] finetune.class_conditional=true finetune.target_class=DRUSEN sweep.synthetic_class=DRUSEN mix.mode=add sweep.ratios=[100,300]"
  # both scarce classes at once (35 DRUSEN, 40 DME): one generator samples each, each added on top of its real ones
  [scarce4]="prepare.classes=[CNV,DME,DRUSEN,NORMAL] finetune.class_conditional=true finetune.target_class=[DME,DRUSEN] sweep.synthetic_class=[DME,DRUSEN] mix.mode=add sweep.ratios=[100,300]"
)
ORDER=(default linear scaled_linear sigmoid laplace ztsnr minsnr5 noise ema steps1200 classcond wide px64 linear_ema classcond_linear
  classcond_drop classcond_cfg2 classcond_cfg3 classcond_curate5 classcond_curate25)  # ranked

overrides() {  # -S flags of one variant
  [[ -v VARIANTS[$1] ]] || { echo "unknown variant '$1'; known: ${!VARIANTS[*]}" >&2; exit 2; }
  local setting
  for setting in ${VARIANTS[$1]}; do printf '%s\0' -S "$setting"; done
}

queue() {  # queue <phase> <variant> [target]
  local flags=()
  mapfile -d '' flags < <(overrides "$2")
  dvc exp run --queue -n "$1-$2" "${PRESET[@]}" "${flags[@]}" ${3:+"$3"}
}

case ${1:-} in
  rank)
    shift
    (($#)) || set -- "${ORDER[@]}"
    for name in "$@"; do overrides "$name" >/dev/null; done
    for name in "$@"; do queue rank "$name" evaluate_synthetic; done  # the group: every generator of keep 100
    ;;
  sweep)
    shift
    (($#)) || { echo "name the variants to sweep, e.g. sweep default laplace" >&2; exit 2; }
    for name in "$@"; do overrides "$name" >/dev/null; done  # every name checked before any is queued
    for name in "$@"; do queue sweep "$name"; done
    ;;
  *) echo "usage: $0 rank [variant...] | sweep <variant>... (variants: ${!VARIANTS[*]})" >&2; exit 2 ;;
esac
