"""Stage 1, plan: the config becomes the strategies to run, their seeds and the bars they trade.

The benchmark is added when the experiment does not list it; with ``controls = true`` (the
default) every strategy whose class offers controls (a class attribute ``CONTROLS``, e.g.
the hybrid's ``("llm0", "random_llm")``) is followed by ``<name>~<control>``, the same
parameters plus ``control = <control>`` and the same seeds (see :func:`parent_of`); a
seeded strategy becomes its members ``<name>@<k>`` (:func:`member_seed`); each entry is
built into a policy (:func:`build_policy`) before any bar is read; the bars are loaded, and
the evaluated range (:func:`_evaluation_range`) or the walk-forward folds (:func:`_folds`)
are laid over them.
What identifies the run (its id and the hashes of its inputs) is in
:mod:`backtest.engine.provenance`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from backtest.config import SEEDED_KINDS, STRATEGY_KINDS, RunConfig, StrategyConfig
from backtest.data import Bars, Fold, load_bars, split_by_date, walk_forward_folds
from backtest.engine.provenance import _strategy_class
from backtest.errors import CassetteError, ConfigError, PricingError
from backtest.policy import Policy
from backtest.strategy_loader import load_strategy_class, strategy_source_file, user_code_location

__all__ = ["build_policy", "member_seed", "parent_of"]

#: One strategy to run: its config (a member's, for a seeded strategy), its index in the
#: experiment (error messages name ``strategies[<index>]``) and its seed.
Member = tuple[StrategyConfig, int, int]


def build_policy(spec: StrategyConfig, index: int) -> Policy:
    """Instantiate a strategy from its registry entry or ``module:Class`` path.

    Raises:
        ConfigError: Unknown kind, import failure or bad parameters, naming the key.
    """
    key = f"strategies[{index}]"
    target = STRATEGY_KINDS.get(spec.kind, spec.kind)
    cls = load_strategy_class(spec.kind, key)
    try:
        policy = cls(spec.name, **spec.params)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"{key}.params: {exc}{_in_user_code(exc, spec.kind)}. Fix: correct the "
            f"parameters of strategy {spec.name!r} ({target})."
        ) from exc
    except (ConfigError, PricingError, CassetteError) as exc:
        # Raised by the strategy's own set-up (a routing file, a price table, a cassette):
        # the message names the file; say which strategy's parameters led there.
        raise type(exc)(f"{key}.params (strategy {spec.name!r}): {exc}") from exc
    except Exception as exc:
        where = _in_user_code(exc, spec.kind)
        if not where:
            raise
        raise ConfigError(
            f"{key}: creating strategy {spec.name!r} raised {type(exc).__name__}: {exc}"
            f"{where}. Fix: correct the code there."
        ) from exc
    if not isinstance(policy, Policy):
        raise ConfigError(
            f"{key}.kind: {target} does not implement the Policy protocol "
            "(name, reset(seed=, market=), act(obs))."
        )
    return policy


def _in_user_code(exc: BaseException, kind: str) -> str:
    """`` (at file:line in func)`` when ``exc`` was raised inside a user strategy's file."""
    source = strategy_source_file(kind)
    if source is None:
        return ""
    where = user_code_location(exc.__traceback__, files=(str(source),))
    return f" (at {where})" if where else ""


#: Spawn key of the stream member seeds are drawn from: member ``k`` of every seeded
#: strategy gets the same seed, so paired members (``drl@k``, ``hybrid@k``) share it.
_MEMBER_STREAM = 0x5EED


def member_seed(run_seed: int, k: int) -> int:
    """The seed of member ``k`` of a seeded strategy (``<name>@<k>``) in a run."""
    sequence = np.random.SeedSequence(run_seed, spawn_key=(_MEMBER_STREAM, k))
    return int(sequence.generate_state(1)[0])


def _members(config: RunConfig) -> tuple[list[Member], dict[str, list[str]]]:
    """The strategies of a run, the benchmark added when missing, seeds expanded.

    Returns:
        The members in order (see :func:`_expand_seeds`) and the seed groups
        ``{name: [<name>@0, ...]}``.
    """
    specs = list(config.strategies)
    if config.benchmark is not None and config.benchmark not in {s.name for s in specs}:
        specs.append(StrategyConfig(name=config.benchmark, kind="buy_and_hold"))
    if config.controls:
        specs = _with_controls(specs)
    return _expand_seeds(specs, config.seed)


