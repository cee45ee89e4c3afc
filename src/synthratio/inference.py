"""Statistics behind every claim the report prints, at the level of what a rerun of the recipe would redraw:
test patients, classifier seeds and generator seeds.

A ratio R is judged as a recipe, not as the few models one run trained. The estimate is the difference of
the two arms' metrics averaged over every model (R=0: its classifier seeds; R > 0: every generator seed
crossed with every classifier seed), and its variance is the sum of independent components (a
variance-components bound; Searle, Casella & McCulloch 1992, "Variance Components", ch. 3 for the nested
design; Bouthillier et al. 2021, "Accounting for Variance in Machine Learning Benchmarks", for why seeds
and data must both count):
- test patients: the variance of the model-averaged difference over test patients (clusters), models held
  fixed: the linearised cluster variance of a mean for per-scan metrics (accuracy, log-loss; Cameron &
  Miller 2015, "A Practitioner's Guide to Cluster-Robust Inference"), a patient bootstrap for AUROC
  (Field & Welsh 2007); n_patients - 1 degrees of freedom;
- each arm's models: with several generators, the spread of the generator means divided by their number
  (G - 1 degrees of freedom; it already carries the classifier seeds' spread within a generator); with one
  generator, the spread of the seeds divided by their number (S - 1): the verdict is then about that
  generator, not the recipe.
The bound is t-based on Satterthwaite's (1946) degrees of freedom for the sum, so two seeds (one degree of
freedom) give the wide bound they should, where resampling two seeds would halve their variance. p-values
come from the same t model, so a p and a bound never disagree.

"R costs nothing" is a non-inferiority claim (Wellek 2010, "Testing Statistical Hypotheses of Equivalence
and Noninferiority"; ICH E9, one-sided 0.025): the one-sided lower bound at level alpha must clear -margin.
R_max tests ascending R in a fixed sequence, which keeps the family-wise error at alpha without adjustment
(Maurer, Hothorn & Lehmacher 1995); several regimes split alpha equally (Bonferroni). "Inferior" (the
upper bound below -margin) is descriptive: no claim of the sequence. Every difference is oriented so that
positive means "better than the reference" (for log-loss, lower). tests/test_calibration.py checks the
stated error rates by simulation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.optimize import brentq
from scipy.stats import nct
from scipy.stats import t as student_t
from sklearn.metrics import roc_auc_score
from statsmodels.stats.multitest import multipletests

Metric = Literal["accuracy", "log_loss", "auroc"]
METRICS: tuple[Metric, ...] = ("accuracy", "log_loss", "auroc")
HIGHER_IS_BETTER = {"accuracy": True, "log_loss": False, "auroc": True}
LOG_LOSS_EPS = np.finfo(np.float64).eps  # probabilities clipped as sklearn's log_loss does
TARGET_POWER = 0.8  # the margin a run could clear with this power is printed beside the declared one
Verdict = Literal["non-inferior", "inferior", "inconclusive"]


@dataclass(frozen=True)
class Runs:
    """The test predictions of one training recipe's models, on one fixed set of real test scans."""

    probs: np.ndarray  # (models, scans, classes) softmax
    labels: np.ndarray  # (scans,) true class indices
    patients: np.ndarray  # (scans,) patient of each scan: the unit that is resampled
    positive: int = 0  # class whose probability AUROC ranks (one-vs-rest)
    generators: np.ndarray | None = None  # (models,) generator seed of each model; None: one generator (or none)

    def __post_init__(self) -> None:
        if self.probs.ndim != 3 or self.probs.shape[1] != len(self.labels) or len(self.patients) != len(self.labels):
            raise ValueError(
                f"probs of shape {self.probs.shape} with {len(self.labels)} labels and {len(self.patients)} patients; "
                "expected (models, scans, classes) with one label and one patient per scan"
            )
        if self.generators is not None and len(self.generators) != len(self.probs):
            raise ValueError(f"{len(self.generators)} generator seeds for {len(self.probs)} models; expected one each")

    @property
    def generator_groups(self) -> np.ndarray:
        """(models,) the generator of each model (all 0 without generators)."""
        return np.zeros(len(self.probs), dtype=int) if self.generators is None else np.asarray(self.generators)

    def scores(self, metric: Metric) -> np.ndarray:
        """(models, scans) per-scan score, higher is better: a hit (accuracy), -log p(true class) negated
        (log-loss), or the positive class's probability (AUROC, which ranks them)."""
        if metric == "accuracy":
            return (self.probs.argmax(axis=2) == self.labels).astype(np.float64)
        if metric == "log_loss":
            true = np.take_along_axis(self.probs, self.labels[None, :, None], axis=2)[..., 0]
            return np.log(np.clip(true, LOG_LOSS_EPS, 1.0))
        if metric == "auroc":
            return self.probs[..., self.positive].astype(np.float64)
        raise ValueError(f"metric={metric!r}; expected one of {list(METRICS)}")

    def subset(self, scans: np.ndarray) -> Runs:
        """The same models on the test scans selected by the boolean mask `scans` (e.g. one class's)."""
        return Runs(self.probs[:, scans], self.labels[scans], self.patients[scans], self.positive, self.generators)


