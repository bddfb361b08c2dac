"""LLM-only policy: the seed's graph of agents, routed over the Chinese model stack.

At each call bar (see *Call frequency* below) the graph runs, as in the seed: chart
analysis, then narrative and data processing, then document analysis when the dataset has
documents, then the meta orchestrator, whose ``TradingAction`` becomes the
target exposure through the one action table. Failures are data:

- an agent whose every model failed, or whose answer does not parse, is an *abstaining*
  signal (its raw text kept), never a neutral 0;
- if the meta orchestrator fails, the seed's fallback averaging of the agent signals decides,
  and the decision says so (``action`` ends with ``(fallback)``);
- if every agent abstains, or the budget's hard cap stops the calls, the decision abstains
  (HOLD) and the ledger counts it.

Which client answers: with the routing profile's API key set, the real models (recorded
into ``cassette`` with ``record_mode``); without a key, a cassette that holds recordings is
replayed (mode ``none``); with neither, the offline analyst answers, and every record says
``offline``. ``mode`` forces one of ``live``, ``replay`` or ``offline``.

Charts: with a vision model in the routing's decision tree (``chart = "auto"``) the chart
role is shown a candlestick PNG of the last ``chart_bars`` bars (:mod:`strategies.llm.charts`),
keyed in the cassette by the hash of what it is drawn from and rendered only when a request
really goes out; without one (``no_vision.toml``), or with ``chart = "text"``, it reads the
bars as a table.

Call frequency: the graph runs on the first bar, then whenever ``every_n_bars`` bars have
passed since the last call (0: never on a schedule), and on events: a volatility spike
(``on_volatility_k``: the bar's log return exceeds k times the standard deviation of the
``volatility_window`` returns before it) or a news item arriving (``on_news``: an item became
available since the previous bar). Between calls the last signal holds: the decision is HOLD
(no new order), with the last call's action, confidence and agent signals, each signal
carrying ``age_bars`` (bars since the call) in its features; :attr:`LLMPolicy.held` and
:attr:`LLMPolicy.held_age` give the hybrid the same.

Anonymisation (``anonymize = true``): prompts and charts show shifted dates, another symbol
and rescaled prices and volumes (:mod:`strategies.llm.anonymize`); decisions map back
unchanged and price levels (support, resistance) are scaled back.

Narrative and data processing are independent: in live mode they run concurrently, so a
full analysis costs the critical path (chart, then the slower of the two, then meta), not
the sum. They are planned (budget reserved, models chosen) and committed (costs charged,
failures counted) in a fixed order, so budgets, circuit breakers and cassette keys are
identical on every replay, which runs them one after the other.

Layout: this module sets the policy up (parameters, routing, the client live, replayed or
offline, the pre-flight checks) and says what a run reads (:meth:`LLMPolicy.input_hashes`);
the decision loop (the call schedule, the agents asked stage by stage, the meta answer and
its fallback) is :mod:`strategies.llm.decisions`, whose mixin :class:`LLMPolicy` inherits.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from backtest.data import file_sha256
from backtest.llm.cassette import RECORD_MODES, Cassette
from backtest.llm.client import PROFILES, LLMClient
from backtest.llm.offline import OfflineAnalyst
from backtest.llm.router import Router, load_routing
from strategies.base import Decision, MarketView
from strategies.llm.anonymize import DEFAULT_SHIFT_DAYS, Anonymizer
from strategies.llm.charts import ChartSpec
from strategies.llm.decisions import (  # noqa: F401 (re-exported: the old home of these names)
    _AGENT_ROLES,
    _FEATURE_FIELDS,
    _PRICE_FIELDS,
    _SCHEMAS,
    _abstaining,
    _aged,
    _DecisionLoop,
    fallback_average,
    volatility_spikes,
)
from strategies.llm.prompts import prompts_sha256

__all__ = ["LLMPolicy", "fallback_average", "volatility_spikes"]

_DEFAULT_ROUTING = "experiments/routing/seed_stack.toml"


class LLMPolicy(_DecisionLoop):
    """The seed's multi-agent LLM strategy.

    Args:
        name: Label in the ledger.
        routing: Routing TOML file (``experiments/routing/seed_stack.toml`` by default).
        mode: ``auto``, ``live``, ``replay`` or ``offline`` (see the module docstring).
        cassette: Cassette directory.
        record_mode: Record mode for live runs (``new_episodes`` by default).
        prices: A price table of ``backtest/llm/prices.toml`` (``openrouter``), or a price
            file of your own (``my_prices.toml``, or ``my_prices.toml#seed`` for another
            base table) merged over it (:mod:`backtest.llm.price_files`). A local provider
            (a profile with ``local = True``) costs $0 by rule.
        every_n_bars: Run the graph when this many bars have passed since the last call
            (1: every bar; 0: only on the first bar and on events).
        on_volatility_k: Also run it when the bar's absolute log return exceeds this many
            standard deviations of the ``volatility_window`` returns before it (None: off).
        volatility_window: Returns in that rolling standard deviation.
        on_news: Also run it when a news item became available since the previous bar.
        lookback_bars: Bars of history in the prompts.
        chart: ``auto`` (a rendered chart when the routing has a vision model, else a
            table of bars), ``image`` or ``text``.
        chart_bars: Candles in the chart.
        anonymize: Shift dates, rename the symbol and rescale prices and volume in prompts
            and charts (:mod:`strategies.llm.anonymize`).
        anonymize_symbol: The name shown instead of the symbol.
        anonymize_shift_days: Days added to every date shown.
        max_run_usd: Hard cap on the run's LLM cost (overrides the routing file's).
        base_url: Overrides the routing's base URL (a local server, the test server).
        max_retries: Retries per model before falling back to the next.
        timeout_s: Per-attempt timeout of a live call, in seconds.
        backoff_s: First backoff between live retries (doubling, with seeded jitter).
        max_retry_s: Cap of the total wait between the retries of one call; a longer
            ``Retry-After`` ends the call (and the router falls back) instead.
        api_key_env: Environment variable holding the API key, instead of the profile's
            (its value is scrubbed from the cassette like the known key variables).

    Raises:
        ValueError: A parameter out of range, a replay-only cassette that holds nothing, or
            (for a live run) a routing model the price table does not price: all found here,
            before the engine loads a bar or any call goes out.
    """

    def __init__(
        self,
        name: str = "llm",
        *,
        routing: str = _DEFAULT_ROUTING,
        mode: str = "auto",
        cassette: str = "cassettes/default",
        record_mode: str = "new_episodes",
        prices: str = "openrouter",
        every_n_bars: int = 1,
        on_volatility_k: float | None = None,
        volatility_window: int = 20,
        on_news: bool = False,
        lookback_bars: int = 60,
        chart: str = "auto",
        chart_bars: int = 60,
        anonymize: bool = False,
        anonymize_symbol: str = "ASSET",
        anonymize_shift_days: int = DEFAULT_SHIFT_DAYS,
        max_run_usd: float | None = None,
        base_url: str | None = None,
        max_retries: int = 3,
        timeout_s: float = 60.0,
        backoff_s: float = 1.0,
        max_retry_s: float = 60.0,
        api_key_env: str | None = None,
        local_model: str | None = None,
        portfolio_in_prompt: bool = True,
    ) -> None:
        if mode not in ("auto", "live", "replay", "offline"):
            raise ValueError(f"mode must be auto, live, replay or offline, got {mode!r}")
        if record_mode not in RECORD_MODES:
            raise ValueError(
                f"record_mode must be one of {', '.join(RECORD_MODES)}, got {record_mode!r}"
            )
        for key, value, low in (
            ("every_n_bars", every_n_bars, 0),
            ("lookback_bars", lookback_bars, 1),
            ("max_retries", max_retries, 0),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{key} must be a whole number >= {low}, got {value!r}")
        for key, number in (
            ("timeout_s", timeout_s),
            ("backoff_s", backoff_s),
            ("max_retry_s", max_retry_s),
        ):
            if isinstance(number, bool) or not isinstance(number, int | float) or not number > 0:
                raise ValueError(f"{key} must be a positive number of seconds, got {number!r}")
        if max_run_usd is not None and (
            isinstance(max_run_usd, bool)
            or not isinstance(max_run_usd, int | float)
            or not max_run_usd > 0
        ):
            raise ValueError(
                f"max_run_usd must be a positive number of dollars (leave it out for no cap), "
                f"got {max_run_usd!r}"
            )
        if on_volatility_k is not None and not on_volatility_k > 0:
            raise ValueError(f"on_volatility_k must be > 0 or None, got {on_volatility_k}")
        if volatility_window < 2:
            raise ValueError(f"volatility_window must be >= 2, got {volatility_window}")
        if chart not in ("auto", "image", "text"):
            raise ValueError(f"chart must be auto, image or text, got {chart!r}")
        self.name = name
        self.routing_file = str(routing)
        self.routing = load_routing(routing)
        if max_run_usd is not None:
            self.routing = self.routing.model_copy(
                update={
                    "budget": self.routing.budget.model_copy(update={"max_run_usd": max_run_usd})
                }
            )
        if base_url is not None:
            self.routing = self.routing.model_copy(update={"base_url": base_url})
        self.max_retries = max_retries
        self.timeout_s = float(timeout_s)
        self.backoff_s = float(backoff_s)
        self.max_retry_s = float(max_retry_s)
        if api_key_env is not None and not str(api_key_env).strip():
            raise ValueError("api_key_env must name an environment variable, got ''")
        self.api_key_env = api_key_env
        self.local_model = local_model
        # Off, the meta prompt shows no position or equity: its answers then depend on the
        # market alone, so a cassette recorded beside one DRL replays beside any other.
        self.portfolio_in_prompt = bool(portfolio_in_prompt)
        self.mode = mode
        self.cassette_path = Path(cassette)
        self.record_mode = record_mode
        self.prices_table = prices
        self.every_n_bars = every_n_bars
        self.on_volatility_k = on_volatility_k
        self.volatility_window = volatility_window
        self.on_news = on_news
        self.lookback_bars = lookback_bars
        self.chart_spec = ChartSpec(bars=chart_bars)
        self.chart_images = chart == "image" or (
            chart == "auto" and self.routing.tree.vision is not None
        )
        tree = self.routing.tree
        chart_route = self.routing.roles.get("chart_analysis")
        self._chart_text_fallback = (
            self.chart_images
            and chart_route is not None
            and tree.vision is not None
            and any(
                m not in {tree.vision, *tree.vision_models}
                for m in (chart_route.primary, *chart_route.fallbacks)
            )
        )
        self._anonymizer_template = (
            Anonymizer(shift_days=anonymize_shift_days, symbol=anonymize_symbol)
            if anonymize
            else None
        )
        self.anonymizer: Anonymizer | None = None
        self.router: Router | None = None
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix=f"llm-{name}")
        self.source = ""
        self.held: Decision | None = None
        self.held_age = 0
        self._news_seen: int | None = None
        self._prices: Any = None
        self._preflight()

    def _preflight(self) -> None:
        """Refuse, before any work, a run that could only fail at its first call."""
        source = self._resolve_mode()
        if source == "offline":
            return
        profile = PROFILES.get(self.routing.profile)
        if profile is None:
            raise ValueError(
                f"routing {self.routing.name!r}: unknown provider profile "
                f"{self.routing.profile!r}. Fix: set profile to one of {', '.join(PROFILES)}"
            )
        record_mode = "none" if source == "replay" else self.record_mode
        if record_mode == "none" and not any(self.cassette_path.glob("shard-*.tsv")):
            raise ValueError(
                f"the cassette {self.cassette_path} holds no recordings, and replay-only "
                f"(mode {self.mode!r}, record_mode {record_mode!r}) would miss on the first "
                "call. Fix: point cassette at a recorded cassette, or record one first with "
                "mode = 'live' and record_mode = 'new_episodes'"
            )
        if source != "live":
            return
        key_env = self.api_key_env or profile.api_key_env
        if profile.local:
            from backtest.llm.local import LOCAL_PRICE_TABLE

            # Local models cost $0 by rule: whatever the table says, no dollar is spent.
            self.prices_table = LOCAL_PRICE_TABLE
            return
        if profile.name != "openai_compatible" and not os.environ.get(key_env):
            raise ValueError(
                f"mode 'live' needs an API key, and the environment variable "
                f"{key_env} (profile {profile.name!r}) is not set. Fix: export "
                f"{key_env}=..., or replay a recorded cassette with mode = "
                "'replay', or use mode = 'offline'"
            )
        from backtest.errors import PricingError
        from backtest.llm.price_files import load_prices

        self._prices = load_prices(self.prices_table)
        unpriced = []
        for model in self.routing.models():
            try:
                self._prices.price(model)
            except PricingError:
                unpriced.append(model)
        if unpriced:
            raise ValueError(
                f"routing {self.routing.name!r} names model(s) {', '.join(unpriced)} that "
                f"price table {self.prices_table!r} ({self._prices.source_file}) does not "
                "price, so no budget could be "
                "enforced before their calls. Fix: add them to a price file of your own and "
                "set prices = 'that.toml' (merged over the shipped table), pick another "
                "table (prices = '...'), or use priced models in the routing file"
            )

    @classmethod
    def input_hashes(cls, params: Mapping[str, Any]) -> dict[str, str]:
        """Hash what a policy built from ``params`` reads, and where its answers come from.

        The routing file, prompts and price table; the source resolved as :meth:`reset`
        will (``live``, ``replay`` or ``offline``: an API key being set changes it) and the
        routing's role names; unless offline, the provider profile, base URL, model list,
        the API-key variable's name (never its value) and the cassette's fingerprint
        (:func:`backtest.llm.fingerprint.cassette_fingerprint`), except for a live run
        that records as it goes (``new_episodes``, ``all``). A routing file that does
        not exist or does not load hashes as ``missing`` (the run itself then fails with
        the fix).
        """
        import hashlib

        from backtest.errors import ConfigError
        from backtest.llm import pricing
        from backtest.llm.fingerprint import cassette_fingerprint, llm_source
        from backtest.llm.price_files import price_file_of

        path = Path(str(params.get("routing", _DEFAULT_ROUTING)))
        prices = Path(pricing.__file__).with_name("prices.toml")
        out = {
            "routing": file_sha256(path) if path.is_file() else "missing",
            "prompts": prompts_sha256(),
            "prices": file_sha256(prices),
        }
        own, _ = price_file_of(str(params.get("prices", "openrouter")))
        if own is not None:
            out["price_file"] = file_sha256(own) if own.is_file() else "missing"
        try:
            routing = load_routing(str(path))
        except (ConfigError, OSError, ValueError):
            return out
        profile = PROFILES.get(routing.profile)
        key_env = params.get("api_key_env") or (profile.api_key_env if profile else None)
        cassette = str(params.get("cassette", "cassettes/default"))
        local = bool(profile is not None and profile.local)
        out["source"] = llm_source(str(params.get("mode", "auto")), key_env, cassette, local=local)
        out["roles"] = hashlib.sha256(",".join(sorted(routing.roles)).encode()).hexdigest()
        if out["source"] != "offline":
            base_url = params.get("base_url") or routing.base_url
            out["profile"] = routing.profile
            out["base_url"] = str(base_url or (profile.base_url if profile else ""))
            out["models"] = ",".join(sorted(routing.models()))
            out["api_key_env"] = str(key_env or "")
            record_mode = str(params.get("record_mode", "new_episodes"))
            if out["source"] == "live" and record_mode in ("new_episodes", "all"):
                # Recorded into as the run goes (and by a sweep's other runs meanwhile):
                # its contents cannot name the run, its absolute path does (the config
                # counts path parameters by file name only, so the id does not move with
                # the checkout; two live runs into two cassettes must not share an id).
                out["cassette"] = f"recording ({record_mode}) into {Path(cassette).resolve()}"
            else:
                out["cassette"] = cassette_fingerprint(cassette)
        return out

    # ------------------------------------------------------------------ set-up

    def _resolve_mode(self) -> str:
        if self.mode != "auto":
            return self.mode
        profile = PROFILES.get(self.routing.profile)
        if profile is not None and profile.local:
            # A local model is always reachable: the cassette answers what it holds and
            # the local server the rest (started only on the first miss).
            return "live"
        if profile is not None and os.environ.get(self.api_key_env or profile.api_key_env):
            return "live"
        if self.cassette_path.is_dir() and any(self.cassette_path.glob("shard-*.tsv")):
            return "replay"
        return "offline"

    def reset(self, *, seed: int | None, market: MarketView) -> None:
        """Pick the client (live, replay or offline) and start fresh budgets and breakers."""
        self.source = self._resolve_mode()
        self.held, self.held_age = None, 0
        self._news_seen = None
        self.anonymizer = None
        if self.source == "offline":
            self.router = Router(self.routing, OfflineAnalyst())
            return
        from backtest.llm.price_files import load_prices

        record_mode = "none" if self.source == "replay" else self.record_mode
        self.close()
        self._cassette: Cassette | None = Cassette(
            self.cassette_path,
            record_mode,  # type: ignore[arg-type]
            secret_env=[self.api_key_env] if self.api_key_env else [],
        )
        client = LLMClient(
            self._cassette,
            profile=self.routing.profile,
            base_url=self.routing.base_url,
            api_key_env=self.api_key_env,
            local_model=self.local_model,
            seed=seed or 0,
            max_retries=self.max_retries,
            timeout_s=self.timeout_s,
            backoff_s=self.backoff_s,
            max_retry_s=self.max_retry_s,
            prices=self._prices or load_prices(self.prices_table),
        )
        if self.source == "live":
            # Before the first call that goes out: every id must be one the provider lists.
            client.expect_models(self.routing.models(), source=self.routing_file)
        # A local server costs $0 by rule: no estimate, no budget downgrade or stop.
        self.router = Router(self.routing, client, prices=None if client.local else client.prices)

    def close(self) -> None:
        """Close the cassette's shard (the engine calls this when the run ends), so a merge
        may compact it even while this process lives on (a sweep worker)."""
        cassette = getattr(self, "_cassette", None)
        if cassette is not None:
            cassette.close()
            self._cassette = None

    # ------------------------------------------------------ run-level questions

    def describe_source(self) -> str:
        """Where this policy's answers come from, in words (terminal and report).

        E.g. ``"SmolLM2-135M-Instruct (Q4_1), local (llama.cpp)"`` or ``"offline analyst
        (rule-based, no model)"``; the engine adds how many answers were replayed.
        """
        source = self.source or self._resolve_mode()
        if source == "offline":
            return "offline analyst (rule-based, no model)"
        from backtest.llm.local import DEFAULT_MODEL_ALIAS, DEFAULT_MODEL_LABEL

        models = [
            DEFAULT_MODEL_LABEL if m == DEFAULT_MODEL_ALIAS else m for m in self.routing.models()
        ]
        profile = PROFILES.get(self.routing.profile)
        if profile is not None and profile.local:
            where = "local, " + (
                self.routing.base_url or "llama.cpp's server, started only on a cassette miss"
            )
        else:
            where = self.routing.profile + (
                f" at {self.routing.base_url}" if self.routing.base_url else ""
            )
        text_chart = (
            "chart_analysis" in self.routing.roles
            and not self.chart_images
            and self.routing.tree.vision is None
        )
        note = "; no vision model: the chart role reads the bars as text" if text_chart else ""
        return f"{', '.join(models)} ({where}){note}"

    def models_used(self) -> list[str]:
        """The models this policy may call: every model of its routing (none offline).

        The engine checks their training cutoffs against the evaluated window (the
        temporal-leakage guard). The offline analyst is rule-based and was trained on
        nothing, so an offline run uses no model.
        """
        source = self.source or self._resolve_mode()
        return [] if source == "offline" else self.routing.models()
