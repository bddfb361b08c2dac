"""TradingEnv: gymnasium/SB3 checks, exact accounting against vectorbt, costs, risk, exits."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import vectorbt as vbt
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backtest import _env_nb as nb
from backtest.config import EnvConfig, RiskConfig
from backtest.data import BarMeta, Bars, load_bars
from backtest.env import TradingEnv
from backtest.errors import ConfigError
from tests.backtest.strategies_data import bar_frames

SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
FRICTIONLESS = {"fee_bps": 0.0, "spread_bps": 0.0, "slippage_bps": 0.0, "rebalance_band": 0.0}


def _bars(frame: pd.DataFrame) -> Bars:
    return Bars(frame=frame, meta=BarMeta(symbol="T", frequency="1d"))


def _run_targets(env: TradingEnv, targets: list[float | None]) -> pd.DataFrame:
    """Step the env through targets; one row per bar (state after the step)."""
    env.reset(seed=0)
    rows = []
    for target in targets:
        if env.t + 1 >= env.end_bar:
            break
        _, _, terminated, _, info = env.step_target(target)
        rows.append(
            {
                **info,
                "fill_units": env.fill_units,
                "exposure": env.exposure,
                "financing": env.financing_usd,
                "risk_event": env.risk_event,
                "exit_units": env.exit_units,
                "exit_price": env.exit_price,
                "target": target,
            }
        )
        if terminated:
            break
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------ API checks


def test_passes_gymnasium_and_sb3_env_checkers(samples_dir: Path) -> None:
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    bars = load_bars(samples_dir / "SP500.parquet")
    for space in ("discrete", "continuous"):
        env = TradingEnv(bars, EnvConfig(action_space=space, episode_bars=200))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            check_env(env, skip_render_check=True)
            sb3_check_env(TradingEnv(bars, EnvConfig(action_space=space)), warn=True)
        messages = [str(w.message) for w in caught]
        # The only remarks are gymnasium's notes that an unbounded Box is unbounded.
        assert all("infinity" in m for m in messages), messages


def test_observations_are_copies_and_causal(samples_dir: Path) -> None:
    bars = load_bars(samples_dir / "SP500.parquet")
    env = TradingEnv(bars, EnvConfig(window=5))
    obs, _ = env.reset(seed=0)
    first = obs.copy()
    obs2, *_ = env.step(2)
    assert not np.shares_memory(obs, obs2)
    obs[:] = 123.0  # scribbling on a returned observation changes nothing inside
    np.testing.assert_array_equal(
        env.features.values[env.t - 4 : env.t].ravel(), first[:-2][env.features.values.shape[1] :]
    )
    assert not env.features.values.flags.writeable


def test_seeded_random_starts_are_reproducible(samples_dir: Path) -> None:
    bars = load_bars(samples_dir / "SP500.parquet")
    cfg = EnvConfig(episode_bars=100)
    a, b = TradingEnv(bars, cfg), TradingEnv(bars, cfg)
    starts_a = [a.reset(seed=s)[1]["t"] for s in range(5)]
    starts_b = [b.reset(seed=s)[1]["t"] for s in range(5)]
    assert starts_a == starts_b and len(set(starts_a)) > 1
    a.reset(seed=7)
    for _ in range(99):
        _, _, terminated, truncated, _ = a.step(1)
    assert truncated and not terminated


# ------------------------------------------------------------------- accounting oracle


@SETTINGS
@given(
    frame=bar_frames(min_size=45, max_size=90),
    targets=st.lists(
        st.one_of(
            st.none(),
            st.sampled_from([-1.0, -0.5, 0.0, 0.3, 1.0]),
            # vectorbt ignores orders of ~1e-9 units; targets that small
            # only exercise its tolerance, not the accounting.
            st.floats(-1, 1).map(lambda x: round(x, 4)),
        ),
        min_size=60,
        max_size=60,
    ),
    fee_bps=st.sampled_from([0.0, 1.0, 10.0]),
    spread_bps=st.sampled_from([0.0, 2.0]),
    fixed=st.sampled_from([0.0, 1.5]),
)
def test_equity_matches_vectorbt_from_orders(
    frame: pd.DataFrame,
    targets: list[float | None],
    fee_bps: float,
    spread_bps: float,
    fixed: float,
) -> None:
    cfg = EnvConfig(
        window=3,
        fee_bps=fee_bps,
        spread_bps=spread_bps,
        slippage_bps=0.5,
        fixed_fee_usd=fixed,
        rebalance_band=0.0,
    )
    env = TradingEnv(_bars(frame), cfg)
    rows = _run_targets(env, targets)
    first = env.first_bar
    bars = frame.iloc[first + 1 : first + 1 + len(rows)]
    size = rows["fill_units"].to_numpy()
    price = np.where(size != 0, rows["fill_price"].to_numpy(), bars["open"].to_numpy())
    portfolio = vbt.Portfolio.from_orders(
        bars["close"].reset_index(drop=True),
        size=size,
        size_type="amount",
        price=price,
        fees=0.0,
        fixed_fees=np.where(size != 0, rows["fees"].to_numpy(), 0.0),
        init_cash=cfg.initial_capital_usd,
        direction="both",
    )
    np.testing.assert_allclose(portfolio.value().to_numpy(), rows["equity"].to_numpy(), rtol=1e-9)
    # vectorbt drops orders below ~1e-9 units; equity above already agrees to 1e-9.
    np.testing.assert_allclose(
        portfolio.assets().to_numpy(), rows["position"].to_numpy(), rtol=1e-9, atol=1e-6
    )


@SETTINGS
@given(
    frame=bar_frames(min_size=45, max_size=90),
    targets=st.lists(st.one_of(st.none(), st.floats(-3, 3)), min_size=60, max_size=60),
    fee_bps=st.sampled_from([0.0, 5.0]),
    fixed=st.sampled_from([0.0, 2.0]),
    rates=st.tuples(st.floats(0, 0.2), st.floats(0, 0.2), st.floats(-0.02, 0.1)),
)
def test_levered_accounting_matches_an_independent_recomputation(
    frame: pd.DataFrame,
    targets: list[float | None],
    fee_bps: float,
    fixed: float,
    rates: tuple[float, float, float],
) -> None:
    borrow, margin, cash_rate = rates
    cfg = EnvConfig(
        window=3,
        fee_bps=fee_bps,
        spread_bps=3.0,
        slippage_bps=1.0,
        fixed_fee_usd=fixed,
        rebalance_band=0.0,
        borrow_rate=borrow,
        margin_rate=margin,
        cash_rate=cash_rate,
        risk=RiskConfig(max_leverage=3),
    )
    env = TradingEnv(_bars(frame), cfg)
    rows = _run_targets(env, targets)
    half = (3.0 / 2 + 1.0) / 1e4
    cash, units = cfg.initial_capital_usd, 0.0
    t = env.first_bar
    for _, row in rows.iterrows():
        n = t + 1
        o, c = frame["open"].iloc[n], frame["close"].iloc[n]
        target = row["target"]
        du = row["fill_units"]
        equity_open = cash + units * o
        fee = 0.0
        if du:
            side = math.copysign(1.0, du)
            assert row["fill_price"] == pytest.approx(o * (1 + side * half), rel=1e-12)
            fee = abs(du) * row["fill_price"] * fee_bps / 1e4 + fixed
            cash -= du * row["fill_price"] + fee
            units += du
            # After costs the exposure at the open's mid price is exactly the target.
            assert units * o / (cash + units * o) == pytest.approx(target, rel=1e-9, abs=1e-9)
        elif equity_open <= 0:
            # Underwater at the open: liquidated there, whatever the target.
            assert row["exit_units"] == pytest.approx(-units, rel=1e-12)
            price = row["exit_price"]
            assert price == pytest.approx(o * (1 - math.copysign(1.0, units) * half), rel=1e-12)
            fee = abs(units) * price * fee_bps / 1e4 + fixed
            cash += units * price - fee
            units = 0.0
        else:
            # No fill: HOLD, or already at the target (up to numerical dust).
            assert pd.isna(target) or abs(target - units * o / equity_open) < 1e-6
        assert row["fees"] == pytest.approx(fee, rel=1e-12, abs=1e-12)
        years = (frame.index[n] - frame.index[t]) / pd.Timedelta(days=365)
        financing = (
            borrow * max(-units, 0) * c + margin * max(-cash, 0) - cash_rate * max(cash, 0)
        ) * years
        assert row["financing"] == pytest.approx(financing, rel=1e-9, abs=1e-9)
        cash -= financing
        assert row["cash"] == pytest.approx(cash, rel=1e-9, abs=1e-6)
        assert row["equity"] == pytest.approx(cash + units * c, rel=1e-9)
        t = n


@SETTINGS
@given(
    frame=bar_frames(min_size=45, max_size=90),
    targets=st.lists(st.one_of(st.none(), st.floats(-1, 1)), min_size=60, max_size=60),
)
def test_conservation_and_non_negative_fees(
    frame: pd.DataFrame, targets: list[float | None]
) -> None:
    env = TradingEnv(_bars(frame), EnvConfig(window=3, fee_bps=3, fixed_fee_usd=0.5))
    rows = _run_targets(env, targets)
    closes = frame["close"].iloc[env.first_bar + 1 : env.first_bar + 1 + len(rows)].to_numpy()
    np.testing.assert_allclose(rows["cash"] + rows["position"] * closes, rows["equity"], rtol=1e-12)
    assert (rows["fees"] >= 0).all()
    # Money only moves through fills and fees: final equity = initial cash - what the fills
    # paid - fees + the final position at the final close.
    fills = rows["fill_units"].to_numpy()
    paid = np.sum(fills * rows["fill_price"].fillna(0).to_numpy())
    final = (
        env.config.initial_capital_usd
        - paid
        - rows["fees"].sum()
        + rows["position"].iloc[-1] * closes[-1]
    )
    assert rows["equity"].iloc[-1] == pytest.approx(final, rel=1e-9)


@SETTINGS
@given(
    frame=bar_frames(min_size=45, max_size=90),
    targets=st.lists(st.one_of(st.none(), st.floats(-2, 2)), min_size=60, max_size=60),
    penalty=st.floats(1e-6, 0.1),
    reward=st.sampled_from(["log_return", "differential_sharpe"]),
    stop_loss=st.sampled_from([None, 0.01]),
)
def test_turnover_penalty_takes_its_share_of_the_traded_notional_off_the_reward(
    frame: pd.DataFrame,
    targets: list[float | None],
    penalty: float,
    reward: str,
    stop_loss: float | None,
) -> None:
    config = EnvConfig(
        window=3,
        fee_bps=3,
        fixed_fee_usd=0.5,
        reward=reward,
        stop_loss=stop_loss,
        risk=RiskConfig(max_leverage=2.0),
    )
    plain = TradingEnv(_bars(frame), config)
    shaped = TradingEnv(_bars(frame), config.model_copy(update={"turnover_penalty": penalty}))
    plain.reset(seed=0)
    shaped.reset(seed=0)
    previous = config.initial_capital_usd
    for target in targets:
        if plain.t + 1 >= plain.end_bar:
            break
        _, r0, done0, _, _ = plain.step_target(target)
        _, r1, done1, _, _ = shaped.step_target(target)
        # The account is untouched: the penalty shapes the reward only.
        a, b = np.array(plain.snapshot()), np.array(shaped.snapshot())
        a[nb.REWARD] = b[nb.REWARD] = 0.0
        np.testing.assert_array_equal(a, b)
        traded = 0.0
        if plain.fill_units != 0.0:
            traded += abs(plain.fill_units) * plain.fill_price
        if plain.exit_units != 0.0:
            traded += abs(plain.exit_units) * plain.exit_price
        # r0 - r1 cancels two rewards: its rounding is relative to their size (a
        # differential Sharpe reward can be large), not to the difference's.
        scale = max(1.0, abs(r0), abs(r1))
        assert r0 - r1 == pytest.approx(penalty * traded / previous, rel=1e-9, abs=1e-14 * scale)
        if reward == "log_return":
            # Penalty 0 is the log change of equity, as before the penalty existed.
            assert r0 == pytest.approx(math.log(plain.equity / previous), rel=1e-12, abs=1e-15)
        previous = plain.equity
        assert done0 == done1
        if done0:
            break


def test_frictionless_buy_and_hold_is_the_price_ratio(samples_dir: Path) -> None:
    bars = load_bars(samples_dir / "GOOG.parquet")
    env = TradingEnv(bars, EnvConfig(**FRICTIONLESS))
    rows = _run_targets(env, [1.0] + [None] * 10_000)
    first_open = bars.frame["open"].iloc[env.first_bar + 1]
    last_close = bars.frame["close"].iloc[-1]
    assert rows["equity"].iloc[-1] == pytest.approx(100_000 * last_close / first_open, rel=1e-12)
    assert rows["fees"].sum() == 0


# ------------------------------------------------------------------ costs and limits


def _flat_frame(n: int = 60, price: float = 100.0) -> pd.DataFrame:
    index = pd.date_range("2020-01-01", periods=n, freq="1D", tz="UTC", name="timestamp").as_unit(
        "ns"
    )
    rng = np.random.default_rng(3)
    close = price * np.exp(np.cumsum(rng.normal(0, 0.001, n)))
    return pd.DataFrame(
        {
            "open": close,
            "high": close * 1.001,
            "low": close * 0.999,
            "close": close,
            "volume": 1_000.0,
        },
        index=index,
    )


def test_hold_keeps_units_and_band_avoids_churn() -> None:
    env = TradingEnv(_bars(_flat_frame()), EnvConfig(window=2, rebalance_band=0.05))
    rows = _run_targets(env, [0.5, None, None, 0.52, 0.5, 0.0, 0.0])
    units = rows["position"].to_numpy()
    assert units[0] > 0 and units[1] == units[0] and units[2] == units[0]
    assert rows["fill_units"].iloc[3] == 0 and rows["fill_units"].iloc[4] == 0  # inside band
    assert units[5] == 0 and rows["fill_units"].iloc[6] == 0


def test_participation_cap_makes_partial_fills() -> None:
    cfg = EnvConfig(window=2, max_participation=0.1, **FRICTIONLESS)
    env = TradingEnv(_bars(_flat_frame()), cfg)
    rows = _run_targets(env, [1.0] * 15)
    assert rows["fill_units"].iloc[0] == pytest.approx(100.0)  # 10% of 1,000
    assert (rows["fill_units"].iloc[:9] == 100.0).all()
    assert rows["exposure"].iloc[-1] == pytest.approx(1.0, abs=0.02)


def test_risk_limits_hold_whatever_the_policy_asks() -> None:
    frame = _flat_frame()
    risk = RiskConfig(max_leverage=0.5, allow_short=False, max_position_usd=30_000)
    env = TradingEnv(_bars(frame), EnvConfig(window=2, risk=risk, **FRICTIONLESS))
    rows = _run_targets(env, [5.0, -1.0, 0.4])
    assert rows["risk_event"].tolist() == ["max_position_usd", "no_short", "max_position_usd"]
    assert rows["exposure"].iloc[0] == pytest.approx(0.3, rel=1e-6)
    assert rows["position"].iloc[1] == 0
    env = TradingEnv(_bars(frame), EnvConfig(window=2, risk=RiskConfig(max_leverage=2.0)))
    rows = _run_targets(env, [9.0])
    assert rows["risk_event"].iloc[0] == "max_leverage"
    assert rows["exposure"].iloc[0] == pytest.approx(2.0, rel=1e-3)


def test_max_trades_per_day_holds_extra_changes() -> None:
    index = pd.date_range(
        "2020-01-06 14:00", periods=60, freq="1h", tz="UTC", name="timestamp"
    ).as_unit("ns")
    frame = _flat_frame().set_axis(index)
    env = TradingEnv(
        Bars(frame=frame, meta=BarMeta(symbol="T", frequency="1h")),
        EnvConfig(window=2, risk=RiskConfig(max_trades_per_day=2)),
    )
    env.reset(seed=0)
    rows = _run_targets(env, [1.0, 0.0, 1.0, 0.0] + [None] * 40)
    days = frame.index[env.first_bar + 1 : env.first_bar + 1 + len(rows)].floor("D")
    fills = (rows["fill_units"] != 0).groupby(np.asarray(days)).sum()
    assert fills.max() <= 2
    assert "max_trades_per_day" in set(rows["risk_event"])


def test_stop_is_assumed_before_target_when_both_are_touched() -> None:
    frame = _flat_frame()
    n = 40
    frame.iloc[n, frame.columns.get_loc("high")] = frame["close"].iloc[n] * 1.2
    frame.iloc[n, frame.columns.get_loc("low")] = frame["close"].iloc[n] * 0.8
    cfg = EnvConfig(window=2, stop_loss=0.05, take_profit=0.1, **FRICTIONLESS)
    env = TradingEnv(_bars(frame), cfg)
    env.reset(seed=0)
    while env.t < n - 1:
        env.step_target(1.0 if env.units == 0 else None)
    entry = env.entry_price
    env.step_target(None)
    assert env.exit_reason == "stop_loss"
    assert env.exit_price == pytest.approx(entry * 0.95, rel=1e-12)
    assert env.units == 0


def test_gap_through_the_stop_fills_at_the_open() -> None:
    frame = _flat_frame()
    n = 40
    gap_open = frame["close"].iloc[n - 1] * 0.8
    frame.iloc[n, frame.columns.get_loc("open")] = gap_open
    frame.iloc[n, frame.columns.get_loc("low")] = gap_open * 0.99
    frame.iloc[n, frame.columns.get_loc("close")] = gap_open
    cfg = EnvConfig(window=2, stop_loss=0.05, **FRICTIONLESS)
    env = TradingEnv(_bars(frame), cfg)
    env.reset(seed=0)
    while env.t < n:
        env.step_target(1.0 if env.units == 0 else None)
    assert env.exit_reason == "stop_loss" and env.exit_price == pytest.approx(gap_open)


def test_take_profit_for_a_short() -> None:
    frame = _flat_frame()
    n = 40
    frame.iloc[n, frame.columns.get_loc("low")] = frame["close"].iloc[n] * 0.85
    env = TradingEnv(_bars(frame), EnvConfig(window=2, take_profit=0.1, **FRICTIONLESS))
    env.reset(seed=0)
    while env.t < n:
        env.step_target(-1.0 if env.units == 0 else None)
    assert env.exit_reason == "take_profit" and env.units == 0


def test_differential_sharpe_reward_is_finite_and_signed() -> None:
    frame = _flat_frame(200)
    frame[["open", "close"]] = (
        frame[["open", "close"]].to_numpy() * np.linspace(1, 1.5, 200)[:, None]
    )
    frame["high"] = frame[["open", "close"]].max(axis=1) * 1.001
    frame["low"] = frame[["open", "close"]].min(axis=1) * 0.999
    env = TradingEnv(_bars(frame), EnvConfig(window=2, reward="differential_sharpe"))
    env.reset(seed=0)
    rewards = [env.step_target(1.0)[1] for _ in range(100)]
    assert all(math.isfinite(r) for r in rewards)
    assert np.mean(rewards[10:]) > 0


def test_range_too_short_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"env\.window"):
        TradingEnv(_bars(_flat_frame(40)), EnvConfig(window=30))


def test_discrete_actions_accept_integers_only(samples_dir: Path) -> None:
    env = TradingEnv(load_bars(samples_dir / "SP500.parquet"))
    env.reset(seed=0)
    for action in (np.int64(2), 1, np.array(0), np.array([2])):
        env.step(action)
    for bad in (-1, 3, np.array([1, 2]), 1.5):
        with pytest.raises(ValueError, match="is not in Discrete"):
            env.step(bad)


def test_stepping_past_the_end_is_an_error() -> None:
    env = TradingEnv(_bars(_flat_frame(40)), EnvConfig(window=2))
    env.reset(seed=0)
    truncated = False
    while not truncated:
        *_, truncated, _ = env.step(1)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(1)