def _with_controls(specs: list[StrategyConfig]) -> list[StrategyConfig]:
    """Each strategy that offers controls, followed by one entry per control."""
    out: list[StrategyConfig] = []
    for spec in specs:
        out.append(spec)
        if "control" in spec.params:
            continue  # already a control (a user may list one by hand)
        for kind in getattr(_strategy_class(spec), "CONTROLS", ()):
            # model_copy skips validation: '~' is reserved for these names.
            out.append(
                spec.model_copy(
                    update={
                        "name": f"{spec.name}~{kind}",
                        "params": {**spec.params, "control": kind},
                    }
                )
            )
    return out


def parent_of(name: str) -> str | None:
    """The strategy (member) a control replays: ``hybrid~llm0@3`` -> ``hybrid@3``."""
    if "~" not in name:
        return None
    base, _, rest = name.partition("~")
    _, at, k = rest.rpartition("@")
    return f"{base}@{k}" if at and k.isdigit() else base


def _expand_seeds(
    specs: list[StrategyConfig], run_seed: int
) -> tuple[list[tuple[StrategyConfig, int, int]], dict[str, list[str]]]:
    """One entry per strategy to run: (config, index in the experiment, seed).

    A strategy of a DRL-based kind, or with ``seeds`` > 1, is seeded by member index;
    with ``seeds`` > 1 it becomes members ``<name>@<k>``. Other strategies keep the seed
    of their position in the experiment.
    """
    by_index = np.random.SeedSequence(run_seed).spawn(len(specs))
    out: list[tuple[StrategyConfig, int, int]] = []
    groups: dict[str, list[str]] = {}
    for i, spec in enumerate(specs):
        if spec.seeds == 1 and spec.kind not in SEEDED_KINDS:
            out.append((spec, i, int(by_index[i].generate_state(1)[0])))
        elif spec.seeds == 1:
            out.append((spec, i, member_seed(run_seed, 0)))
        else:
            names = [f"{spec.name}@{k}" for k in range(spec.seeds)]
            groups[spec.name] = names
            for k, name in enumerate(names):
                member = spec.model_copy(update={"name": name, "seeds": 1})
                out.append((member, i, member_seed(run_seed, k)))
    taken = [spec.name for spec, _, _ in out]
    clash = sorted({n for n in taken if taken.count(n) > 1})
    if clash:
        raise ConfigError(
            f"strategies: the seed members' names clash with other strategies: "
            f"{', '.join(clash)}. Fix: rename the strategy or change its seeds."
        )
    return out, groups


def _load_bars(config: RunConfig) -> Bars:
    """The bars of ``config.data``, loaded and validated."""
    max_gap = None if config.data.max_gap is None else pd.Timedelta(config.data.max_gap)
    return load_bars(
        Path(config.data.file),
        symbol=config.data.symbol,
        start=config.data.start,
        end=config.data.end,
        max_gap=max_gap,
    )


def _folds(config: RunConfig, bars: Bars) -> list[Fold] | None:
    wf = config.splits.walk_forward
    if wf is None:
        return None
    return walk_forward_folds(
        len(bars),
        n_folds=wf.n_folds,
        test_size=wf.test_size,
        train_size=wf.train_size,
        gap=wf.gap,
    )


def _evaluation_range(config: RunConfig, bars: Bars) -> tuple[int, int]:
    splits = config.splits
    folds = _folds(config, bars)
    if folds is not None:
        return folds[0].test.start, folds[-1].test.stop
    if splits.train_end is None or splits.validation_end is None:
        start, stop = 0, len(bars)
    else:
        split = split_by_date(
            bars.frame.index, train_end=splits.train_end, validation_end=splits.validation_end
        )
        part: slice = getattr(split, splits.evaluate)
        start, stop = part.start, part.stop
    if splits.last_bars is not None:
        start = max(start, stop - splits.last_bars)
    return start, stop
