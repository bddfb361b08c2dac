"""The questions a run's verdict answers, asked of its ledger(s) (see ``docs/verdict.md``).

A run's strategies play roles: ``hybrid`` (DRL + LLM), ``drl`` (the DRL agent alone),
``llm`` (the LLM graph alone), the benchmark (buy-and-hold), and the controls the engine
adds to each hybrid (``<hybrid>~llm0``, ``<hybrid>~random_llm``, :mod:`strategies.controls`).
The passive controls are built here from the benchmark's returns and each member's
realised risk (:mod:`backtest.passive`). Each question compares a challenger ``a`` with a
baseline ``b``, seed ``k`` with seed ``k``, by :func:`backtest.inference.paired_inference`:

- ``hybrid_vs_drl_net`` / ``_gross``: the hybrid after LLM cost (or with its answers free)
  against the DRL agent alone: the product's question;
- ``llm_vs_llm0`` / ``_gross``: the hybrid against ``<hybrid>~llm0``: what the LLM's answers add;
- ``llm_vs_random_llm`` / ``_gross``: against ``<hybrid>~random_llm``: information vs a signal of
  the same distribution on the same schedule;
- ``hybrid_vs_matched_passive`` / ``hybrid_vs_voltarget_passive``: against the benchmark held
  at the hybrid's mean absolute exposure / scaled to its volatility: return for the risk taken;
- ``llm_only_vs_buy_and_hold`` / ``llm_only_vs_matched_passive``: the LLM graph on its own.

Each question is asked of Sharpe ratio, annual return and max drawdown. A strategy run
once (``seeds = 1``, or the deterministic benchmark) pairs its one member with every seed
of the other side, and the comparison counts the other side's seeds. Several assets pool:
every strategy and seed runs on each asset, the bootstrap resamples assets, then seeds,
then blocks of bars; a row per asset stands beside the pooled one.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from backtest.inference import paired_inference
from backtest.metrics import returns_from_equity
from backtest.passive import matched_exposure_returns, matched_volatility_returns
from backtest.verdict import verdict_sentence

__all__ = [
    "QUESTIONS",
    "AssetSeries",
    "Member",
    "Roles",
    "asset_series",
    "display_name",
    "run_verdict",
]

_MEMBER = re.compile(r"^(?P<group>.+)@(?P<k>\d+)$")
_STREAM = 0x7E4D  # spawn key of the verdict's bootstrap streams
METRICS = ("sharpe", "annual_return", "max_drawdown")
QUESTIONS = (
    "hybrid_vs_drl_net",
    "hybrid_vs_drl_gross",
    "llm_vs_llm0",
    "llm_vs_llm0_gross",
    "llm_vs_random_llm",
    "llm_vs_random_llm_gross",
    "hybrid_vs_matched_passive",
    "hybrid_vs_voltarget_passive",
    "llm_only_vs_buy_and_hold",
    "llm_only_vs_matched_passive",
)


@dataclass(frozen=True)
class Roles:
    """Which strategy group plays which part (group names, without ``@k``)."""

    hybrids: tuple[str, ...] = ()
    drl: str | None = None
    llms: tuple[str, ...] = ()
    benchmark: str | None = None


@dataclass
class Member:
    """One member's per-bar series: net and gross of LLM cost, and its exposure."""

    net: np.ndarray  # per-bar returns after LLM cost
    gross: np.ndarray  # per-bar returns with the LLM cost added back
    exposure: np.ndarray  # signed exposure at each bar's close


@dataclass
class AssetSeries:
    """Per-bar series of every strategy group's members on one asset."""

    asset: str
    groups: dict[str, dict[int, Member]] = field(default_factory=dict)
    risk_free: float | np.ndarray = 0.0  # annual, one number or one per bar