def per_seed(runs: Runs, metric: Metric, weights: np.ndarray | None = None) -> np.ndarray:
    """The metric of every model, on the scans as weighted: (models,) without weights, (draws, models) with
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
    """The metric on every test scan, averaged over models."""
    return float(per_seed(runs, metric).mean())


@dataclass(frozen=True)
class Draws:
    """One set of bootstrap draws of test patients, shared by every run compared with each other."""

    weights: np.ndarray  # (draws, scans) how often each scan's patient was drawn
    seeds: np.ndarray  # (draws, models) model indices drawn with replacement (the detector's single model)


def cluster_draws(
    patients: np.ndarray, *, n_seeds: int, resamples: int, seed: int, strata: np.ndarray | None = None
) -> Draws:
    """`resamples` draws of test patients (with replacement, each drawn patient bringing all its scans)
    crossed with draws of models (with replacement). With `strata` (one value per scan; a patient's stratum
    is that of its first scan), each stratum's patients are drawn separately, so every draw keeps the test
    set's make-up, e.g. its classes (a draw without one class has no AUROC)."""
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
    """(draws,) the metric averaged over each draw's models, on each draw's patients."""
    values = per_seed(runs, metric, draws.weights)
    return np.take_along_axis(values, draws.seeds, axis=1).mean(axis=1)


def interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    """Two-sided percentile interval at `confidence` of bootstrap draws."""
    alpha = (1 - confidence) / 2
    return float(np.quantile(values, alpha)), float(np.quantile(values, 1 - alpha))


def improvement(candidate: np.ndarray | float, reference: np.ndarray | float, metric: Metric):
    """candidate - reference, oriented so that positive is better (a log-loss drop is positive)."""
    return (np.asarray(candidate) - reference) * (1.0 if HIGHER_IS_BETTER[metric] else -1.0)


@dataclass(frozen=True)
class Part:
    """One variance component of an estimate and its degrees of freedom."""

    variance: float
    df: float


def model_part(values: np.ndarray, generators: np.ndarray) -> Part:
    """The variance of an arm's mean over its models (`values`, one per model): with several generators the
    spread of their means over G (G - 1 df: the top level of the nested design, carrying the seeds' spread
    within each); with one, the spread of its seeds over S (S - 1 df). A single model gives no estimate."""
    groups = np.unique(generators)
    units = np.array([values[generators == g].mean() for g in groups]) if len(groups) > 1 else np.asarray(values)
    if len(units) < 2:
        raise ValueError(f"{len(units)} model(s) of one generator: a seed-to-seed variance needs >= 2 seeds")
    return Part(variance=float(units.var(ddof=1)) / len(units), df=float(len(units) - 1))


def patient_part(difference: np.ndarray, patients: np.ndarray) -> Part:
    """The variance of the mean of per-scan `difference` over test patients, models held fixed: the
    linearised cluster (sandwich) variance with its small-sample factor C / (C - 1), C - 1 df."""
    _, cluster = np.unique(patients, return_inverse=True)
    n_clusters = int(cluster.max()) + 1
    if n_clusters < 2:
        raise ValueError("the test scans come from one patient: a patient-level variance needs >= 2")
    totals = np.bincount(cluster, weights=difference - difference.mean())  # every cluster has a scan
    variance = n_clusters / (n_clusters - 1) * float(totals @ totals) / len(difference) ** 2
    return Part(variance=variance, df=float(n_clusters - 1))


@dataclass(frozen=True)
class Estimate:
    """A metric (one arm) or a paired improvement (two arms), with its variance components."""

    value: float
    parts: dict[str, Part]  # patients, candidate (models), reference (models)

    @property
    def se(self) -> float:
        return float(np.sqrt(sum(p.variance for p in self.parts.values())))

    @property
    def df(self) -> float:
        """Satterthwaite's (1946) degrees of freedom of the summed variance (inf when it is 0)."""
        spread = sum(p.variance**2 / p.df for p in self.parts.values() if p.variance > 0)
        return float(self.se**4 / spread) if spread > 0 else float("inf")

    def quantile(self, level: float) -> float:
        """The t quantile at `level` on df."""
        return float(student_t.ppf(level, self.df))

    def interval(self, confidence: float) -> tuple[float, float]:
        """Two-sided t interval at `confidence`."""
        half = self.quantile(0.5 + confidence / 2) * self.se
        return self.value - half, self.value + half


