"""The verdict of a paired comparison: the result record and the sentence that says it.

:class:`PairedResult` is what :func:`backtest.inference.paired_inference` returns; its
``to_dict`` is the verdict's JSON (NaN as ``null``) and :func:`verdict_sentence` the line
that leads the terminal output and the report, label first::

    Not significant: hybrid beats drl by +0.30 Sharpe after cost, 95% CI [-0.40, +1.00],
    p = 0.21, 10 seeds, 3 assets.

``beats`` or ``loses to`` follows the sign of the estimate (``a`` minus ``b``); for the
maximum drawdown, a negative number, higher (shallower) is better, and the sentence says so.
Annual return and drawdown differences are in percentage points.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

__all__ = ["PairedResult", "verdict_sentence"]


@dataclass(frozen=True)
class PairedResult:
    """A paired, seed-level comparison of ``a`` with ``b`` on one metric.

    Attributes:
        question: The question the result answers, in words.
        a: The challenger's name; ``estimate > 0`` means ``a`` is better.
        b: The baseline's name.
        metric: ``sharpe``, ``annual_return`` or ``max_drawdown``.
        estimate: Mean over assets of the mean over seeds of ``metric(a@k) - metric(b@k)``.
        ci: The ``1 - alpha`` interval ``(low, high)``.
        p_value: Two-sided p-value against no difference.
        n_seeds: Seed pairs used per asset (the smallest count over assets).
        n_assets: Assets used.
        block_length: The largest of ``block_lengths``.
        method: What was resampled and how the interval was made.
        label: ``significant``, ``not significant`` or ``underpowered``.
        basis: ``before cost``, ``after cost`` or empty.
        alpha: Significance level.
        min_seeds: Fewest seeds for a verdict that is not ``underpowered``.
        se: Bootstrap standard error (with the ``n/(n-1)`` correction).
        df: Degrees of freedom of the t-interval.
        n_reps: Bootstrap replicates used (NaN replicates dropped).
        block_lengths: Politis-White block length per asset.
        seed_tests: ``t_p``, ``wilcoxon_p`` and ``sign_p`` on the per-seed differences.
        per_seed: Per asset, each seed's difference (NaN for a seed dropped by the NaN rule).
        n_nan_seeds: (asset, seed) pairs dropped by the NaN rule.
    """

    question: str
    a: str
    b: str
    metric: str
    estimate: float
    ci: tuple[float, float]
    p_value: float
    n_seeds: int
    n_assets: int
    block_length: int
    method: str
    label: str
    basis: str = ""
    alpha: float = 0.05
    min_seeds: int = 10
    se: float = math.nan
    df: int = 0
    n_reps: int = 0
    block_lengths: tuple[int, ...] = ()
    seed_tests: dict[str, float] = field(default_factory=dict)
    per_seed: tuple[tuple[float, ...], ...] = ()
    n_nan_seeds: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Return the result as JSON-safe values: tuples become lists, NaN becomes None."""
        return _json_safe(asdict(self))


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


_UNITS = {"sharpe": ("Sharpe", 1.0, ""), "annual_return": ("annual return", 100.0, " pp")}


def verdict_sentence(result: PairedResult) -> str:
    """Say a :class:`PairedResult` in plain words, the label first.

    For example ``Not significant: hybrid beats drl by +0.30 Sharpe after cost, 95% CI
    [-0.40, +1.00], p = 0.21, 10 seeds, 3 assets.``
    """
    head = {
        "significant": "Significant",
        "not significant": "Not significant",
        "underpowered": f"Underpowered ({result.n_seeds} seed{'' if result.n_seeds == 1 else 's'}"
        f" < {result.min_seeds})",
    }.get(result.label, result.label.capitalize())
    name, scale, unit = _UNITS.get(result.metric, ("max drawdown", 100.0, " pp"))
    basis = f" {result.basis}" if result.basis else ""
    note = " (higher, i.e. shallower, is better)" if result.metric == "max_drawdown" else ""
    seeds = f"{result.n_seeds} seed{'s' if result.n_seeds != 1 else ''}"
    assets = f"{result.n_assets} asset{'s' if result.n_assets != 1 else ''}"
    if not math.isfinite(result.estimate):
        return f"{head}: no {name} difference of {result.a} and {result.b} to test, {seeds}."
    size = abs(result.estimate) * scale
    if result.estimate > 0:
        verb = f"beats {result.b} by +{size:.2f}{unit}"
    elif result.estimate < 0:
        verb = f"loses to {result.b} by {size:.2f}{unit}"
    else:
        verb = f"ties with {result.b} at 0{unit}"
    level = round(100 * (1 - result.alpha))
    low, high = (_signed(v * scale) for v in result.ci)
    p_text = f"p = {result.p_value:.3g}" if math.isfinite(result.p_value) else "p = n/a"
    dropped = (
        f" ({result.n_nan_seeds} seed pair(s) dropped: the {name} of one side is undefined)"
        if result.n_nan_seeds
        else ""
    )
    return (
        f"{head}: {result.a} {verb} {name}{note}{basis}, {level}% CI [{low}, {high}]{unit}, "
        f"{p_text}, {seeds}, {assets}{dropped}."
    )


def _signed(value: float) -> str:
    if not math.isfinite(value):
        return "n/a"
    return f"+{value:.2f}" if value >= 0 else f"\u2212{abs(value):.2f}"