def asset_series(
    ledger: pa.Table,
    *,
    asset: str,
    initial_capital_usd: float,
    risk_free: float | np.ndarray = 0.0,
) -> AssetSeries:
    """Read every strategy's per-bar returns and exposure from a run's ledger."""
    out = AssetSeries(asset=asset, risk_free=risk_free)
    names = list(dict.fromkeys(ledger["strategy"].to_pylist()))
    for name in names:
        rows = ledger.filter(pc.equal(ledger["strategy"], name))
        equity = rows["equity_usd"].to_numpy()
        cost = np.nan_to_num(rows["llm_cost_usd"].to_numpy(zero_copy_only=False))
        net = np.concatenate([[initial_capital_usd], equity])
        gross = net + np.concatenate([[0.0], np.cumsum(cost)])
        match = _MEMBER.match(name)
        group, k = (match["group"], int(match["k"])) if match else (name, 0)
        out.groups.setdefault(group, {})[k] = Member(
            net=returns_from_equity(net),
            gross=returns_from_equity(gross),
            exposure=rows["exposure"].to_numpy(zero_copy_only=False).astype(np.float64),
        )
    return out


def _pairs(
    assets: Sequence[AssetSeries], a: str, b: str
) -> list[tuple[list[int], dict[int, Member], dict[int, Member]]] | None:
    """Per asset: the seeds of the pair and both sides' members (one-member sides repeat)."""
    out = []
    for series in assets:
        side_a, side_b = series.groups.get(a), series.groups.get(b)
        if not side_a or not side_b:
            return None
        if len(side_a) == 1 and len(side_b) > 1:
            only = next(iter(side_a.values()))
            side_a = {k: only for k in side_b}
        elif len(side_b) == 1 and len(side_a) > 1:
            only = next(iter(side_b.values()))
            side_b = {k: only for k in side_a}
        seeds = sorted(set(side_a) & set(side_b))
        if not seeds:
            return None
        out.append((seeds, side_a, side_b))
    return out


def _passive(series: AssetSeries, benchmark: str, of: str, how: str) -> dict[int, Member] | None:
    bench = series.groups.get(benchmark)
    strategy = series.groups.get(of)
    if not bench or not strategy:
        return None
    b = next(iter(bench.values())).net
    out = {}
    for k, member in strategy.items():
        if how == "matched":
            returns, level = matched_exposure_returns(b, member.exposure)
        else:
            returns, level = matched_volatility_returns(b, member.net)
        out[k] = Member(net=returns, gross=returns, exposure=np.full(b.size, level))
    return out


def _questions(roles: Roles) -> list[tuple[str, str, str, str, str]]:
    """``(question, a, b, a's basis, b's basis)`` for the roles present."""
    out = []
    for h in roles.hybrids:
        if roles.benchmark == h:
            continue  # the benchmark itself: nothing to compare it with
        if roles.drl is not None:
            out.append(("hybrid_vs_drl_net", h, roles.drl, "net", "net"))
            out.append(("hybrid_vs_drl_gross", h, roles.drl, "gross", "gross"))
        out.append(("llm_vs_llm0", h, f"{h}~llm0", "net", "net"))
        out.append(("llm_vs_llm0_gross", h, f"{h}~llm0", "gross", "gross"))
        out.append(("llm_vs_random_llm", h, f"{h}~random_llm", "net", "net"))
        out.append(("llm_vs_random_llm_gross", h, f"{h}~random_llm", "gross", "gross"))
        if roles.benchmark is not None:
            out.append(("hybrid_vs_matched_passive", h, f"~matched:{h}", "net", "net"))
            out.append(("hybrid_vs_voltarget_passive", h, f"~voltarget:{h}", "net", "net"))
    for llm in roles.llms:
        if roles.benchmark is not None and roles.benchmark != llm:
            out.append(("llm_only_vs_buy_and_hold", llm, roles.benchmark, "net", "net"))
            out.append(("llm_only_vs_matched_passive", llm, f"~matched:{llm}", "net", "net"))
    return out


def _with_passives(assets: Sequence[AssetSeries], roles: Roles) -> list[AssetSeries]:
    if roles.benchmark is None:
        return list(assets)
    out = []
    for series in assets:
        groups = dict(series.groups)
        for of in (*roles.hybrids, *roles.llms):
            for how in ("matched", "voltarget"):
                passive = _passive(series, roles.benchmark, of, how)
                if passive is not None:
                    groups[f"~{how}:{of}"] = passive
        out.append(AssetSeries(series.asset, groups, series.risk_free))
    return out


