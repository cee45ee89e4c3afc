"""Statistics behind every claim the report prints, at the level of independent units: test patients and
training seeds.

Scans of one patient are not independent and neither are the test scans a classifier sees under two seeds,
so nothing here treats scans as draws: intervals come from a bootstrap that resamples test patients
(clusters) crossed with seeds (Field & Welsh 2007, "Bootstrapping clustered data"; a two-way random-effects
bootstrap), and paired tests flip the sign of per-patient differences of seed-averaged scores (a
randomisation test, Fisher 1935; Good 2005, ch. 3). "R costs nothing" is a non-inferiority claim
(Wellek 2010, "Testing Statistical Hypotheses of Equivalence and Noninferiority"): the one-sided lower
confidence bound of the paired difference must clear -margin. R_max tests ascending R in a fixed sequence,
which keeps the family-wise error at 1 - confidence without adjustment (Maurer, Hothorn & Lehmacher 1995);
the two-sided difference tests are Holm-adjusted over every R and regime (Holm 1979).

Every difference is oriented so that positive means "better than the reference" (for log-loss, lower).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score
from statsmodels.stats.multitest import multipletests

Metric = Literal["accuracy", "log_loss", "auroc"]
METRICS: tuple[Metric, ...] = ("accuracy", "log_loss", "auroc")
HIGHER_IS_BETTER = {"accuracy": True, "log_loss": False, "auroc": True}
LOG_LOSS_EPS = np.finfo(np.float64).eps  # probabilities clipped as sklearn's log_loss does
EXACT_PERMUTATION_PATIENTS = 12  # up to 2^12 sign patterns: enumerate them all instead of sampling
Verdict = Literal["non-inferior", "inferior", "inconclusive"]


@dataclass(frozen=True)
class Runs:
    """The test predictions of one training recipe under several seeds, on one fixed set of real test scans."""

    probs: np.ndarray  # (seeds, scans, classes) softmax; seed s of one Runs is paired with seed s of another
    labels: np.ndarray  # (scans,) true class indices
    patients: np.ndarray  # (scans,) patient of each scan: the unit that is resampled and permuted
    positive: int = 0  # class whose probability AUROC ranks (one-vs-rest)

    def __post_init__(self) -> None:
        if self.probs.ndim != 3 or self.probs.shape[1] != len(self.labels) or len(self.patients) != len(self.labels):
            raise ValueError(
                f"probs of shape {self.probs.shape} with {len(self.labels)} labels and {len(self.patients)} patients; "
                "expected (seeds, scans, classes) with one label and one patient per scan"
            )

    def scores(self, metric: Metric) -> np.ndarray:
        """(seeds, scans) per-scan score, higher is better: a hit (accuracy), -log p(true class) negated
        (log-loss), or the positive class's probability (AUROC, which ranks them)."""
        if metric == "accuracy":
            return (self.probs.argmax(axis=2) == self.labels).astype(np.float64)
        if metric == "log_loss":
            true = np.take_along_axis(self.probs, self.labels[None, :, None], axis=2)[..., 0]
            return np.log(np.clip(true, LOG_LOSS_EPS, 1.0))
        if metric == "auroc":
            return self.probs[..., self.positive].astype(np.float64)
        raise ValueError(f"metric={metric!r}; expected one of {list(METRICS)}")


def per_seed(runs: Runs, metric: Metric, weights: np.ndarray | None = None) -> np.ndarray:
    """The metric of every seed, on the scans as weighted: (seeds,) without weights, (draws, seeds) with
    (draws, scans) multiplicities. Log-loss comes back as a loss (lower is better), as it is reported."""
    scores = runs.scores(metric)
    if metric == "auroc":
        positive = runs.labels == runs.positive
        if weights is None:
            return np.array([roc_auc_score(positive, s) for s in scores])
        return np.array([[roc_auc_score(positive, s, sample_weight=w) for s in scores] for w in weights])
    sign = 1.0 if HIGHER_IS_BETTER[metric] else -1.0
    if weights is None:
        return sign * scores.mean(axis=1)
    return sign * (weights @ scores.T) / weights.sum(axis=1, keepdims=True)


