"""Drift tests against SciPy and against hand-computable cases."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon

from visionpipe.monitor import drift


@pytest.fixture
def rng():
    return np.random.default_rng(7)


def test_ks_equals_scipy(rng):
    a, b = rng.normal(0, 1, 300), rng.normal(0.2, 1.1, 250)
    result = drift.ks_test(a, b, "x")
    expected = stats.ks_2samp(a, b)
    assert result.statistic == expected.statistic and result.p_value == expected.pvalue
    assert (result.feature, result.test, result.n_reference, result.n_current) == ("x", "ks", 300, 250)


def test_ks_ignores_non_finite_values(rng):
    a, b = rng.normal(size=50), rng.normal(size=40)
    with_nan = np.concatenate([a, [np.nan, np.inf]])
    assert drift.ks_test(with_nan, b).p_value == stats.ks_2samp(a, b).pvalue


def test_wasserstein_in_reference_standard_deviations(rng):
    a, b = rng.normal(0, 2, 200), rng.normal(1, 2, 200)
    result = drift.wasserstein_test(a, b)
    assert result.statistic == pytest.approx(stats.wasserstein_distance(a, b) / a.std(), rel=1e-12)
    assert result.p_value is None and result.threshold == drift.WASSERSTEIN_THRESHOLD


def test_psi_by_hand():
    # reference shares 0.5/0.5, current 0.25/0.75: PSI = (0.25-0.5) ln(0.5) + (0.75-0.5) ln(1.5)
    value = drift.psi_from_counts([50, 50], [25, 75])
    assert value == pytest.approx(-0.25 * np.log(0.5) + 0.25 * np.log(1.5), rel=1e-12)
    assert drift.psi_from_counts([10, 20, 30], [10, 20, 30]) == 0.0


def test_reference_edges_open_ended_and_histogram_counts_everything(rng):
    values = rng.normal(size=1000)
    edges = drift.reference_edges(values, bins=10)
    assert edges[0] == -np.inf and edges[-1] == np.inf and len(edges) == 11
    counts = drift.histogram(values, edges)
    assert counts.sum() == 1000 and np.all(np.abs(counts - 100) <= 1)
    assert drift.histogram([1e9, -1e9], edges).tolist() == [1] + [0] * 8 + [1]


def test_class_mix_equals_scipy():
    ref, cur = {"person": 120, "car": 40, "dog": 5}, {"person": 60, "car": 70, "cat": 3}
    chi2, js = drift.class_mix_tests(ref, cur)
    classes = ["car", "cat", "dog", "person"]
    table = np.array([[ref.get(c, 0) for c in classes], [cur.get(c, 0) for c in classes]])
    expected = stats.chi2_contingency(table, correction=False)
    assert chi2.statistic == pytest.approx(expected[0], rel=1e-12) and chi2.p_value == pytest.approx(
        expected[1], rel=1e-12
    )
    assert chi2.drift
    p, q = table[0] / table[0].sum(), table[1] / table[1].sum()
    assert js.statistic == pytest.approx(jensenshannon(p, q, base=2), rel=1e-12)
    assert (chi2.n_reference, chi2.n_current) == (165, 133)


def test_class_mix_design_effect_only_weakens_the_p_value():
    ref, cur = {"person": 120, "car": 40}, {"person": 100, "car": 60}
    plain, _ = drift.class_mix_tests(ref, cur)
    clustered, _ = drift.class_mix_tests(ref, cur, design_effect=3.0)
    assert clustered.statistic == plain.statistic
    assert clustered.p_value == pytest.approx(stats.chi2.sf(plain.statistic / 3.0, 1), rel=1e-12)
    assert clustered.p_value > plain.p_value


def test_mmd_permutation_p_value_form_and_seed(rng):
    a = rng.normal(size=(80, 3))
    b = rng.normal(size=(70, 3)) + [1.0, 0, 0]
    first = drift.mmd_test(a, b, permutations=99, seed=3)
    again = drift.mmd_test(a, b, permutations=99, seed=3)
    assert first == again
    assert first.p_value == pytest.approx(1 / 100)  # no permutation beats a clear shift: (0 + 1) / (99 + 1)
    same = drift.mmd_test(a, rng.normal(size=(70, 3)), permutations=99, seed=3)
    k = round(same.p_value * 100) - 1
    assert 0 <= k <= 99 and same.p_value == pytest.approx((k + 1) / 100) and not same.drift


def test_mmd_caps_sample_sizes(rng):
    result = drift.mmd_test(rng.normal(size=(2000, 2)), rng.normal(size=(1500, 2)), max_samples=100, permutations=20)
    assert (result.n_reference, result.n_current) == (100, 100)


def test_holm_step_down():
    results = [
        drift.DriftResult(f"f{i}", "ks", 0.0, p, 0.05, True, 10, 10) for i, p in enumerate([0.01, 0.04, 0.03, 0.005])
    ]
    corrected = drift.holm(results, alpha=0.05)
    # sorted: 0.005 <= 0.05/4 yes, 0.01 <= 0.05/3 yes, 0.03 <= 0.05/2 no -> stop
    assert [r.drift for r in corrected] == [True, False, False, True]
    assert [r.threshold for r in corrected] == pytest.approx([0.05 / 3, 0.05 / 1, 0.05 / 2, 0.05 / 4])
    assert [r.p_value for r in corrected] == [0.01, 0.04, 0.03, 0.005]


def test_serial_correlation_lowers_the_effective_size(rng):
    iid = rng.normal(size=500)
    walk = np.cumsum(rng.normal(size=500))
    assert drift.effective_fraction(iid) > 0.8
    assert drift.effective_fraction(walk) < 0.05
    # the statistic stays SciPy's; the p-value only grows
    a, b = walk[:250], walk[250:]
    corrected = drift.ks_test(a, b, effective=(drift.effective_fraction(a), drift.effective_fraction(b)))
    assert corrected.statistic == stats.ks_2samp(a, b).statistic
    assert corrected.p_value >= stats.ks_2samp(a, b).pvalue


def test_too_few_samples_give_no_result():
    assert drift.ks_test([1, 2], [1, 2, 3, 4, 5, 6]) is None
    assert drift.class_mix_tests({}, {"a": 1}) == []


def test_mmd_statistic_equals_the_textbook_formula(rng):
    from scipy.spatial.distance import cdist, pdist

    a, b = rng.normal(size=(40, 3)) * [1, 2, 3] + 5, rng.normal(size=(30, 3)) * [1, 2, 3] + 5.5
    result = drift.mmd_test(a, b, permutations=10)
    mean, std = a.mean(axis=0), a.std(axis=0)
    x, y = (a - mean) / std, (b - mean) / std
    bandwidth = np.median(pdist(np.vstack([x, y]), "sqeuclidean"))

    def k(p, q):
        return np.exp(-cdist(p, q, "sqeuclidean") / bandwidth)

    expected = k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean()
    assert result.statistic == pytest.approx(expected, rel=1e-9)
