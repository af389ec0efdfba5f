"""Drift tests between a reference sample and a current window (NumPy and SciPy only).

Every test returns the same :class:`DriftResult`. Where SciPy has the statistic, the value is
SciPy's: KS is ``scipy.stats.ks_2samp``, Wasserstein is ``scipy.stats.wasserstein_distance``,
chi-square is ``scipy.stats.chi2_contingency``, Jensen-Shannon is
``scipy.spatial.distance.jensenshannon`` (base 2, so it lies in [0, 1]).

Decisions:
- KS (per continuous feature), chi-square (class mix) and MMD (all features at once) have p-values;
  they are the tests that decide. The p-values of one family (the KS tests over features) are
  corrected for multiple testing by Holm's step-down method: a feature drifts when Holm rejects it
  at family-wise level ``alpha``; ``threshold`` is the Holm level of that feature's rank.
- Wasserstein (in units of the reference's standard deviation, so one threshold suits every feature),
  PSI and Jensen-Shannon are effect sizes without p-values (``p_value`` is None); they flag drift
  when the statistic exceeds their conventional threshold (PSI 0.2, Wasserstein 0.5 sd, JS 0.1).
- Serial correlation: consecutive video frames are not independent draws, and tests that assume
  they are raise false alarms on any clip. Each side's effective sample size is estimated from
  its lag-1 autocorrelation rho (AR(1): n_eff = n (1 - rho) / (1 + rho), rho clipped to
  [0, 0.95]). When it is below n, KS takes its p-value from the asymptotic Kolmogorov
  distribution at the effective sizes, chi-square divides its statistic by the design effect,
  and MMD thins both samples to every k-th row before permuting. Independent photos (rho <= 0)
  get SciPy's results unchanged. Chi-square on class counts also divides by the mean number of
  boxes per image (boxes of one image are not independent draws either): a conservative
  Rao-Scott-style design effect.
- MMD uses a Gaussian kernel on the features standardised by the reference, median-heuristic
  bandwidth, and a permutation p-value ``(k + 1) / (B + 1)`` (k = permutations at least as extreme
  as observed) with a seeded generator; each sample is capped (random subsample) to bound cost.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats
from scipy.spatial.distance import jensenshannon

DEFAULT_ALPHA = 0.01
PSI_THRESHOLD = 0.2  # the usual "significant shift" level
WASSERSTEIN_THRESHOLD = 0.5  # in reference standard deviations
JS_THRESHOLD = 0.1
MMD_PERMUTATIONS = 200
MMD_MAX_SAMPLES = 500
MIN_SAMPLES = 5  # fewer values than this on either side: the test is not run
PSI_EPSILON = 1e-4  # floor on bin shares so that an empty bin does not give an infinite PSI


@dataclass(frozen=True)
class DriftResult:
    """The one result shape of every drift test."""

    feature: str  # a feature name, "class_mix", or "all" for the multivariate test
    test: str  # ks, wasserstein, psi, chi2, jensen_shannon, mmd
    statistic: float
    p_value: float | None  # None for effect sizes without one (wasserstein, psi, jensen_shannon)
    threshold: float  # the level p_value is compared with, or the level the statistic must exceed
    drift: bool
    n_reference: int
    n_current: int

    def as_dict(self) -> dict:
        return asdict(self)


def _finite(values: Sequence[float] | np.ndarray) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).ravel()
    return array[np.isfinite(array)]


def effective_fraction(values) -> float:
    """n_eff / n of a series in time order under an AR(1) model of its lag-1 autocorrelation."""
    v = _finite(values)
    if len(v) < 10 or np.all(v == v[0]):
        return 1.0
    a, b = v[:-1] - v[:-1].mean(), v[1:] - v[1:].mean()
    denominator = math.sqrt(float((a * a).sum() * (b * b).sum()))
    rho = float((a * b).sum()) / denominator if denominator > 0 else 0.0
    rho = min(max(rho, 0.0), 0.95)
    return (1 - rho) / (1 + rho)


def ks_test(
    reference,
    current,
    feature: str = "",
    alpha: float = DEFAULT_ALPHA,
    effective: tuple[float, float] = (1.0, 1.0),
) -> DriftResult | None:
    """Two-sample Kolmogorov-Smirnov test: SciPy's ``ks_2samp`` (two-sided, exact or asymptotic as
    SciPy picks); with ``effective`` fractions below 1 the p-value is the asymptotic Kolmogorov
    tail at the effective sample sizes."""
    ref, cur = _finite(reference), _finite(current)
    if len(ref) < MIN_SAMPLES or len(cur) < MIN_SAMPLES:
        return None
    result = stats.ks_2samp(ref, cur)
    p = float(result.pvalue)
    if effective[0] < 1.0 or effective[1] < 1.0:
        m, n = max(2.0, len(ref) * effective[0]), max(2.0, len(cur) * effective[1])
        p = max(p, float(stats.kstwobign.sf(float(result.statistic) * math.sqrt(m * n / (m + n)))))
    return DriftResult(feature, "ks", float(result.statistic), p, alpha, p <= alpha, len(ref), len(cur))


def wasserstein_test(
    reference, current, feature: str = "", threshold: float = WASSERSTEIN_THRESHOLD
) -> DriftResult | None:
    """Wasserstein-1 distance divided by the reference's standard deviation (raw distance when it is 0)."""
    ref, cur = _finite(reference), _finite(current)
    if len(ref) < MIN_SAMPLES or len(cur) < MIN_SAMPLES:
        return None
    scale = float(ref.std())
    distance = float(stats.wasserstein_distance(ref, cur)) / (scale if scale > 0 else 1.0)
    return DriftResult(feature, "wasserstein", distance, None, threshold, distance > threshold, len(ref), len(cur))


