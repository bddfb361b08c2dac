"""Model ids checked against a provider's list before a live run spends anything."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence

from backtest.errors import ConfigError

__all__ = ["check_model_ids"]


def check_model_ids(
    listed: Iterable[str], models: Sequence[str], *, base_url: str, source: str = ""
) -> None:
    """Raise when a model id of ``models`` is not in the provider's ``listed`` ids.

    Args:
        listed: The ids the provider lists (``GET <base_url>/models``).
        models: The ids a run may call.
        base_url: The provider, for the message.
        source: The routing file the ids come from, for the message.

    Raises:
        ConfigError: Naming ``source``, each unknown id and up to three closest listed ids.
    """
    known = sorted(set(listed))
    missing = [m for m in models if m not in set(known)]
    if not missing:
        return
    hints = []
    for model in missing:
        close = difflib.get_close_matches(model, known, n=3, cutoff=0.5)
        alternatives = " or ".join(repr(c) for c in close)
        hints.append(f"{model!r}" + (f" (did you mean {alternatives}?)" if close else ""))
    where = f"{source}: " if source else ""
    raise ConfigError(
        f"{where}{base_url} does not list model(s) {', '.join(hints)}. Fix: use ids the "
        f"provider lists (GET {base_url}/models; e.g. OpenRouter ids such as "
        f"'qwen/qwen2.5-vl-72b-instruct') in {source or 'the routing file'}."
    )
