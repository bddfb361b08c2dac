"""Passive controls have the strategy's risk, exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from backtest import metrics
from backtest.passive import matched_exposure_returns, matched_volatility_returns

N = st.integers(2, 200)
returns = st.floats(-0.1, 0.1, allow_nan=False, allow_subnormal=False)
exposures = st.floats(-2.0, 2.0, allow_nan=False, allow_subnormal=False)


@given(data=st.data(), n=N)
def test_matched_exposure_has_the_strategys_mean_absolute_exposure(
    data: st.DataObject, n: int
) -> None:
    bench = data.draw(arrays(np.float64, n, elements=returns))
    exposure = data.draw(arrays(np.float64, n, elements=exposures))
    passive, level = matched_exposure_returns(bench, exposure)
    # The target: the strategy's mean |exposure| as the run's metrics report it.
    equity = np.full(n, 100.0)
    target = metrics.summarize(equity, periods_per_year=252.0, exposure=exposure)["exposure"]
    # The exposure the passive returns imply, bar by bar, is that target to 1e-9.
    moved = np.abs(bench) > 1e-12
    implied = passive[moved] / bench[moved]
    np.testing.assert_allclose(implied, target, rtol=1e-9, atol=1e-12)
    assert level == pytest.approx(target, rel=1e-9, abs=1e-12)
    assert np.all(passive[~moved] == pytest.approx(0.0, abs=1e-11))


@given(data=st.data(), n=N)
def test_matched_volatility_has_the_strategys_volatility(data: st.DataObject, n: int) -> None:
    bench = data.draw(arrays(np.float64, n, elements=returns))
    strategy = data.draw(arrays(np.float64, n, elements=returns))
    passive, scale = matched_volatility_returns(bench, strategy)
    if not np.std(bench, ddof=1) > metrics.DISPERSION_RTOL * np.abs(bench).max():
        assert math.isnan(scale) and np.isnan(passive).all()
        return
    target = metrics.annual_volatility(strategy, 252.0)
    assert metrics.annual_volatility(passive, 252.0) == pytest.approx(target, rel=1e-9, abs=1e-15)


def test_bad_input_is_named() -> None:
    with pytest.raises(ValueError, match="exposure holds a NaN"):
        matched_exposure_returns([0.01, 0.02], [0.5, math.nan])
    with pytest.raises(ValueError, match="3 exposures but 2 benchmark returns"):
        matched_exposure_returns([0.01, 0.02], [0.5, 0.4, 0.3])
    with pytest.raises(ValueError, match="3 strategy returns but 2 benchmark"):
        matched_volatility_returns([0.01, 0.02], [0.0, 0.1, 0.2])