def psi_from_counts(reference_counts, current_counts) -> float:
    """Population stability index of two histograms over the same bins."""
    ref = np.asarray(reference_counts, dtype=np.float64)
    cur = np.asarray(current_counts, dtype=np.float64)
    p = np.maximum(ref / max(ref.sum(), 1.0), PSI_EPSILON)
    q = np.maximum(cur / max(cur.sum(), 1.0), PSI_EPSILON)
    return float(np.sum((q - p) * np.log(q / p)))


def histogram(values, edges: np.ndarray) -> np.ndarray:
    """Counts of finite values in the bins given by ``edges`` (the outer bins are open-ended)."""
    v = _finite(values)
    inner = np.asarray(edges, dtype=np.float64)[1:-1]
    return np.bincount(np.searchsorted(inner, v, side="right"), minlength=len(edges) - 1)


def psi_test(
    reference, current, edges: np.ndarray, feature: str = "", threshold: float = PSI_THRESHOLD
) -> DriftResult | None:
    """PSI over the bins ``edges`` (fixed by the reference: see ``reference_edges``)."""
    ref, cur = _finite(reference), _finite(current)
    if len(ref) < MIN_SAMPLES or len(cur) < MIN_SAMPLES:
        return None
    value = psi_from_counts(histogram(ref, edges), histogram(cur, edges))
    return DriftResult(feature, "psi", value, None, threshold, value > threshold, len(ref), len(cur))


def reference_edges(values, bins: int = 10) -> np.ndarray:
    """Bin edges at the reference's quantiles (duplicates removed), outer edges at -inf and +inf."""
    v = _finite(values)
    if not len(v):
        return np.array([-np.inf, np.inf])
    inner = np.unique(np.quantile(v, np.linspace(0, 1, bins + 1)[1:-1]))
    return np.concatenate([[-np.inf], inner, [np.inf]])


def class_mix_tests(
    reference: Mapping[str, float],
    current: Mapping[str, float],
    alpha: float = DEFAULT_ALPHA,
    js_threshold: float = JS_THRESHOLD,
    design_effect: float = 1.0,
) -> list[DriftResult]:
    """Chi-square test of homogeneity (2 x K contingency table) and Jensen-Shannon distance on class
    counts. The reported statistic is SciPy's; its p-value is taken at statistic / ``design_effect``."""
    classes = sorted(set(reference) | set(current))
    ref = np.array([reference.get(c, 0) for c in classes], dtype=np.float64)
    cur = np.array([current.get(c, 0) for c in classes], dtype=np.float64)
    n_ref, n_cur = int(ref.sum()), int(cur.sum())
    if n_ref == 0 or n_cur == 0:
        return []
    out = []
    seen = (ref + cur) > 0
    if seen.sum() >= 2:
        chi2, p, dof, _ = stats.chi2_contingency(np.vstack([ref[seen], cur[seen]]), correction=False)
        if design_effect > 1.0:
            p = stats.chi2.sf(chi2 / design_effect, dof)
        out.append(DriftResult("class_mix", "chi2", float(chi2), float(p), alpha, float(p) <= alpha, n_ref, n_cur))
    else:  # one class on both sides: nothing can have changed in the mix
        out.append(DriftResult("class_mix", "chi2", 0.0, 1.0, alpha, False, n_ref, n_cur))
    js = float(jensenshannon(ref / n_ref, cur / n_cur, base=2))
    out.append(DriftResult("class_mix", "jensen_shannon", js, None, js_threshold, js > js_threshold, n_ref, n_cur))
    return out


