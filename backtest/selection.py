"""Statistics for choosing among many backtests without fooling yourself.

A sweep tries many configurations; the best of them looks better than it is. These functions
say how much better:

- :func:`deflated_sharpe_ratio` (Bailey & López de Prado, 2014): the probability that the
  best Sharpe ratio beats zero once the number of trials, their spread, and the returns'
  skewness and kurtosis are accounted for.
- :func:`probability_of_backtest_overfitting` (Bailey, Borwein, López de Prado & Zhu, 2017,
  combinatorially symmetric cross-validation): how often the configuration that is best in
  sample ranks in the bottom half out of sample.
- :func:`spa_pvalue`: Hansen's Superior Predictive Ability test (``arch.bootstrap.SPA``) of
  whether any configuration beats a benchmark (e.g. DRL-only), with the data-snooping of
  having tried them all accounted for.

Kernels take arrays: per-period returns, one column per configuration.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
from numpy.typing import ArrayLike

from backtest.errors import ConfigError

__all__ = [
    "deflated_sharpe_ratio",
    "expected_max_sharpe",
    "probability_of_backtest_overfitting",
    "spa_pvalue",
]

_EULER_GAMMA = 0.5772156649015329


def _norm_cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def _norm_ppf(p: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(p))


def expected_max_sharpe(n_trials: int, sharpe_variance: float) -> float:
    """The Sharpe ratio the best of ``n_trials`` unskilled trials reaches by luck alone.

    ``sqrt(V) * ((1 - g) * Z(1 - 1/N) + g * Z(1 - 1/(N e)))`` with ``g`` the Euler-Mascheroni
    constant and ``Z`` the standard normal quantile (Bailey & López de Prado, 2014, eq. 2).
    """
    if n_trials < 1:
        raise ConfigError("n_trials must be >= 1")
    if n_trials == 1:
        return 0.0
    return math.sqrt(sharpe_variance) * (
        (1.0 - _EULER_GAMMA) * _norm_ppf(1.0 - 1.0 / n_trials)
        + _EULER_GAMMA * _norm_ppf(1.0 - 1.0 / (n_trials * math.e))
    )


def deflated_sharpe_ratio(returns: ArrayLike, trial_sharpes: ArrayLike) -> float:
    """Probability that the selected strategy's true Sharpe ratio exceeds zero, deflated.

    Args:
        returns: Per-period returns of the selected configuration.
        trial_sharpes: The per-period (not annualised) Sharpe ratios of every configuration
            tried, the selected one included.

    Returns:
        ``PSR(SR*)``: the probabilistic Sharpe ratio of ``returns`` against the expected
        maximum of the trials, using the returns' skewness and (non-excess) kurtosis.
    """
    r = np.asarray(returns, dtype=np.float64)
    trials = np.asarray(trial_sharpes, dtype=np.float64)
    if r.size < 3 or trials.size < 1:
        raise ConfigError("deflated_sharpe_ratio needs >= 3 returns and >= 1 trial")
    sd = r.std(ddof=1)
    if sd == 0:
        return math.nan
    sharpe = r.mean() / sd
    centred = r - r.mean()
    skew = float(np.mean(centred**3) / r.std(ddof=0) ** 3)
    kurt = float(np.mean(centred**4) / r.std(ddof=0) ** 4)
    variance = float(trials.var(ddof=1)) if trials.size > 1 else 0.0
    benchmark = expected_max_sharpe(int(trials.size), variance)
    denominator = 1.0 - skew * sharpe + (kurt - 1.0) / 4.0 * sharpe**2
    if denominator <= 0:
        return math.nan
    z = (sharpe - benchmark) * math.sqrt(r.size - 1) / math.sqrt(denominator)
    return _norm_cdf(z)


def probability_of_backtest_overfitting(returns: ArrayLike, n_splits: int = 16) -> float:
    """CSCV estimate of the probability that the in-sample best is below median out of sample.

    Args:
        returns: Per-period returns, shape (T, N): T periods, N configurations (N >= 2).
        n_splits: Even number of contiguous blocks the periods are cut into; every choice of
            half of them is one in-sample set, the rest its out-of-sample set.

    Returns:
        The share of splits in which the configuration with the best in-sample Sharpe ratio
        ranks below the median out of sample (logit < 0), a split whose winner sits exactly
        at the median (logit == 0) counting one half.

    Ties are half-counted, on both sides of the split. Out of sample, configurations
    tied with the winner share its rank (the mean of the ranks they span, so the winner of
    a perfect tie sits at the median); in sample, a tie for best goes to the first
    configuration, which a perfect tie makes immaterial. A split whose winner lands exactly
    on the median is neither evidence of overfitting nor against it and counts 0.5: PBO
    over perfectly tied configurations (copies of one strategy, or several that never
    trade) is 0.5, "no information", not 1. Counting ``logit <= 0`` as overfit, as a
    literal reading of the paper's integral over ``(-inf, 0]`` does, would report 1.
    """
    m = np.asarray(returns, dtype=np.float64)
    if m.ndim != 2 or m.shape[1] < 2:
        raise ConfigError(
            "returns must be a (periods x configurations) matrix with >= 2 configurations"
        )
    if n_splits < 2 or n_splits % 2:
        raise ConfigError("n_splits must be an even number >= 2")
    t = m.shape[0] - m.shape[0] % n_splits
    if t < 2 * n_splits:
        raise ConfigError(f"{m.shape[0]} periods are too few for {n_splits} blocks")
    m = m[:t]
    # Every split's Sharpe ratios come from per-block sums: centring each configuration on
    # its own mean first keeps the sum-of-squares variance exact enough (a constant series
    # still has variance 0), so all C(S, S/2) splits cost one matrix product, not a pass
    # over the data each.
    centre = m.mean(axis=0)
    deviations = (m - centre).reshape(n_splits, t // n_splits, -1)
    sums, squares = deviations.sum(axis=1), (deviations**2).sum(axis=1)
    chosen = np.array(list(itertools.combinations(range(n_splits), n_splits // 2)), dtype=np.intp)
    inside = np.zeros((len(chosen), n_splits))
    np.put_along_axis(inside, chosen, 1.0, axis=1)
    n_periods = t // 2
    is_sharpe = _sharpes_from_sums(inside @ sums, inside @ squares, centre, n_periods)
    oos = _sharpes_from_sums((1.0 - inside) @ sums, (1.0 - inside) @ squares, centre, n_periods)
    best = np.argmax(is_sharpe, axis=1)
    winner = np.take_along_axis(oos, best[:, None], axis=1)
    n = m.shape[1]
    # Relative rank in (0, 1) of the in-sample winner out of sample.
    rank = (np.sum(oos < winner, axis=1) + 0.5 * (np.sum(oos == winner, axis=1) - 1) + 1) / (n + 1)
    logit = np.log(rank / (1.0 - rank))
    return float(np.mean(np.where(logit < 0.0, 1.0, np.where(logit == 0.0, 0.5, 0.0))))


def _sharpes_from_sums(
    sums: np.ndarray, squares: np.ndarray, centre: np.ndarray, n: int
) -> np.ndarray:
    """Sharpe ratios (ddof=1) of ``n`` periods from sums of deviations from ``centre``."""
    variance = np.maximum(squares - sums**2 / n, 0.0) / (n - 1)
    sd = np.sqrt(variance)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(sd > 0, (centre + sums / n) / sd, -np.inf)


def spa_pvalue(
    benchmark_returns: ArrayLike,
    model_returns: ArrayLike,
    *,
    reps: int = 1000,
    block_size: int | None = None,
    seed: int = 0,
) -> float:
    """Hansen's SPA p-value: does any model beat the benchmark (higher mean return)?

    Args:
        benchmark_returns: Per-period returns of the benchmark (e.g. DRL-only), shape (T,).
        model_returns: Per-period returns of the models, shape (T, N).
        reps: Bootstrap replications.
        block_size: Stationary-bootstrap block size (arch's default when None).
        seed: Seed of the bootstrap's own generator.

    Returns:
        The consistent p-value: small when some model is better than the benchmark.
    """
    from arch.bootstrap import SPA

    bench = np.asarray(benchmark_returns, dtype=np.float64)
    models = np.asarray(model_returns, dtype=np.float64)
    if models.ndim == 1:
        models = models[:, None]
    # SPA works on losses: lower is better, so a return is a negative loss.
    spa = SPA(-bench, -models, reps=reps, block_size=block_size, seed=np.random.default_rng(seed))
    spa.compute()
    return float(spa.pvalues["consistent"])
