"""Hypothesis strategies that draw valid bar frames."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import strategies as st

FREQ_STEPS = {
    "1d": pd.Timedelta(days=1),
    "1h": pd.Timedelta(hours=1),
    "5min": pd.Timedelta(minutes=5),
}


@st.composite
def bar_frames(
    draw: st.DrawFn, min_size: int = 2, max_size: int = 40, frequency: str = "1d"
) -> pd.DataFrame:
    """A valid OHLCV frame on a regular grid, indexed by UTC timestamps."""
    n = draw(st.integers(min_size, max_size))
    returns = np.array(draw(st.lists(st.floats(-0.2, 0.2), min_size=n, max_size=n)))
    body = np.array(draw(st.lists(st.floats(-0.05, 0.05), min_size=n, max_size=n)))
    upper = np.array(draw(st.lists(st.floats(0, 0.05), min_size=n, max_size=n)))
    lower = np.array(draw(st.lists(st.floats(0, 0.05), min_size=n, max_size=n)))
    volume = np.array(draw(st.lists(st.floats(0, 1e9), min_size=n, max_size=n)))
    start = draw(
        st.datetimes(
            min_value=pd.Timestamp("1990-01-01").to_pydatetime(),
            max_value=pd.Timestamp("2030-01-01").to_pydatetime(),
        )
    )
    close = 100.0 * np.exp(np.cumsum(returns))
    open_ = close * np.exp(body)
    high = np.maximum(open_, close) * (1 + upper)
    low = np.minimum(open_, close) * (1 - lower)
    index = pd.date_range(
        pd.Timestamp(start).floor("1D"),
        periods=n,
        freq=FREQ_STEPS[frequency],
        tz="UTC",
        name="timestamp",
    ).as_unit("ns")
    return pd.DataFrame(
        {"open": open_, "high": high, "low": low, "close": close, "volume": volume}, index=index
    )