def mmd_test(
    reference: np.ndarray,
    current: np.ndarray,
    *,
    alpha: float = DEFAULT_ALPHA,
    permutations: int = MMD_PERMUTATIONS,
    max_samples: int = MMD_MAX_SAMPLES,
    seed: int = 0,
    feature: str = "image",
    thin: tuple[int, int] = (1, 1),
) -> DriftResult | None:
    """MMD² (biased estimate) with a Gaussian kernel on rows (images) x columns (features).

    Columns are standardised by the reference's mean and standard deviation; rows with a
    non-finite value and constant columns are left out.
    """
    rng = np.random.default_rng(seed)
    ref = np.asarray(reference, dtype=np.float64)
    cur = np.asarray(current, dtype=np.float64)
    ref = ref[:: max(1, thin[0])]  # every k-th row of serially correlated samples
    cur = cur[:: max(1, thin[1])]
    ref = ref[np.isfinite(ref).all(axis=1)]
    cur = cur[np.isfinite(cur).all(axis=1)]
    if len(ref) < MIN_SAMPLES or len(cur) < MIN_SAMPLES:
        return None
    if len(ref) > max_samples:
        ref = ref[rng.choice(len(ref), max_samples, replace=False)]
    if len(cur) > max_samples:
        cur = cur[rng.choice(len(cur), max_samples, replace=False)]
    mean, std = ref.mean(axis=0), ref.std(axis=0)
    keep = std > 0
    if not keep.any():
        return None
    ref = (ref[:, keep] - mean[keep]) / std[keep]
    cur = (cur[:, keep] - mean[keep]) / std[keep]
    pooled = np.vstack([ref, cur])
    squared = np.sum(pooled**2, axis=1)
    distances = np.maximum(squared[:, None] + squared[None, :] - 2 * pooled @ pooled.T, 0.0)
    off_diagonal = distances[np.triu_indices(len(pooled), k=1)]
    bandwidth = float(np.median(off_diagonal)) or 1.0
    kernel = np.exp(-distances / bandwidth)
    n, total = len(ref), len(pooled)
    # biased MMD^2 = w' K w with w = 1/n on the reference rows and -1/m on the current ones; a
    # permutation relabels rows, so all permutations are one matrix product
    labels = np.zeros((total, permutations + 1), dtype=bool)
    labels[:n, 0] = True
    for b in range(1, permutations + 1):
        labels[rng.permutation(total)[:n], b] = True
    weights = np.where(labels, 1.0 / n, -1.0 / (total - n))
    statistics = np.einsum("ib,ib->b", weights, kernel @ weights)
    observed = float(statistics[0])
    # a small tolerance so that a permutation equal to the observed labelling counts as "as extreme"
    extreme = int(np.count_nonzero(statistics[1:] >= observed - 1e-12 * abs(observed)))
    p = (extreme + 1) / (permutations + 1)
    return DriftResult(feature, "mmd", observed, p, alpha, p <= alpha, len(ref), len(cur))


def _p_or_one(result: DriftResult) -> float:
    return 1.0 if result.p_value is None else result.p_value


def holm(results: list[DriftResult], alpha: float = DEFAULT_ALPHA) -> list[DriftResult]:
    """The same results with Holm's step-down decision at family-wise level ``alpha``.

    Sorted by p-value, the i-th smallest (0-based) is compared with alpha / (m - i); once one is not
    rejected, none after it is. Results keep their raw p-values; ``threshold`` becomes their Holm level.
    """
    m = len(results)
    order = sorted(range(m), key=lambda i: _p_or_one(results[i]))
    out = list(results)
    still_rejecting = True
    for rank, i in enumerate(order):
        r = results[i]
        level = alpha / (m - rank)
        reject = still_rejecting and r.p_value is not None and r.p_value <= level
        still_rejecting = reject
        out[i] = DriftResult(r.feature, r.test, r.statistic, r.p_value, level, reject, r.n_reference, r.n_current)
    return out


def feature_tests(
    reference: Mapping[str, np.ndarray],
    current: Mapping[str, np.ndarray],
    edges: Mapping[str, np.ndarray] | None = None,
    alpha: float = DEFAULT_ALPHA,
) -> list[DriftResult]:
    """KS (Holm-corrected across features), Wasserstein and PSI for every feature on both sides."""
    ks, others = [], []
    for name in reference:
        if name not in current:
            continue
        effective = (effective_fraction(reference[name]), effective_fraction(current[name]))
        result = ks_test(reference[name], current[name], name, alpha, effective)
        if result is None:
            continue
        ks.append(result)
        w = wasserstein_test(reference[name], current[name], name)
        if w is not None:
            others.append(w)
        bins = edges[name] if edges and name in edges else reference_edges(reference[name])
        psi = psi_test(reference[name], current[name], bins, name)
        if psi is not None:
            others.append(psi)
    return holm(ks, alpha) + others