def point(runs: Runs, metric: Metric) -> float:
    """The metric on every test scan, averaged over seeds."""
    return float(per_seed(runs, metric).mean())


@dataclass(frozen=True)
class Draws:
    """One set of bootstrap draws, shared by every run compared with each other (that is what pairs them)."""

    weights: np.ndarray  # (draws, scans) how often each scan's patient was drawn
    seeds: np.ndarray  # (draws, seeds) seed indices drawn with replacement


def cluster_draws(
    patients: np.ndarray, *, n_seeds: int, resamples: int, seed: int, strata: np.ndarray | None = None
) -> Draws:
    """`resamples` draws of test patients (with replacement, each drawn patient bringing all its scans)
    crossed with draws of seeds (with replacement). With `strata` (one value per scan; a patient's stratum is
    that of its first scan), each stratum's patients are drawn separately, so every draw keeps the test set's
    make-up, e.g. its classes (a draw without one class has no AUROC)."""
    _, first, cluster = np.unique(np.asarray(patients), return_index=True, return_inverse=True)
    n_patients = len(first)
    rng = np.random.default_rng(seed)
    cluster_strata = (
        np.zeros(n_patients, dtype=int)
        if strata is None
        else np.unique(np.asarray(strata)[first], return_inverse=True)[1]
    )
    counts = np.zeros((resamples, n_patients))
    for stratum in np.unique(cluster_strata):
        members = np.flatnonzero(cluster_strata == stratum)
        counts[:, members] = rng.multinomial(len(members), np.full(len(members), 1.0 / len(members)), size=resamples)
    return Draws(weights=counts[:, cluster], seeds=rng.integers(0, n_seeds, size=(resamples, n_seeds)))


def bootstrap(runs: Runs, metric: Metric, draws: Draws) -> np.ndarray:
    """(draws,) the metric averaged over each draw's seeds, on each draw's patients."""
    values = per_seed(runs, metric, draws.weights)
    return np.take_along_axis(values, draws.seeds, axis=1).mean(axis=1)


def interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    """Two-sided percentile interval at `confidence`."""
    alpha = (1 - confidence) / 2
    return float(np.quantile(values, alpha)), float(np.quantile(values, 1 - alpha))


def improvement(candidate: np.ndarray | float, reference: np.ndarray | float, metric: Metric):
    """candidate - reference, oriented so that positive is better (a log-loss drop is positive)."""
    return (np.asarray(candidate) - reference) * (1.0 if HIGHER_IS_BETTER[metric] else -1.0)


@dataclass(frozen=True)
class NonInferiority:
    """One candidate against the reference: the paired improvement and what it shows at `margin`."""

    delta: float  # improvement on all test scans, mean over seeds (positive: better)
    lower: float  # one-sided lower confidence bound of the improvement
    upper: float  # one-sided upper confidence bound
    half_width: float  # delta - lower: the smallest margin this comparison could clear were delta 0
    verdict: Verdict  # non-inferior: lower > -margin; inferior: upper < -margin; else inconclusive


def non_inferiority(delta: float, delta_draws: np.ndarray, *, margin: float, confidence: float) -> NonInferiority:
    """The non-inferiority verdict of a paired improvement from its bootstrap draws (percentile bounds at
    one-sided level `confidence`)."""
    lower = float(np.quantile(delta_draws, 1 - confidence))
    upper = float(np.quantile(delta_draws, confidence))
    verdict: Verdict = "non-inferior" if lower > -margin else "inferior" if upper < -margin else "inconclusive"
    return NonInferiority(delta=delta, lower=lower, upper=upper, half_width=max(delta - lower, 0.0), verdict=verdict)


@dataclass(frozen=True)
class FixedSequence:
    """R_max from non-inferiority verdicts tested in ascending R, stopping at the first that is not shown."""

    shown: int  # largest R with every R' <= R non-inferior (0: none)
    stopped_at: int | None  # the first R not shown non-inferior; None when every R was
    stop_verdict: Verdict | None  # its verdict: inferior (a real cost) or inconclusive (the data cannot tell)

    @property
    def r_max(self) -> int | None:
        """`shown`, unless the sequence stopped at an inconclusive R: then the test set cannot say where
        accuracy starts to drop at this margin, and there is no number to give."""
        return None if self.stop_verdict == "inconclusive" else self.shown


