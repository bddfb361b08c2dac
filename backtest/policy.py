"""The one contract between the engine and every strategy.

A policy sees an :class:`Observation` at the close of bar *t* and answers with a
:class:`Decision`: a signed **target exposure** as a fraction of equity (1.0 fully long,
-0.5 half short, 0 flat) or ``None`` for HOLD. The engine fills it at bar *t+1*'s open.
These types live in ``backtest`` so the engine can use them without importing
``strategies``; :mod:`strategies.base` re-exports them for strategy authors.

The action table, the same for every policy (LLM answers included):

=========== ============ ==================================================================
action      size ``s``   target exposure
=========== ============ ==================================================================
``BUY``     0 <= s <= 1  ``+s`` (long ``s`` of equity)
``SELL``    0 <= s <= 1  ``-s`` (short ``s`` of equity; with shorting off, the risk limits
                         make it flat)
``CLOSE``   ignored      ``0`` (flat)
``HOLD``    ignored      ``None``: no order, the position in units is unchanged
=========== ============ ==================================================================

Sizes outside [0, 1] are clamped; the risk limits (leverage, position size, shorting,
trade frequency) are applied after the policy decides, whatever it asked for.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from backtest.errors import ConfigError

if TYPE_CHECKING:
    from backtest.data import TextFeed

__all__ = [
    "ACTIONS",
    "AgentSignal",
    "Decision",
    "MarketView",
    "Observation",
    "Policy",
    "action_to_target",
]

ACTIONS: tuple[str, ...] = ("BUY", "SELL", "CLOSE", "HOLD")


def action_to_target(action: str, size: float = 1.0) -> float | None:
    """Map a BUY / SELL / CLOSE / HOLD answer and a size onto a target exposure.

    Args:
        action: One of :data:`ACTIONS` (case-insensitive).
        size: Fraction of equity in [0, 1]; clamped into that range, NaN counts as 0.

    Returns:
        The signed target exposure, or ``None`` for HOLD.

    Raises:
        ConfigError: The action is not one of :data:`ACTIONS`.
    """
    key = action.strip().upper()
    if key not in ACTIONS:
        raise ConfigError(
            f"action {action!r} is not one of {', '.join(ACTIONS)}. "
            "Fix: map the answer onto BUY, SELL, CLOSE or HOLD."
        )
    if key == "HOLD":
        return None
    if key == "CLOSE":
        return 0.0
    s = 0.0 if not math.isfinite(size) else min(max(float(size), 0.0), 1.0)
    return s if key == "BUY" else -s


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentSignal:
    """One agent's view, as in the seed: a signal in [-1, 1] and a confidence in [0, 1].

    Attributes:
        agent_name: Role that produced it (``chart_analysis``, ``narrative``, ``drl``...).
        signal: -1 bearish .. +1 bullish.
        confidence: 0 .. 1.
        features: Named numbers the agent extracted (support level, regime score...).
        reasoning: The agent's text, kept verbatim.
        abstain: True when the agent gave no usable answer (failure kept as data).
    """

    agent_name: str
    signal: float
    confidence: float
    features: Mapping[str, float] = field(default_factory=dict)
    reasoning: str = ""
    abstain: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "features", MappingProxyType(dict(self.features)))


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """What a policy decided at the close of one bar.

    Attributes:
        target_position: Signed target exposure (fraction of equity), or ``None`` for HOLD.
        confidence: The policy's confidence in [0, 1].
        reasoning: Free text kept in ``decisions.parquet``.
        signals: The agent signals that led to it.
        llm_calls: Records of the LLM calls this decision caused.
        abstain: True when the policy could not decide (an explicit abstain, never a
            silent neutral); the target is then ``None`` (HOLD).
        action: The policy's own word for it (``BUY``, ``SELL``...), for the record.
    """

    target_position: float | None
    confidence: float = 1.0
    reasoning: str = ""
    signals: tuple[AgentSignal, ...] = ()
    llm_calls: tuple[Any, ...] = ()
    abstain: bool = False
    action: str = ""


_NO_TEXT = pd.DataFrame(columns=["available_at", "headline", "text", "source"])


class MarketView:
    """Read-only access to the bars (and text) known at the current decision time.

    Every array it returns ends at the current bar *t*; nothing after *t* can be
    reached through it. The arrays are read-only views, so a policy cannot alter them.
    """

    __slots__ = (
        "_arrays",
        "_close_ns",
        "_documents",
        "_news",
        "_t",
        "_ts_ns",
        "frequency",
        "symbol",
    )

    def __init__(
        self,
        *,
        timestamps_ns: np.ndarray,
        close_times_ns: np.ndarray | Callable[[], np.ndarray],
        open_: np.ndarray,
        high: np.ndarray,
        low: np.ndarray,
        close: np.ndarray,
        volume: np.ndarray,
        symbol: str,
        frequency: str,
        news: TextFeed | None = None,
        documents: TextFeed | None = None,
    ) -> None:
        arrays = {"open": open_, "high": high, "low": low, "close": close, "volume": volume}
        self._arrays = {}
        for name, values in arrays.items():
            frozen = np.array(values, dtype=np.float64, copy=True)
            frozen.setflags(write=False)
            self._arrays[name] = frozen
        self._ts_ns = np.array(timestamps_ns, dtype=np.int64, copy=True)
        self._ts_ns.setflags(write=False)
        self._close_ns: np.ndarray | Callable[[], np.ndarray] = close_times_ns
        if not callable(close_times_ns):
            self._close_ns = self._frozen_times(close_times_ns)
        self._news = news
        self._documents = documents
        self.symbol = symbol
        self.frequency = frequency
        self._t = -1

    @staticmethod
    def _frozen_times(values: np.ndarray) -> np.ndarray:
        frozen = np.array(values, dtype=np.int64, copy=True)
        frozen.setflags(write=False)
        return frozen

    def _close_times(self) -> np.ndarray:
        if callable(self._close_ns):
            self._close_ns = self._frozen_times(self._close_ns())
        return self._close_ns

    def window(self, start: int, stop: int) -> MarketView:
        """A view of bars ``[start, stop)`` only (indices from 0), with the same text.

        A walk-forward fold's policies get one, so they cannot see (or train on) bars
        before their train block.
        """
        view = MarketView.__new__(MarketView)
        view._arrays = {}
        for name, values in self._arrays.items():
            part = values[start:stop]
            part.setflags(write=False)
            view._arrays[name] = part
        view._ts_ns = self._ts_ns[start:stop]
        view._close_ns = (
            (lambda: self._close_times()[start:stop])
            if callable(self._close_ns)
            else self._close_ns[start:stop]
        )
        view._news = self._news
        view._documents = self._documents
        view.symbol = self.symbol
        view.frequency = self.frequency
        view._t = -1
        return view

    def _seek(self, t: int) -> None:
        # The engine moves the view forward; policies only read.
        self._t = t

    @property
    def t(self) -> int:
        """Index of the current bar in the dataset."""
        return self._t

    @property
    def timestamp(self) -> pd.Timestamp:
        """Timestamp (open or session label) of the current bar."""
        return pd.Timestamp(int(self._ts_ns[self._t]), tz="UTC")

    @property
    def decision_time(self) -> pd.Timestamp:
        """When the current bar's close is known: the latest instant a decision may use."""
        return pd.Timestamp(int(self._close_times()[self._t]), tz="UTC")

    def __len__(self) -> int:
        return self._t + 1

    def _upto(self, name: str) -> np.ndarray:
        return self._arrays[name][: self._t + 1]

    @property
    def open(self) -> np.ndarray:
        """Opens of bars 0..t."""
        return self._upto("open")

    @property
    def high(self) -> np.ndarray:
        """Highs of bars 0..t."""
        return self._upto("high")

    @property
    def low(self) -> np.ndarray:
        """Lows of bars 0..t."""
        return self._upto("low")

    @property
    def close(self) -> np.ndarray:
        """Closes of bars 0..t."""
        return self._upto("close")

    @property
    def volume(self) -> np.ndarray:
        """Volumes of bars 0..t."""
        return self._upto("volume")

    @property
    def timestamps_ns(self) -> np.ndarray:
        """Bar timestamps 0..t as int64 UTC nanoseconds."""
        return self._ts_ns[: self._t + 1]

    def frame(self, lookback: int | None = None) -> pd.DataFrame:
        """The last ``lookback`` bars up to t as a DataFrame (slow; for prompts and charts)."""
        stop = self._t + 1
        start = 0 if lookback is None else max(0, stop - lookback)
        index = pd.DatetimeIndex(self._ts_ns[start:stop], tz="UTC", name="timestamp")
        return pd.DataFrame({k: v[start:stop] for k, v in self._arrays.items()}, index=index)

    def news(self, limit: int | None = None) -> pd.DataFrame:
        """News whose ``available_at`` is no later than the decision time."""
        if self._news is None:
            return _NO_TEXT.copy(deep=False)
        return self._news.visible(int(self._close_times()[self._t]), limit=limit)

    def documents(self, limit: int | None = None) -> pd.DataFrame:
        """Documents whose ``available_at`` is no later than the decision time."""
        if self._documents is None:
            return _NO_TEXT.copy(deep=False)
        return self._documents.visible(int(self._close_times()[self._t]), limit=limit)


