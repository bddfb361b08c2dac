"""The provider profiles: where an LLM call goes and which variable holds its key.

:data:`PROFILES` names OpenRouter (the default), DeepSeek, Qwen/DashScope, Moonshot, any
OpenAI-compatible server by base URL, and a local model served on this machine (whose calls
cost $0 by rule). :class:`backtest.llm.client.LLMClient` calls through one of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["PROFILES", "ProviderProfile"]


@dataclass(frozen=True, slots=True)
class ProviderProfile:
    """How to reach one provider.

    Attributes:
        name: Profile name used in configs.
        base_url: The OpenAI-compatible endpoint.
        api_key_env: Environment variable holding the key.
        headers: Extra headers (OpenRouter's attribution headers).
        reports_cost: Whether responses carry the provider's own cost (OpenRouter).
        local: A model served on this machine (llama.cpp, Ollama, vLLM run locally): no key,
            its calls cost $0 by rule (``cost_source="local"``) and need no price, and with
            no base URL the bundled server is started on the first call the cassette misses.
            :func:`backtest.llm.pricing.is_local_base_url` tells a loopback URL.
    """

    name: str
    base_url: str
    api_key_env: str
    headers: Mapping[str, str] = field(default_factory=dict)
    reports_cost: bool = False
    local: bool = False


PROFILES: dict[str, ProviderProfile] = {
    "openrouter": ProviderProfile(
        "openrouter",
        "https://openrouter.ai/api/v1",
        "OPENROUTER_API_KEY",
        {"HTTP-Referer": "https://github.com/hybrid-backtest", "X-Title": "hybrid-backtest"},
        reports_cost=True,
    ),
    "deepseek": ProviderProfile("deepseek", "https://api.deepseek.com/v1", "DEEPSEEK_API_KEY"),
    "qwen": ProviderProfile(
        "qwen", "https://dashscope-intl.aliyuncs.com/compatible-mode/v1", "QWEN_API_KEY"
    ),
    "moonshot": ProviderProfile("moonshot", "https://api.moonshot.ai/v1", "MOONSHOT_API_KEY"),
    # vLLM, llama.cpp, Ollama, the test server: give base_url (and api_key_env if needed).
    "openai_compatible": ProviderProfile("openai_compatible", "", "OPENAI_COMPATIBLE_API_KEY"),
    # llama.cpp's server on this machine (backtest/llm/local.py): started for the run when
    # base_url is left out, or any local server (llama-server, Ollama, vLLM) by base_url.
    "local": ProviderProfile("local", "", "LOCAL_LLM_API_KEY", local=True),
}
