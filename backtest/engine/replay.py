"""Stage 3, replay: the bar loop, each strategy stepping a TradingEnv over the same bars.

The features are computed once over all the bars (causal); at the close of every bar of
the evaluated range a policy sees an :class:`~backtest.policy.Observation` (bars up to that
close only) and returns a :class:`~backtest.policy.Decision`, which the env fills at the
next open after the risk limits. A :class:`_Track` per strategy records every bar. With
walk-forward folds every strategy is rebuilt and replayed fold by fold, and its test blocks
are stitched into one track. Before any strategy runs, the policies that call LLMs are asked
for an estimate of their calls and cost (:func:`_llm_cost_estimate`).

Stage 2 (train) has no module here: a DRL policy trains, or loads its cached model, when it
is bound to the run's env config and reset at the start of its replay
(:mod:`strategies.drl`), which the engine does not import.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from backtest import _env_nb as nb
from backtest._env_nb import (
    CASH,
    ENTRY,
    EQUITY,
    EXIT_UNITS,
    EXPOSURE,
    FEES,
    FILL_UNITS,
    FINANCING,
    RISK_CODE,
    UNITS,
)
from backtest.calendars import bar_close_times
from backtest.config import StrategyConfig
from backtest.data import Bars, Fold, TextFeed, load_text
from backtest.engine.folds import carry_into, training_stop
from backtest.engine.plan import Member, build_policy, parent_of
from backtest.engine.track import _Track
from backtest.env import TradingEnv
from backtest.errors import ConfigError
from backtest.features import Features, compute_features
from backtest.llm.budget import format_usd
from backtest.policy import Decision, MarketView, Observation, Policy

__all__: list[str] = []


def _call_cost(call: Any) -> float:
    value = call.get("cost_usd") if isinstance(call, Mapping) else getattr(call, "cost_usd", 0.0)
    return float(value or 0.0)


def _replay(
    policy: Policy,
    env: TradingEnv,
    view: MarketView,
    seed: int,
    progress: Any = None,
    task: Any = None,
    carry: tuple[list[float], float] | None = None,
) -> tuple[_Track, bool]:
    env.reset(seed=seed)
    if carry is not None:  # a walk-forward fold that keeps the previous fold's account
        carry_into(env, *carry)
    # At reset a policy sees the bars before its first decision, nothing later.
    view._seek(env.t - 1)
    policy.reset(seed=seed, market=view)
    start, stop = env.t, env.end_bar
    tr = _Track(stop - start)
    # Bound methods, fetched once: this loop runs once per bar per strategy.
    act, observe = policy.act, env.observation_for
    rec_target, rec_units, rec_exposure = tr.target.append, tr.units.append, tr.exposure.append
    rec_cash, rec_equity, rec_decision = tr.cash.append, tr.equity.append, tr.decisions.append
    # The compiled accounting step with its fixed arguments bound: env.advance without its
    # end-of-range check, which the loop below makes itself (t + 1 < stop before a step).
    fixed = (env._state, env._params, env._bars)
    advance = functools.partial(nb.entry_point(nb.advance, *fixed, 0.0), *fixed)
    nan, partial = math.nan, functools.partial

    terminated = False
    step_every = max(1, (stop - start) // 100)
    snapshot = env._state.tolist  # the env's state vector is reused across steps
    closes = env.bars.frame["close"].tolist()
    t = start
    while True:
        # State at bar t's close (after the fill at its open, exits and financing).
        k = t - start
        s = snapshot()
        if s[FILL_UNITS] or s[EXIT_UNITS] or s[FEES] or s[FINANCING] or s[RISK_CODE]:
            tr.event(k, env)
        view._t = t  # view._seek(t), inlined
        units, equity, exposure = s[UNITS], s[EQUITY], s[EXPOSURE]
        unrealised = (
            units * (closes[t] - s[ENTRY]) / equity if units != 0.0 and equity > 0.0 else 0.0
        )
        decision = act(
            Observation(t, partial(observe, t, exposure, unrealised), exposure, equity, view)
        )
        calls = decision.llm_calls
        if calls:
            cost = math.fsum(_call_cost(c) for c in calls)
            env.charge(cost)
            tr.llm_cost[k] = cost
            tr.llm_calls[k] = len(calls)
            tr.record_calls(k, calls)
            # The decision is kept (decisions.parquet, controls) without its call objects,
            # which the columns above now hold: ~0.5 KB less per call over a long replay.
            decision = dataclasses.replace(decision, llm_calls=())
            s = snapshot()
        rec_decision(decision)
        if decision.abstain:
            tr.abstain[k] = True
        target = decision.target_position
        if target is None:
            target = nan
        rec_target(target)
        rec_units(s[UNITS])
        rec_exposure(s[EXPOSURE])
        rec_cash(s[CASH])
        rec_equity(s[EQUITY])
        if t + 1 >= stop or terminated:
            break
        terminated = advance(target)
        t += 1
        if progress is not None and (t - start) % step_every == 0:
            progress.update(task, advance=step_every)
    if progress is not None:
        progress.update(task, completed=stop - start)
    report = getattr(policy, "run_report", None)  # e.g. the hybrid's threshold crossings
    if callable(report):
        tr.policy_report = report()
    close = getattr(policy, "close", None)
    if callable(close):  # release what the policy holds open (an LLM cassette's shard)
        close()
    tr.finish()
    return tr, terminated


def _concat_tracks(parts: list[_Track]) -> _Track:
    """One track from consecutive finished ones (the folds of a walk-forward run)."""
    out = _Track(sum(p.n for p in parts))
    for name in ("target", "units", "exposure", "cash", "equity"):
        setattr(out, name, np.concatenate([getattr(p, name) for p in parts]))
    for name in (
        "fill_units",
        "fill_price",
        "exit_units",
        "exit_price",
        "fees",
        "financing",
        "llm_cost",
        "llm_calls",
        "abstain",
    ):
        setattr(out, name, np.concatenate([getattr(p, name) for p in parts]))
    offset = 0
    for p in parts:
        for field, values in p.call_columns.items():
            out.call_columns[field] += values
        out.call_bars += [offset + k for k in p.call_bars]
        offset += len(p.decisions)  # call bars index the decisions (a ruined fold's stop early)
    out.exit_reason = [r for p in parts for r in p.exit_reason]
    out.risk_event = [r for p in parts for r in p.risk_event]
    out.decisions = [d for p in parts for d in p.decisions]
    if any(p.policy_report is not None for p in parts):
        out.policy_report = {"folds": [p.policy_report for p in parts]}
    return out


def _idle_track(n: int, equity: float) -> _Track:
    """A ruined account through a later fold: no decisions, its final equity throughout."""
    tr = _Track(n)
    tr.units, tr.exposure, tr.cash, tr.equity = [0.0], [0.0], [equity], [equity]
    tr.finish()
    tr.target = np.full(n, np.nan)  # type: ignore[assignment]
    tr.decisions = [Decision(target_position=None, abstain=True, reasoning="ruined")] * n
    return tr


def _load_text_beside(path: Path, kind: str) -> TextFeed | None:
    folder = path if path.is_dir() else path.parent
    candidate = folder / f"{kind}.parquet"
    return load_text(candidate, kind=kind) if candidate.exists() else None


def _market(bars: Bars, data_path: Path) -> tuple[Features, MarketView]:
    """The features (computed once, causal) and the policies' view of the bars.

    News and documents are read from ``news.parquet`` and ``documents.parquet`` beside the
    data, when present.
    """
    frame = bars.frame
    features: Features = compute_features(
        frame["open"].to_numpy(),
        frame["high"].to_numpy(),
        frame["low"].to_numpy(),
        frame["close"].to_numpy(),
        frame["volume"].to_numpy(),
    )
    timestamps = frame.index
    view = MarketView(
        timestamps_ns=timestamps.asi8,
        # Only policies that read news, documents or the decision time need close times,
        # and deriving them may build an exchange calendar: do it on first use.
        close_times_ns=lambda: bar_close_times(timestamps, bars.frequency, bars.meta.calendar),
        open_=frame["open"].to_numpy(),
        high=frame["high"].to_numpy(),
        low=frame["low"].to_numpy(),
        close=frame["close"].to_numpy(),
        volume=frame["volume"].to_numpy(),
        symbol=bars.symbol,
        frequency=bars.frequency,
        news=_load_text_beside(data_path, "news"),
        documents=_load_text_beside(data_path, "documents"),
    )
    return features, view


def _llm_cost_estimate(
    policies: list[Policy],
    specs: list[StrategyConfig],
    view: MarketView,
    first: int,
    stop: int,
    warnings: list[str],
) -> dict[str, Any]:
    """Ask each policy that calls LLMs for its estimate (see :mod:`backtest.engine`).

    A policy may add ``max_run_usd`` (its hard cap) to its answer: an estimate above it
    gets a warning, since the cap will stop the calls partway through the run.
    """
    per_strategy: dict[str, dict[str, Any]] = {}
    view._seek(stop - 1)
    for policy, spec in zip(policies, specs, strict=True):
        estimate = getattr(policy, "estimate_llm_cost", None)
        if callable(estimate):
            result = estimate(view, first)
            per_strategy[spec.name] = {
                "calls": int(result["calls"]),
                "usd": float(result["usd"]),
            }
            cap = result.get("max_run_usd")
            if cap is not None and float(result["usd"]) > cap:
                warnings.append(
                    f"strategy {spec.name!r}: its {int(result['calls']):,} LLM calls are "
                    f"estimated at up to {format_usd(float(result['usd']))}, above its hard "
                    f"cap max_run_usd = {format_usd(float(cap))}: once the cap is reached no "
                    "call is made and the decisions abstain. The estimate is an upper bound "
                    "(every answer at max_tokens); raise max_run_usd, call less often "
                    "(every_n_bars) or route to cheaper models."
                )
    return {
        "calls": sum(e["calls"] for e in per_strategy.values()),
        "usd": math.fsum(e["usd"] for e in per_strategy.values()),
        "per_strategy": per_strategy,
    }


def _follow_parent(policy: Policy, name: str, tracks: dict[str, _Track], first_bar: int) -> None:
    """Give a control the decisions of the strategy it replays (already run, same bars).

    A control (``<name>~<kind>``, see :func:`backtest.engine.plan.parent_of`) implements
    ``use_parent_decisions(bars, decisions)``; ``bars`` are the bar indices the parent
    decided on, in the same view the control will see.
    """
    parent = parent_of(name)
    hook = getattr(policy, "use_parent_decisions", None)
    if parent is None or not callable(hook):
        return
    track = tracks.get(parent)
    if track is None:
        raise ConfigError(
            f"strategy {name!r} is a control of {parent!r}, which did not run before it. "
            "Fix: list the strategy before its controls, or set controls = false."
        )
    decisions = track.decisions
    hook(range(first_bar, first_bar + len(decisions)), decisions)


def _replay_all(
    members: list[Member],
    policies: list[Policy],
    bars: Bars,
    features: Features,
    view: MarketView,
    env_config: Any,
    span: tuple[int, int],
    folds: list[Fold] | None,
    progress: bool,
    warnings: list[str],
    carry_position: bool = False,
) -> tuple[dict[str, _Track], int]:
    """Replay every strategy over the evaluated range ``span`` (or fold by fold).

    Args:
        members: The run's strategies (:func:`backtest.engine.plan._members`).
        policies: Their policies, in the same order (unused with walk-forward folds: each
            fold builds its own).
        bars: The run's bars.
        features: The features of ``bars``.
        view: The policies' view of ``bars``.
        env_config: The env settings, risk limits included.
        span: The evaluated range ``(start, stop)``, in bars.
        folds: The walk-forward folds, or None.
        progress: Show a progress bar per strategy.
        warnings: Where to append what the run should warn about.
        carry_position: Walk-forward folds start from the previous fold's account.

    Returns:
        Each strategy's track, and the first bar traded (the range's first bar, or a later
        one when the feature window needs more history).
    """
    start, stop = span
    specs = [spec for spec, _, _ in members]
    seeds = [seed for _, _, seed in members]
    tracks: dict[str, _Track] = {}
    first_bar = None
    bar_progress = None
    if progress:
        from backtest.progress import make_progress

        bar_progress = make_progress()  # bars on a terminal, plain lines on a pipe
        bar_progress.start()
    try:
        if folds is not None:
            tracks = _walk_forward(
                folds,
                members,
                bars,
                env_config,
                view,
                bar_progress,
                warnings,
                carry_position,
            )
            first_bar = start
        # With walk-forward folds, each fold built and ran its own policies above.
        runs = zip(policies, specs, seeds, strict=True) if folds is None else iter(())
        for policy, spec, seed in runs:
            env = TradingEnv(bars, env_config, start=start, end=stop, features=features)
            task = None
            if bar_progress is not None:
                task = bar_progress.add_task(f"{spec.name}", total=env.end_bar - env.first_bar)
            bind = getattr(policy, "bind", None)
            if callable(bind):  # policies that train on the run's env (DRL) take its config
                bind(env_config)
            show = getattr(policy, "show_progress", None)
            if callable(show):  # policies that train can show it beside the bar progress
                show(bar_progress)
            _follow_parent(policy, spec.name, tracks, env.first_bar)
            track, ruined = _replay(policy, env, view, seed, bar_progress, task)
            if ruined:
                warnings.append(f"strategy {spec.name!r} lost its whole equity and stopped trading")
            tracks[spec.name] = track
            first_bar = env.first_bar
    finally:
        if bar_progress is not None:
            bar_progress.stop()
    assert first_bar is not None
    if first_bar > start:
        warnings.append(
            f"the first {first_bar - start} bar(s) of the evaluated split only fill "
            f"the {env_config.window}-bar feature window; trading starts at "
            f"{bars.frame.index[first_bar]}"
        )
    return tracks, first_bar


def _walk_forward(
    folds: list[Fold],
    expanded: list[tuple[StrategyConfig, int, int]],
    bars: Bars,
    env_config: Any,
    view: MarketView,
    bar_progress: Any,
    warnings: list[str],
    carry_position: bool = False,
) -> dict[str, _Track]:
    """Rebuild and run every strategy on each fold; stitch the test blocks per strategy.

    Fold ``k``'s policies see the bars from its train block's start to its test block's
    end (up to the current bar only), so a DRL agent refits on the bars before the test
    block; a policy with ``train_until`` trains on the fold's train block only, ``gap``
    bars before the test block (:mod:`backtest.engine.folds`). Each strategy's fold
    starts with the equity its previous fold ended with, flat (a position open at a fold's
    end is valued at that close and not carried), or with ``carry_position`` the previous
    fold's whole account.
    """
    frame = bars.frame
    capital = {spec.name: env_config.initial_capital_usd for spec, _, _ in expanded}
    parts: dict[str, list[_Track]] = {spec.name: [] for spec, _, _ in expanded}
    accounts: dict[str, tuple[list[float], float]] = {}  # last state and target, per strategy
    for k, fold in enumerate(folds):
        lo = fold.train.start
        sub = Bars(frame=frame.iloc[lo : fold.test.stop], meta=bars.meta)
        sub_frame = sub.frame
        sub_features = compute_features(
            *(sub_frame[c].to_numpy() for c in ("open", "high", "low", "close", "volume"))
        )
        sub_view = view.window(lo, fold.test.stop)
        for spec, index, seed in expanded:
            name = spec.name
            size = fold.test.stop - fold.test.start
            if capital[name] <= 0:
                parts[name].append(_idle_track(size, capital[name]))
                continue
            cfg = env_config.model_copy(update={"initial_capital_usd": capital[name]})
            env = TradingEnv(
                sub,
                cfg,
                start=fold.test.start - lo,
                end=fold.test.stop - lo,
                features=sub_features,
            )
            if env.first_bar != fold.test.start - lo:
                raise ConfigError(
                    f"splits.walk_forward: fold {k}'s train block ({fold.train.stop - lo} "
                    f"bars) is shorter than the feature warm-up and the {cfg.window}-bar "
                    "window. Fix: raise train_size, or use fewer folds."
                )
            policy = build_policy(spec, index)
            bind = getattr(policy, "bind", None)
            if callable(bind):
                bind(cfg)
            until = getattr(policy, "train_until", None)
            if callable(until):  # the gap also separates training from the test block
                until(training_stop(fold, lo))
            show = getattr(policy, "show_progress", None)
            if callable(show):
                show(bar_progress)
            task = None
            if bar_progress is not None:
                task = bar_progress.add_task(f"{name} fold {k}", total=size)
            this_fold = {n: p[-1] for n, p in parts.items() if len(p) == k + 1}
            _follow_parent(policy, name, this_fold, env.first_bar)
            carry = accounts.get(name) if carry_position else None
            track, ruined = _replay(policy, env, sub_view, seed, bar_progress, task, carry)
            accounts[name] = (env.snapshot(), float(track.target[-1]))
            if ruined:
                warnings.append(
                    f"strategy {name!r} lost its whole equity in fold {k} and stopped trading"
                )
            capital[name] = float(track.equity[-1])
            parts[name].append(track)
    return {name: _concat_tracks(p) for name, p in parts.items()}