def estimate(candidate: Runs, metric: Metric, *, reference: Runs | None = None, draws: Draws | None = None) -> Estimate:
    """The candidate's metric (no reference: as reported, log-loss a loss) or its paired improvement over
    `reference` on the same test scans, with its variance components (module docstring). AUROC's patient
    component needs `draws` (cluster_draws of these scans); the per-scan metrics' is exact."""
    arms = {"candidate": candidate} | ({"reference": reference} if reference is not None else {})
    if reference is not None and not np.array_equal(candidate.patients, reference.patients):
        raise ValueError("paired arms must have scored the same test scans of the same patients")
    value = point(candidate, metric)
    if reference is not None:
        value = float(improvement(value, point(reference, metric), metric))
    parts = {name: model_part(per_seed(runs, metric), runs.generator_groups) for name, runs in arms.items()}
    if metric == "auroc":
        if draws is None:
            raise ValueError("AUROC's patient variance comes from a patient bootstrap: pass draws")
        values = per_seed(candidate, metric, draws.weights).mean(axis=1)  # models held fixed
        if reference is not None:
            values = values - per_seed(reference, metric, draws.weights).mean(axis=1)
        n_patients = len(np.unique(candidate.patients))
        parts["patients"] = Part(variance=float(values.var(ddof=1)), df=float(n_patients - 1))
    else:
        per_scan = candidate.scores(metric).mean(axis=0)
        if reference is not None:
            per_scan = per_scan - reference.scores(metric).mean(axis=0)
        parts["patients"] = patient_part(per_scan, candidate.patients)
    return Estimate(value=value, parts=parts)


@dataclass(frozen=True)
class NonInferiority:
    """One candidate against the reference: the paired improvement and what it shows at `margin`."""

    delta: float  # improvement averaged over every model, on all test scans (positive: better)
    se: float  # its standard error, every variance component summed
    df: float  # Satterthwaite's degrees of freedom
    lower: float  # one-sided lower confidence bound at level alpha
    upper: float  # one-sided upper confidence bound at level alpha
    p: float  # two-sided p of "no difference" (same t model)
    p_noninferior: float  # one-sided p of "worse by margin or more": below alpha exactly when non-inferior
    power: float  # chance of showing non-inferiority at margin were the true difference 0, at this se
    margin_at_power: float  # the margin this se would clear with TARGET_POWER were the true difference 0
    verdict: Verdict  # non-inferior: lower > -margin; inferior (descriptive): upper < -margin; else inconclusive


def non_inferiority(difference: Estimate, *, margin: float, alpha: float) -> NonInferiority:
    """The non-inferiority verdict of a paired improvement at one-sided level `alpha`."""
    se, df, delta = difference.se, difference.df, difference.value
    critical = difference.quantile(1 - alpha)
    lower, upper = delta - critical * se, delta + critical * se
    verdict: Verdict = "non-inferior" if lower > -margin else "inferior" if upper < -margin else "inconclusive"
    if se > 0:
        p_noninferior = float(student_t.sf((delta + margin) / se, df))
        p = float(2 * student_t.sf(abs(delta) / se, df))
        power = _power(margin / se, critical, df)
        # the margin (in se) this se would clear with TARGET_POWER: power rises with it from alpha at 0; on 1 df
        # and a small alpha the root lies far beyond the critical value (a t with 1 df has heavy tails)
        at_power = se * brentq(lambda m: _power(m, critical, df) - TARGET_POWER, 0.0, 10 * critical + 50)
    else:  # every model scored every scan alike: the difference is known
        p_noninferior, p, power, at_power = float(delta <= -margin), float(delta == 0), 1.0, 0.0
    return NonInferiority(
        delta=delta,
        se=se,
        df=df,
        lower=lower,
        upper=upper,
        p=p,
        p_noninferior=p_noninferior,
        power=power,
        margin_at_power=at_power,
        verdict=verdict,
    )


def _power(standardised_margin: float, critical: float, df: float) -> float:
    """P(the lower bound clears -margin) when the true difference is 0: the noncentral t's tail beyond the
    critical value, noncentrality margin / se (a shifted normal on infinite df)."""
    if np.isfinite(df):
        return float(nct.sf(critical, df, standardised_margin))
    return float(student_t.sf(critical - standardised_margin, df))


def sequence_alpha(alpha: float, families: int) -> float:
    """Each regime's share of the one-sided level: the sequences are tested at alpha / families, so the
    chance of any false non-inferiority claim over all regimes stays at most alpha (Bonferroni)."""
    if families < 1:
        raise ValueError(f"families={families}; at least one sequence shares alpha")
    return alpha / families


@dataclass(frozen=True)
class FixedSequence:
    """R_max from non-inferiority verdicts tested in ascending R, stopping at the first that is not shown."""

    shown: int  # largest R with every R' <= R non-inferior (0: none)
    stopped_at: int | None  # the first R not shown non-inferior; None when every R was
    stop_verdict: Verdict | None  # its verdict: inferior (descriptive: a real cost) or inconclusive

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


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values (step-down Bonferroni; Holm 1979), in the input's order."""
    if not len(p_values):
        return []
    return [float(p) for p in multipletests(list(p_values), method="holm")[1]]