class Observation:
    """What a policy is shown at the close of bar ``t`` (read-only).

    Attributes:
        t: Index of the bar in the dataset.
        features: The environment's observation vector (a fresh copy; the same vector a
            DRL agent is trained on). Built on first access, so policies that never read
            it do not pay for it.
        position: Current exposure as a fraction of equity, at the close.
        equity_usd: Current equity at the close.
        market: Bars and text up to and including bar ``t``.
    """

    __slots__ = ("_equity", "_features", "_make", "_market", "_position", "_t")

    def __init__(
        self,
        t: int,
        features: np.ndarray | Callable[[], np.ndarray],
        position: float,
        equity_usd: float,
        market: MarketView,
    ) -> None:
        self._t = t
        self._features: np.ndarray | None = None
        self._make: Callable[[], np.ndarray] | None = None
        if callable(features):
            self._make = features
        else:
            self._features = features
        self._position = position
        self._equity = equity_usd
        self._market = market

    @property
    def t(self) -> int:
        """Index of the bar in the dataset."""
        return self._t

    @property
    def features(self) -> np.ndarray:
        """The observation vector (window of features, exposure, unrealised P&L)."""
        if self._features is None:
            assert self._make is not None
            self._features = self._make()
        return self._features

    @property
    def position(self) -> float:
        """Current exposure as a fraction of equity."""
        return self._position

    @property
    def equity_usd(self) -> float:
        """Current equity in dollars."""
        return self._equity

    @property
    def market(self) -> MarketView:
        """Bars and text up to and including bar ``t``."""
        return self._market