def fixed_sequence(verdicts: dict[int, Verdict]) -> FixedSequence:
    """Test R ascending (R=0, the reference, excluded); the first R that is not non-inferior ends it."""
    shown = 0
    for ratio in sorted(verdicts):
        if verdicts[ratio] != "non-inferior":
            return FixedSequence(shown=shown, stopped_at=ratio, stop_verdict=verdicts[ratio])
        shown = ratio
    return FixedSequence(shown=shown, stopped_at=None, stop_verdict=None)


def _auroc_rows(scores: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """AUROC of every row of (rows, scans) scores (Mann-Whitney U from average ranks, ties counted half)."""
    ranks = rankdata(scores, axis=1)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    return (ranks[:, positive].sum(axis=1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def _sign_patterns(n_patients: int, permutations: int, rng: np.random.Generator) -> tuple[np.ndarray, bool]:
    """(patterns, patients) of +-1 (every pattern when few patients, else random ones) and whether exact."""
    if n_patients <= EXACT_PERMUTATION_PATIENTS:
        grid = (np.arange(2**n_patients)[:, None] >> np.arange(n_patients)[None, :]) & 1
        return 1 - 2 * grid, True
    return rng.choice(np.array([-1, 1]), size=(permutations, n_patients)), False


def paired_permutation_p(
    candidate: Runs, reference: Runs, metric: Metric, *, permutations: int, seed: int, chunk: int = 512
) -> float:
    """Two-sided p-value of "candidate and reference score the same" from swapping the two runs' predictions
    within each test patient (all seeds at once). For the per-scan metrics this flips the sign of each
    patient's summed, seed-averaged difference; a scan never counts twice however many seeds there are.
    Exact over every swap pattern for up to EXACT_PERMUTATION_PATIENTS patients, else Monte Carlo with the
    observed statistic counted among the permutations (p >= 1 / (permutations + 1); Phipson & Smyth 2010)."""
    if candidate.probs.shape != reference.probs.shape or not np.array_equal(candidate.patients, reference.patients):
        raise ValueError("paired runs must have the same seeds, scans and patients")
    _, cluster = np.unique(candidate.patients, return_inverse=True)
    rng = np.random.default_rng(seed)
    patterns, exact = _sign_patterns(int(cluster.max()) + 1, permutations, rng)
    a, b = candidate.scores(metric), reference.scores(metric)
    if metric == "auroc":
        positive = candidate.labels == candidate.positive

        def statistic(signs: np.ndarray) -> np.ndarray:  # (patterns, patients) -> (patterns,)
            swap = (signs[:, cluster] < 0)[:, None, :]  # (patterns, 1, scans)
            first, second = np.where(swap, b[None], a[None]), np.where(swap, a[None], b[None])
            shape = first.shape
            auc = lambda s: _auroc_rows(s.reshape(-1, shape[2]), positive).reshape(shape[:2]).mean(axis=1)  # noqa: E731
            return auc(first) - auc(second)
    else:
        per_patient = np.bincount(cluster, weights=(a - b).mean(axis=0))

        def statistic(signs: np.ndarray) -> np.ndarray:
            return signs @ per_patient

    observed = abs(float(statistic(np.ones((1, int(cluster.max()) + 1)))[0]))
    tolerance = 1e-12 * max(1.0, observed)
    extreme = sum(
        int((np.abs(statistic(patterns[i : i + chunk])) >= observed - tolerance).sum())
        for i in range(0, len(patterns), chunk)
    )
    return extreme / len(patterns) if exact else (extreme + 1) / (len(patterns) + 1)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values (step-down Bonferroni; Holm 1979), in the input's order."""
    if not len(p_values):
        return []
    return [float(p) for p in multipletests(list(p_values), method="holm")[1]]
