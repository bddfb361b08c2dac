"""Walk-forward folds in the replay: the gap reaches training, and positions may carry over.

Two rules of :func:`backtest.engine.replay._walk_forward` live here:

- **The gap separates training from the test block.** A fold's policies see the bars from
  its train block's start up to the current bar (they need the feature window), but a
  policy that trains is told, through its optional ``train_until(stop)`` method, to train
  on the bars before ``stop`` only: the end of the fold's train block, ``gap`` bars before
  its test block (:func:`training_stop`). The DRL, hybrid and meta-RL strategies implement
  it; a policy without the method trains on what it sees.
- **Carrying the position** (``splits.walk_forward.carry_position = true``): a fold starts
  with the account its strategy ended the previous fold with (cash, units, entry price,
  the day's trade count) instead of flat with the previous equity. The previous fold's
  last decision, taken at the close of the bar before the test block, is then filled at
  the test block's first open with the env's own accounting (:func:`carry_into`), as an
  unbroken run would: stops, financing and marking to market over that bar included.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from backtest import _env_nb as nb
from backtest.data import Fold
from backtest.env import TradingEnv

__all__ = ["carry_into", "training_stop"]

#: The state slots a carried account keeps (the rest are the step's own records).
_CARRIED = (
    nb.CASH,
    nb.UNITS,
    nb.EQUITY,
    nb.ENTRY,
    nb.EXPOSURE,
    nb.TRADE_DAY,
    nb.TRADES_TODAY,
    nb.DSR_A,
    nb.DSR_B,
)


def training_stop(fold: Fold, lo: int) -> int:
    """Where a fold's training history ends, as an index into the fold's view (from ``lo``)."""
    return fold.train.stop - lo


def carry_into(env: TradingEnv, previous: Sequence[float], target: float) -> bool:
    """Start ``env`` (just reset) from the account of the previous fold.

    ``previous`` is the previous fold's env state at the close of the bar before ``env``'s
    first bar; ``target`` the decision taken there (NaN: HOLD). The account is placed at
    that bar and stepped once with ``target``. Returns True if that step ruined it.
    """
    state = env._state
    first = int(state[nb.T])
    if first < 1:
        raise ValueError("carry_into: the fold's view has no bar before its first decision")
    for slot in _CARRIED:
        state[slot] = previous[slot]
    state[nb.T] = first - 1
    return env.advance(None if math.isnan(target) else target)
