"""Plot builders: plotly figures as plain dicts (no plotly.graph_objects validation cost).

Every builder takes pandas objects and returns ``{"data": [...], "layout": {...}}`` ready for
:func:`reports._render.figure_json`. Text that came from a model, a news item or a file is
escaped with :func:`reports._render.short_text` before it reaches a hover label.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from reports._render import short_text, time_ms

__all__ = [
    "PALETTE",
    "cost_return_scatter",
    "drawdown_figure",
    "equity_figure",
    "monthly_heatmap",
    "pareto_front",
    "per_config_bars",
    "price_trades_figure",
    "rolling_sharpe_figure",
]

#: Colour per strategy, in order of appearance (colour-blind safe, Okabe-Ito then Tableau).
PALETTE = (
    "#0072B2",
    "#E69F00",
    "#009E73",
    "#D55E00",
    "#CC79A7",
    "#56B4E9",
    "#F0E442",
    "#000000",
    "#8C564B",
    "#7F7F7F",
)

Figure = dict[str, Any]


def _colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def _layout(title: str, y_title: str, *, y_format: str | None = None, **extra: Any) -> Any:
    layout: dict[str, Any] = {
        "title": {"text": title, "x": 0.01, "font": {"size": 15}},
        "xaxis": {"type": "date", "showgrid": True, "gridcolor": "#eee"},
        "yaxis": {"title": {"text": y_title}, "gridcolor": "#eee", "zerolinecolor": "#bbb"},
        "hovermode": "x unified",
        "margin": {"l": 64, "r": 16, "t": 40, "b": 40},
        "height": 380,
        "legend": {"orientation": "h", "y": -0.15},
        "plot_bgcolor": "#fff",
        "paper_bgcolor": "#fff",
    }
    if y_format:
        layout["yaxis"]["tickformat"] = y_format
    layout.update(extra)
    return layout


def _line(
    x: np.ndarray,
    y: np.ndarray,
    name: str,
    colour: str,
    *,
    dash: str = "solid",
    fmt: str = ",.2f",
    group: str | None = None,
    show_legend: bool = True,
) -> dict[str, Any]:
    trace = {
        "type": "scatter",
        "mode": "lines",
        "x": x,
        "y": y if y.dtype == np.float32 else np.asarray(y, dtype=np.float64),
        "name": short_text(name, 60),
        "line": {"color": colour, "width": 1.4, "dash": dash},
        "hovertemplate": "%{y:" + fmt + "}",
        "showlegend": show_legend,
    }
    if group:
        trace["legendgroup"] = short_text(group, 60)
    return trace


def equity_figure(equity: pd.DataFrame, llm_cost: pd.DataFrame) -> Figure:
    """Equity curves net of LLM cost (solid) and gross of it (dashed, LLM strategies only).

    Args:
        equity: Equity in USD at each bar's close, one column per strategy (net of LLM cost:
            the engine charges each call against the account).
        llm_cost: LLM cost in USD charged at each bar, same shape.
    """
    x = time_ms(equity.index)
    data = []
    for i, name in enumerate(equity.columns):
        data.append(_line(x, equity[name].to_numpy(), f"{name}", _colour(i), group=name))
        cost = llm_cost[name].to_numpy()
        if cost.sum() > 0:
            gross = equity[name].to_numpy() + np.cumsum(cost)
            data.append(
                _line(x, gross, f"{name} (gross of LLM cost)", _colour(i), dash="dot", group=name)
            )
    return {"data": data, "layout": _layout("Equity (USD), net of LLM cost", "USD")}


def drawdown_figure(equity: pd.DataFrame) -> Figure:
    """Drawdown from the running peak, per strategy."""
    x = time_ms(equity.index)
    data = []
    for i, name in enumerate(equity.columns):
        values = equity[name].to_numpy()
        drawdown = values / np.maximum.accumulate(values) - 1.0
        data.append(_line(x, drawdown.astype(np.float32), name, _colour(i), fmt=".2%"))
    return {"data": data, "layout": _layout("Drawdown", "from peak", y_format=".0%")}


def rolling_sharpe_figure(returns: pd.DataFrame, window: int, periods_per_year: float) -> Figure:
    """Annualised Sharpe ratio over a trailing window (zero risk-free rate)."""
    x = time_ms(returns.index)
    data = []
    for i, name in enumerate(returns.columns):
        r = returns[name]
        mean = r.rolling(window, min_periods=window).mean()
        std = r.rolling(window, min_periods=window).std(ddof=1)
        sharpe = (mean / std.where(std > 0) * np.sqrt(periods_per_year)).to_numpy(np.float32)
        data.append(_line(x, sharpe, name, _colour(i)))
    return {
        "data": data,
        "layout": _layout(f"Rolling Sharpe ratio ({window} bars, annualised)", "Sharpe"),
    }


def monthly_heatmap(equity: pd.DataFrame) -> Figure:
    """Monthly returns (year x month) of one strategy at a time, chosen from a menu."""
    months = [
        "Jan",
        "Feb",
        "Mar",
        "Apr",
        "May",
        "Jun",
        "Jul",
        "Aug",
        "Sep",
        "Oct",
        "Nov",
        "Dec",
    ]
    tables: list[tuple[str, list[int], list[list[float | None]]]] = []
    for name in equity.columns:
        series = equity[name]
        naive = series.copy()
        naive.index = pd.DatetimeIndex(series.index).tz_localize(None)
        month_end = naive.groupby([naive.index.year, naive.index.month]).last()
        first = naive.iloc[0]
        returns = month_end / month_end.shift(1, fill_value=first) - 1.0
        years = sorted({int(y) for y, _ in returns.index})
        grid: list[list[float | None]] = [[None] * 12 for _ in years]
        for (year, month), value in returns.items():
            grid[years.index(int(year))][int(month) - 1] = round(float(value), 6)
        tables.append((name, years, grid))
    name, years, grid = tables[0]
    trace = {
        "type": "heatmap",
        "x": months,
        "y": [str(y) for y in years],
        "z": grid,
        "colorscale": "RdBu",
        "reversescale": True,  # plotly's RdBu runs blue to red: losses red, gains blue
        "zmid": 0,
        "texttemplate": "%{z:.1%}",
        "hovertemplate": "%{y} %{x}: %{z:.2%}<extra></extra>",
        "colorbar": {"tickformat": ".0%"},
    }
    buttons = [
        {
            "label": short_text(n, 40),
            "method": "restyle",
            "args": [{"z": [g], "y": [[str(y) for y in ys]]}],
        }
        for n, ys, g in tables
    ]
    layout = {
        "title": {"text": "Monthly returns", "x": 0.01, "font": {"size": 15}},
        "yaxis": {"autorange": "reversed", "type": "category"},
        "xaxis": {"type": "category"},
        "height": max(260, 60 + 26 * len(years)),
        "margin": {"l": 64, "r": 16, "t": 70, "b": 30},
        "updatemenus": [
            {"buttons": buttons, "direction": "down", "x": 0.99, "xanchor": "right", "y": 1.22}
        ],
        "plot_bgcolor": "#fff",
    }
    return {"data": [trace], "layout": layout}


def price_trades_figure(close: pd.Series, fills: Mapping[str, pd.DataFrame]) -> Figure:
    """Close price with each strategy's fills (buys ▲, sells ▼), toggled from the legend.

    Args:
        close: Close price per bar.
        fills: Per strategy, rows with ``timestamp``, ``fill_units`` and ``fill_price``
            (fills at the open) and ``exit_units``/``exit_price``/``exit_reason`` (stops).
    """
    data: list[dict[str, Any]] = [
        {
            "type": "scatter",
            "mode": "lines",
            "x": time_ms(close.index),
            "y": close.to_numpy(dtype=np.float64),
            "name": "close",
            "line": {"color": "#555", "width": 1.1},
            "hovertemplate": "close %{y:,.4f}<extra></extra>",
        }
    ]
    for i, (name, frame) in enumerate(fills.items()):
        for side, symbol, mask in (
            ("buy", "triangle-up", frame["units"] > 0),
            ("sell", "triangle-down", frame["units"] < 0),
        ):
            rows = frame[mask]
            if rows.empty:
                continue
            text = [
                short_text(f"{name}: {side} {abs(u):,.4g} @ {p:,.4f} {why}".strip(), 120)
                for u, p, why in zip(rows["units"], rows["price"], rows["why"], strict=True)
            ]
            data.append(
                {
                    "type": "scatter",
                    "mode": "markers",
                    "x": time_ms(rows["timestamp"]),
                    "y": rows["price"].to_numpy(dtype=np.float64),
                    "name": short_text(f"{name} {side}s", 60),
                    "legendgroup": short_text(name, 60),
                    # The first two strategies' fills are shown; the others from the legend.
                    "visible": True if i < 2 else "legendonly",
                    "marker": {"symbol": symbol, "size": 8, "color": _colour(i)},
                    "hovertext": text,
                    "hoverinfo": "text",
                }
            )
    layout = _layout("Price and trades (fills at the next open)", "price", hovermode="closest")
    return {"data": data, "layout": layout}


def pareto_front(cost: np.ndarray, value: np.ndarray) -> np.ndarray:
    """Indices of the points no other point beats (lower cost and higher value), by cost.

    A point is on the front when no other point has cost <= and value >= with one strict.
    NaN points are never on it.
    """
    order = np.lexsort((-value, cost))
    front: list[int] = []
    best = -np.inf
    for i in order:
        if not (np.isfinite(cost[i]) and np.isfinite(value[i])):
            continue
        if value[i] > best:
            front.append(int(i))
            best = value[i]
    return np.asarray(front, dtype=np.int64)


def cost_return_scatter(
    table: pd.DataFrame, y: str, y_title: str, labels: Sequence[str], y_format: str
) -> Figure:
    """LLM cost (x) against ``table[y]``, one marker per configuration, Pareto front marked."""
    cost = table["llm_cost_usd"].to_numpy(dtype=np.float64)
    value = table[y].to_numpy(dtype=np.float64)
    front = pareto_front(cost, value)
    text = [short_text(label, 200) for label in labels]
    data: list[dict[str, Any]] = [
        {
            "type": "scatter",
            "mode": "markers",
            "x": cost,
            "y": value,
            "name": "configurations",
            "marker": {"size": 9, "color": "#0072B2", "opacity": 0.75},
            "hovertext": text,
            "hoverinfo": "text+x+y",
        },
        {
            "type": "scatter",
            "mode": "lines+markers",
            "x": cost[front],
            "y": value[front],
            "name": "Pareto front",
            "line": {"color": "#D55E00", "width": 1.5, "shape": "hv"},
            "marker": {
                "size": 11,
                "color": "rgba(0,0,0,0)",
                "line": {"color": "#D55E00", "width": 2},
            },
            "hovertext": [text[i] for i in front],
            "hoverinfo": "text+x+y",
        },
    ]
    layout = {
        "title": {"text": f"LLM cost vs {y_title}", "x": 0.01, "font": {"size": 15}},
        "xaxis": {"title": {"text": "LLM cost (USD)"}, "tickformat": "$,.4f", "gridcolor": "#eee"},
        "yaxis": {"title": {"text": y_title}, "tickformat": y_format, "gridcolor": "#eee"},
        "hovermode": "closest",
        "height": 380,
        "margin": {"l": 64, "r": 16, "t": 40, "b": 50},
        "plot_bgcolor": "#fff",
    }
    return {"data": data, "layout": layout}


def per_config_bars(table: pd.DataFrame, labels: Sequence[str]) -> Figure:
    """Net return and LLM cost per configuration, side by side."""
    short = [short_text(label, 60) for label in labels]
    data = [
        {
            "type": "bar",
            "x": short,
            "y": table["total_return"].to_numpy(dtype=np.float64),
            "name": "total return",
            "marker": {"color": "#0072B2"},
            "hovertemplate": "%{x}: %{y:.2%}<extra>total return</extra>",
        },
        {
            "type": "bar",
            "x": short,
            "y": table["llm_cost_usd"].to_numpy(dtype=np.float64),
            "name": "LLM cost (USD)",
            "yaxis": "y2",
            "marker": {"color": "#E69F00"},
            "hovertemplate": "%{x}: $%{y:,.4f}<extra>LLM cost</extra>",
        },
    ]
    layout = {
        "title": {"text": "Per configuration", "x": 0.01, "font": {"size": 15}},
        "barmode": "group",
        "xaxis": {"type": "category", "tickangle": -30, "automargin": True},
        "yaxis": {"title": {"text": "total return"}, "tickformat": ".0%", "gridcolor": "#eee"},
        "yaxis2": {
            "title": {"text": "LLM cost (USD)"},
            "overlaying": "y",
            "side": "right",
            "tickformat": "$,.4f",
            "rangemode": "tozero",
            "showgrid": False,
        },
        "height": 420,
        "margin": {"l": 64, "r": 64, "t": 40, "b": 120},
        "legend": {"orientation": "h", "y": 1.1},
        "plot_bgcolor": "#fff",
    }
    return {"data": data, "layout": layout}