def display_name(name: str, benchmark: str | None) -> str:
    """``~matched:hybrid`` reads as ``buy_and_hold~matched:hybrid``."""
    return f"{benchmark or 'benchmark'}{name}" if name.startswith("~") else name


def run_verdict(
    assets: Sequence[AssetSeries],
    roles: Roles,
    *,
    periods_per_year: float,
    seed: int,
    min_seeds: int = 10,
    alpha: float = 0.05,
    reps: int = 2000,
    metrics: Sequence[str] = METRICS,
    per_asset: bool = True,
) -> list[dict[str, Any]]:
    """Ask every question the roles allow; one entry per question, metric and asset.

    The pooled entries (``asset = "pooled"``) come first, Sharpe first; with several
    assets an entry per asset follows each pooled one. Each entry is
    :meth:`PairedResult.to_dict` plus ``question`` (the id of :data:`QUESTIONS`),
    ``text`` (the question in words), ``asset`` and ``sentence``.
    """
    assets = _with_passives(assets, roles)
    entries: list[dict[str, Any]] = []
    scopes: list[tuple[str, list[AssetSeries]]] = [("pooled", assets)]
    if per_asset and len(assets) > 1:
        scopes += [(series.asset, [series]) for series in assets]
    for question, a, b, basis_a, basis_b in _questions(roles):
        for metric in metrics:
            for scope, chosen in scopes:
                pairs = _pairs(chosen, a, b)
                if pairs is None:
                    continue
                a_returns = [
                    np.stack([getattr(side_a[k], basis_a) for k in seeds])
                    for seeds, side_a, _ in pairs
                ]
                b_returns = [
                    np.stack([getattr(side_b[k], basis_b) for k in seeds])
                    for seeds, _, side_b in pairs
                ]
                key = zlib.crc32(f"{question}\0{a}\0{b}\0{metric}\0{scope}".encode())
                stream = np.random.SeedSequence(seed, spawn_key=(_STREAM, key))
                name_a = display_name(a, roles.benchmark)
                name_b = display_name(b, roles.benchmark)
                result = paired_inference(
                    a_returns,
                    b_returns,
                    a=name_a,
                    b=name_b,
                    periods_per_year=periods_per_year,
                    seed=stream,
                    metric=metric,  # type: ignore[arg-type]
                    risk_free=[series.risk_free for series in chosen],
                    basis="before cost" if basis_a == "gross" else "after cost",
                    reps=reps,
                    alpha=alpha,
                    min_seeds=min_seeds,
                    question=_TEXT[question].format(a=name_a, b=name_b),
                )
                entry = result.to_dict()
                entry["text"] = entry.pop("question")
                entry = {"question": question, "asset": scope, **entry}
                entry["sentence"] = verdict_sentence(result)
                entries.append(entry)
    return entries


_TEXT: Mapping[str, str] = {
    "hybrid_vs_drl_net": "Does {a} beat {b} after LLM cost?",
    "hybrid_vs_drl_gross": "Does {a} beat {b} if the LLM answers were free?",
    "llm_vs_llm0": "Do the LLM's answers add to {a} more than they cost ({b}: weight 0)?",
    "llm_vs_llm0_gross": "Do the LLM's answers add to {a} if they were free ({b}: weight 0)?",
    "llm_vs_random_llm": "Do the LLM's answers beat random ones of the same distribution?",
    "llm_vs_random_llm_gross": "Would the LLM's answers beat random ones if they were free?",
    "hybrid_vs_matched_passive": "Does {a} beat the benchmark held at its mean exposure?",
    "hybrid_vs_voltarget_passive": "Does {a} beat the benchmark at its volatility?",
    "llm_only_vs_buy_and_hold": "Does {a} beat buy-and-hold after LLM cost?",
    "llm_only_vs_matched_passive": "Does {a} beat the benchmark held at its mean exposure?",
}
