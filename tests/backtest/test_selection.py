"""Selection statistics: deflated Sharpe, probability of backtest overfitting, SPA."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from backtest.errors import ConfigError
from backtest.selection import (
    deflated_sharpe_ratio,
    expected_max_sharpe,
    probability_of_backtest_overfitting,
    spa_pvalue,
)


def test_expected_max_sharpe_grows_with_trials() -> None:
    assert expected_max_sharpe(1, 0.01) == 0.0
    values = [expected_max_sharpe(n, 0.01) for n in (2, 10, 100, 1000)]
    assert values == sorted(values) and values[-1] == pytest.approx(0.1 * 3.2563, rel=1e-3)


def test_deflated_sharpe_matches_the_formula_written_out() -> None:
    rng = np.random.default_rng(7)
    returns = rng.standard_t(5, size=1500) * 0.01 + 0.0008
    trials = rng.normal(0.0, 0.03, size=50)
    sharpe = returns.mean() / returns.std(ddof=1)
    gamma = 0.5772156649015329
    n = trials.size
    sr_star = math.sqrt(trials.var(ddof=1)) * (
        (1 - gamma) * stats.norm.ppf(1 - 1 / n) + gamma * stats.norm.ppf(1 - 1 / (n * math.e))
    )
    skew = stats.skew(returns)
    kurt = stats.kurtosis(returns, fisher=False)
    expected = stats.norm.cdf(
        (sharpe - sr_star)
        * math.sqrt(len(returns) - 1)
        / math.sqrt(1 - skew * sharpe + (kurt - 1) / 4 * sharpe**2)
    )
    assert deflated_sharpe_ratio(returns, trials) == pytest.approx(expected, rel=1e-9)
    # The more configurations tried, the less the same Sharpe ratio proves.
    assert deflated_sharpe_ratio(returns, trials[:2]) > deflated_sharpe_ratio(
        returns, np.r_[trials, rng.normal(0, 0.03, 950)]
    )


def test_pbo_is_high_for_noise_and_low_for_a_real_edge() -> None:
    # With no edge anywhere, the in-sample winner is below median out of sample half the
    # time: averaged over independent draws (one draw's 70 splits are strongly dependent).
    rng = np.random.default_rng(11)
    draws = [
        probability_of_backtest_overfitting(rng.normal(0, 0.01, size=(800, 12)), n_splits=8)
        for _ in range(20)
    ]
    assert 0.35 <= float(np.mean(draws)) <= 0.65
    noise = rng.normal(0, 0.01, size=(1600, 12))
    edge = noise.copy()
    edge[:, 0] += 0.003
    assert probability_of_backtest_overfitting(edge, n_splits=8) < 0.05


def test_spa_finds_a_better_model_and_not_a_lucky_one() -> None:
    rng = np.random.default_rng(3)
    benchmark = rng.normal(0.0, 0.01, size=1000)
    lucky = benchmark[:, None] + rng.normal(0.0, 0.005, size=(1000, 20))
    assert spa_pvalue(benchmark, lucky, reps=500) > 0.1
    better = lucky.copy()
    better[:, 5] += 0.002
    assert spa_pvalue(benchmark, better, reps=500) < 0.05


def test_pbo_of_perfectly_tied_trials_is_a_half_not_one() -> None:
    # Copies of one strategy, and strategies that never trade: no configuration is better
    # than another in or out of sample. Counting a median rank as overfit would say 1.
    rng = np.random.default_rng(5)
    one = rng.normal(0.0005, 0.01, size=(400, 1))
    assert probability_of_backtest_overfitting(np.repeat(one, 4, axis=1), n_splits=8) == 0.5
    assert probability_of_backtest_overfitting(np.zeros((400, 3)), n_splits=8) == 0.5
    # A real winner beside a tie of the rest is still found: no overfitting.
    tied = np.repeat(one, 3, axis=1)
    tied[:, 0] += 0.004
    assert probability_of_backtest_overfitting(tied, n_splits=8) == 0.0


def _pbo_reference(m: np.ndarray, n_splits: int) -> float:
    """CSCV written out, one split at a time (Bailey et al. 2017, section 2)."""
    import itertools

    def sharpes(block: np.ndarray) -> np.ndarray:
        sd = block.std(axis=0, ddof=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(sd > 0, block.mean(axis=0) / sd, -np.inf)

    t = m.shape[0] - m.shape[0] % n_splits
    blocks = np.split(m[:t], n_splits)
    below = []
    n = m.shape[1]
    for chosen in itertools.combinations(range(n_splits), n_splits // 2):
        rest = [i for i in range(n_splits) if i not in chosen]
        best = int(np.argmax(sharpes(np.concatenate([blocks[i] for i in chosen]))))
        oos = sharpes(np.concatenate([blocks[i] for i in rest]))
        rank = (np.sum(oos < oos[best]) + 0.5 * (np.sum(oos == oos[best]) - 1) + 1) / (n + 1)
        logit = np.log(rank / (1.0 - rank))
        below.append(1.0 if logit < 0.0 else 0.5 if logit == 0.0 else 0.0)
    return float(np.mean(below))


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    periods=st.integers(16, 300),
    configs=st.integers(2, 9),
    n_splits=st.sampled_from([2, 4, 6, 8]),
    copies=st.booleans(),
    flat=st.booleans(),
)
def test_pbo_matches_cscv_written_out(
    seed: int, periods: int, configs: int, n_splits: int, copies: bool, flat: bool
) -> None:
    rng = np.random.default_rng(seed)
    m = rng.normal(0.0003, 0.01, size=(periods, configs))
    if copies:  # identical configurations tie exactly
        m[:, -1] = m[:, 0]
    if flat:  # a configuration that never trades
        m[:, 1] = 0.0
    if periods - periods % n_splits < 2 * n_splits:
        with pytest.raises(ConfigError):
            probability_of_backtest_overfitting(m, n_splits)
        return
    assert probability_of_backtest_overfitting(m, n_splits) == pytest.approx(
        _pbo_reference(m, n_splits), abs=1e-12
    )
