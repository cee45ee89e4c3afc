"""Error rates of the copying test and of the real-vs-real floor, measured by simulation.

Feature vectors with patient effects: each patient a random centre in 16 dimensions (sd 1), each scan its
centre plus scan noise (sd 0.2), so a patient's scans are near-copies of each other. The generator's
training set is 100 patients of 3 scans, the held-out real set `n_heldout` patients of 3 scans, and an
honest generator draws new patients from the same distribution, one scan each. Two sizes: about the
phantom's (40 held-out patients, 128 synthetic scans) and a small one (15 patients, 64 synthetic scans).
Every run is seeded, so the rates below are fixed numbers; each comment gives the rate measured and its
Monte-Carlo standard error (SE), and each bound leaves two to three SEs.
"""

from __future__ import annotations

import numpy as np
import pytest

from synthratio.evaluation.distances import feature_distances
from synthratio.evaluation.halves import patient_halves
from synthratio.evaluation.memorization import Memorization, copying_test, memorization

DIM, SCAN_SD = 16, 0.2  # feature dimensions; scan noise around the patient's centre (centres have sd 1)
TRAIN_PATIENTS, SCANS = 100, 3  # the generator's training patients; scans per real patient
DRAWS = 1000  # bootstrap draws of the copying test, as params.yaml's evaluate.bootstrap
ALPHA = 0.05
SIZES = {"phantom": (40, 128), "small": (15, 64)}  # held-out patients, synthetic scans


def _patients(rng: np.random.Generator, n: int, scans: int) -> tuple[np.ndarray, np.ndarray]:
    """(n * scans, DIM) rows, each patient's centre plus scan noise, and each row's patient."""
    centres = np.repeat(rng.normal(size=(n, DIM)), scans, axis=0)
    return centres + rng.normal(0, SCAN_SD, centres.shape), np.repeat(np.arange(n), scans)


def _copying_run(seed: int, n_heldout: int, n_synthetic: int, copied: float) -> tuple[float, Memorization]:
    """One simulated evaluation, as evaluate._memorization_metrics runs it: the copying test's p and the
    memorized shares; a share `copied` of the synthetic scans are training scans plus tiny noise."""
    rng = np.random.default_rng([11, seed])
    train, _ = _patients(rng, TRAIN_PATIENTS, SCANS)
    heldout, groups = _patients(rng, n_heldout, SCANS)
    synthetic, _ = _patients(rng, n_synthetic, 1)
    n_copies = round(copied * n_synthetic)
    synthetic[:n_copies] = train[rng.choice(len(train), n_copies, replace=False)] + rng.normal(0, 0.01, (n_copies, DIM))
    reference, floor = patient_halves(groups, np.random.default_rng([seed, 0]))
    found = memorization(
        synthetic, real_reference=heldout[reference], real_floor=heldout[floor], train=train, quantile=ALPHA
    )
    copying = copying_test(
        found.nearest.distance,
        found.real_distance,
        groups[np.concatenate([reference, floor])],
        draws=DRAWS,
        seed=seed,
    )
    return copying.p, found


@pytest.mark.parametrize("size", SIZES)
def test_without_copying_the_test_rejects_at_most_at_its_level(size: str):
    """No copying: p < 0.05 in at most 5 % + 2 SE of 400 runs (SE 0.011 at 5 %: bound 0.072). Measured
    0.055 +- 0.011 (phantom) and 0.050 +- 0.011 (small); 1000 runs gave 0.054 +- 0.007 and 0.041 +- 0.006.
    The exact binomial test of the memorized share that this test replaces rejected in 0.285 +- 0.023 and
    0.385 +- 0.024 of these 400 runs: its threshold is a noisy quantile of a few clustered distances. The
    memorized share and its real floor stay comparable: their mean difference is 0 within 3 SEs (measured
    -0.006 +- 0.003 and -0.009 +- 0.006 here; -0.0005 +- 0.0010 and 0.0011 +- 0.0019 over 3000 more runs)."""
    runs = 400
    results = [_copying_run(seed, *SIZES[size], copied=0.0) for seed in range(runs)]
    rate = np.mean([p < ALPHA for p, _ in results])
    assert rate <= ALPHA + 2 * np.sqrt(ALPHA * (1 - ALPHA) / runs), rate
    gap = np.array([found.share - found.share_floor for _, found in results])
    assert abs(gap.mean()) < 3 * gap.std(ddof=1) / np.sqrt(runs), gap.mean()


@pytest.mark.parametrize(("size", "copied", "found"), [("phantom", 0.25, 0.8), ("small", 0.3, 0.5)])
def test_planted_copies_are_found(size: str, copied: float, found: float):
    """A quarter (phantom size) or 30 % (small) of the synthetic scans are training scans plus tiny noise:
    p < 0.05 in 0.885 +- 0.023 and 0.735 +- 0.031 of 200 runs (1000 runs gave 0.880 +- 0.010 and 0.678 +-
    0.015). A rank test of the whole distance distribution sees a share c of copies as an AUROC of 0.5 + c/2,
    so the small set finds 30 % copies in most runs, not nearly all."""
    runs = 200
    rate = np.mean([_copying_run(seed, *SIZES[size], copied=copied)[0] < ALPHA for seed in range(runs)])
    assert rate > found, rate


@pytest.mark.parametrize("size", SIZES)
def test_a_perfect_generator_sits_below_its_floor_about_half_the_time(size: str):
    """A perfect generator draws new patients, one scan each, from the held-out patients' distribution: its
    FID against half A and the floor's (half B against A) are exchangeable once B is compared as one scan
    per patient, so its FID is below the floor in half the runs. Measured 0.52 (phantom) and 0.44 (small) of
    200 runs (SE 0.035; bounds 0.5 +- 3 SE); comparing all of B's scans, three per patient, put it below the
    floor in 0.99 and 0.93 of the same runs."""
    runs = 200
    n_heldout, n_synthetic = SIZES[size]
    below = []
    for seed in range(runs):
        rng = np.random.default_rng([7, seed])
        heldout, groups = _patients(rng, n_heldout, SCANS)
        synthetic, _ = _patients(rng, n_synthetic, 1)
        result = feature_distances(synthetic, heldout, groups, kid_subset_size=50, seed=seed)
        below.append(result["fid"] < result["fid_floor"])
    assert abs(np.mean(below) - 0.5) <= 3 * np.sqrt(0.25 / runs), np.mean(below)
    assert result["n_compared"] == result["n_compared_patients"] <= n_heldout // 2  # one scan each of B's patients