@runtime_checkable
class Policy(Protocol):
    """Anything that can trade: the engine knows nothing else about a strategy.

    Optional methods, looked up with ``getattr`` (a policy without them is still a Policy):

    - ``bind(env_config)``: a policy that trains on the run's environment (DRL) gets the
      run's :class:`~backtest.config.EnvConfig` (risk limits included), once, before
      ``reset``.
    - ``models_used() -> list[str]``: the LLM model ids the policy may call, asked after
      the run for the temporal-leakage guard (training cutoffs against the evaluated
      window).
    - ``estimate_llm_cost(market, first_bar) -> {"calls": int, "usd": float}``: the
      run's LLM calls and dollars, asked before any strategy runs, with ``market``
      positioned at the last evaluated bar.
    - ``show_progress(progress)``: a policy that trains gets the engine's
      ``rich.progress.Progress`` before ``reset`` when run with ``progress=True`` (the CLI),
      else ``None``.
    - ``close()``: called when the policy's replay ends, to release what it holds open
      (an LLM policy's cassette shard).
    - ``input_hashes(params) -> Mapping[str, str]`` (a classmethod): a policy class that
      reads files besides the data (routing files, prompt templates) hashes them from its
      constructor's parameters; the hashes enter the run id
      (:func:`backtest.engine.run_inputs`).
    """

    name: str

    def reset(self, *, seed: int | None, market: MarketView) -> None:
        """Prepare for a new run over ``market``, seeded."""
        ...

    def act(self, obs: Observation) -> Decision:
        """Decide at the close of bar ``obs.t``."""
        ...
