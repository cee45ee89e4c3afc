#!/usr/bin/env bash
# Mutation testing of the scientific core ([tool.mutmut] in pyproject.toml) in a scratch copy of the
# repository, so mutmut's mutants/ folder never lands in the checkout.
#
#   bash tests/mutation/run.sh                 every mutant of the configured modules (one to two hours on 2 cores)
#   bash tests/mutation/run.sh --fast          the CI subset (minutes): patient split, linked-patient merge, leaks, cohorts, verdict, R_max
#   bash tests/mutation/run.sh 'synthratio.inference.x_holm__mutmut_*'   only mutants matching these globs
#
# Scratch folder: $SYNTHRATIO_MUTATION_DIR (default ${TMPDIR:-/tmp}/synthratio-mutation), laid anew each run
# (--keep reuses its cached results: only mutants of changed functions run again). One thread per worker, a
# worker per core of the two (SYNTHRATIO_MUTATION_WORKERS; each mutant's tests run alone in its worker).
# Ends with the score per module (tests/mutation/score.py) and fails when a mutant survives that
# tests/mutation/SURVIVORS.md does not explain.
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
python="${PYTHON:-$repo/.venv/bin/python}"
scratch="${SYNTHRATIO_MUTATION_DIR:-${TMPDIR:-/tmp}/synthratio-mutation}"

keep=0
globs=()
for arg in "$@"; do
    case "$arg" in
        --keep) keep=1 ;;
        --fast) mapfile -t -O "${#globs[@]}" globs < <("$python" "$repo/tests/mutation/record.py" --fast-globs) ;;  # the CI subset
        *) globs+=("$arg") ;;
    esac
done

mkdir -p "$scratch"
[ "$keep" = 1 ] || rm -rf "$scratch/mutants" "$scratch/src" "$scratch/tests"
# the files git would commit (tracked and untracked, not ignored) that the mutated tests need
(cd "$repo" && git ls-files --cached --others --exclude-standard -z -- src tests pyproject.toml params.yaml) \
    | (cd "$repo" && xargs -0 cp --parents -p -t "$scratch" 2>/dev/null || true)
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 PYTHONDONTWRITEBYTECODE=1
cd "$scratch"
"$python" -m mutmut run --max-children "${SYNTHRATIO_MUTATION_WORKERS:-2}" "${globs[@]}" > mutmut.log 2>&1 || { tail -40 mutmut.log; exit 1; }
tail -3 mutmut.log | tr '\r' '\n' | tail -2
exec "$python" "$repo/tests/mutation/score.py" "$scratch" "${globs[@]}"
