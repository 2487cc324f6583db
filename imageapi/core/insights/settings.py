"""Insight settings: which model servers to talk to, the tool loop's caps, the helper services
(Nominatim, Apollo Places, the SMS API) and the daily summaries job.

load_config reads them once, into Config.insights; docs/insights.md lists them. Parsing is strict
(imageapi.core.parsers): a bad value raises ConfigError naming the setting.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from typing import TYPE_CHECKING

from imageapi import __version__
from imageapi.core.errors import ConfigError
from imageapi.core.parsers import (
    env_day,
    env_int,
    env_number,
    env_text,
    env_url,
    env_url_or_none,
    parse_list,
)

if TYPE_CHECKING:
    from imageapi.core.config import Config

MAX_TIMEOUT = 86400.0  # seconds: a day is longer than any model or tool call should take

DEFAULT_OLLAMA_URL = "http://localhost:11434"
DEFAULT_OLLAMA_MODEL = "nemotron-3-nano:30b"
DEFAULT_VISION_MODEL = "qwen2.5vl:7b"
DEFAULT_EMBEDDING_MODEL = "nomic-embed-text:v1.5"
DEFAULT_OPENROUTER_URL = "https://openrouter.ai/api/v1"
DEFAULT_OPENROUTER_MODEL = "anthropic/claude-sonnet-4"
DEFAULT_NOMINATIM_URL = "https://nominatim.openstreetmap.org"
DEFAULT_SMS_API_URL = "http://localhost:8000"
# Nominatim asks for an identifying User-Agent: set NOMINATIM_USER_AGENT to one with your contact.
DEFAULT_USER_AGENT = f"imageapi/{__version__} (self-hosted photo library)"


@dataclass(frozen=True)
class OllamaServer:
    url: str
    model: str


@dataclass(frozen=True)
class InsightSettings:
    ollama_primary: OllamaServer
    ollama_fallback: OllamaServer | None
    vision_model: str = DEFAULT_VISION_MODEL
    embedding_model: str = DEFAULT_EMBEDDING_MODEL
    connect_timeout: float = 5.0         # the primary gets this long to accept before the fallback is tried
    request_timeout: float = 120.0       # one whole model request, first byte to last
    openrouter_api_key: str | None = None
    openrouter_default_model: str = DEFAULT_OPENROUTER_MODEL
    openrouter_allowed_models: tuple[str, ...] = ()
    openrouter_base_url: str = DEFAULT_OPENROUTER_URL
    openrouter_embedding_model: str | None = None
    openrouter_http_referer: str | None = None
    openrouter_app_title: str | None = None
    max_iterations: int = 10             # tool rounds of a generated insight
    chat_max_iterations: int = 6         # tool rounds of one chat turn
    tool_timeout: float = 30.0           # one tool call
    nominatim_url: str = DEFAULT_NOMINATIM_URL
    nominatim_user_agent: str = DEFAULT_USER_AGENT
    nominatim_min_interval: float = 1.0  # Nominatim's usage policy: at most one request per second
    apollo_url: str | None = None
    sms_api_url: str = DEFAULT_SMS_API_URL
    sms_api_token: str | None = None
    summary_model: str | None = None     # default: the primary Ollama model
    summaries_contacts: tuple[str, ...] = ()  # serve's start-up job; ("*",) = every contact the SMS API lists
    summaries_from: date | None = None
    summaries_to: date | None = None
    summaries_days: int = 30             # when SUMMARIES_FROM is unset: this many days back from the end

    @property
    def hybrid_enabled(self) -> bool:
        return self.openrouter_api_key is not None

    @property
    def ollama_servers(self) -> list[OllamaServer]:
        servers = [self.ollama_primary]
        if self.ollama_fallback is not None and self.ollama_fallback != self.ollama_primary:
            servers.append(self.ollama_fallback)
        return servers

    def summary_range(self, today: date | None = None) -> tuple[date, date]:
        """The background job's days: SUMMARIES_FROM..SUMMARIES_TO, by default the last
        SUMMARIES_DAYS days up to yesterday (today is not over yet)."""
        end = self.summaries_to or ((today or date.today()) - timedelta(days=1))
        start = self.summaries_from or (end - timedelta(days=self.summaries_days - 1))
        return start, end


def _timeout(env: Mapping[str, str], name: str, default: float) -> float:
    return env_number(env, name, default, minimum=0.0, maximum=MAX_TIMEOUT, above=True, unit=" of seconds")


def insight_settings_from_env(env: Mapping[str, str]) -> InsightSettings:
    """Read and check every insight setting. Raises ConfigError naming the first bad one."""
    primary_url = env_url(env, "OLLAMA_PRIMARY_URL", DEFAULT_OLLAMA_URL, "OLLAMA_URL")
    primary_model = env_text(env, "OLLAMA_PRIMARY_MODEL", "OLLAMA_MODEL") or DEFAULT_OLLAMA_MODEL
    fallback_url = env_url_or_none(env, "OLLAMA_FALLBACK_URL")
    fallback_model = env_text(env, "OLLAMA_FALLBACK_MODEL")
    fallback = None
    if fallback_url is not None:
        fallback = OllamaServer(fallback_url, fallback_model or primary_model)
    elif fallback_model:
        # A fallback model on the same server: worth a try when the primary model is missing.
        fallback = OllamaServer(primary_url, fallback_model)

    settings = InsightSettings(
        ollama_primary=OllamaServer(primary_url, primary_model),
        ollama_fallback=fallback,
        vision_model=env_text(env, "OLLAMA_VISION_MODEL") or DEFAULT_VISION_MODEL,
        embedding_model=env_text(env, "OLLAMA_EMBEDDING_MODEL") or DEFAULT_EMBEDDING_MODEL,
        connect_timeout=_timeout(env, "OLLAMA_CONNECT_TIMEOUT_SEC", 5.0),
        request_timeout=_timeout(env, "INSIGHTS_REQUEST_TIMEOUT_SEC", 120.0),
        openrouter_api_key=env_text(env, "OPENROUTER_API_KEY"),
        openrouter_default_model=env_text(env, "OPENROUTER_DEFAULT_MODEL") or DEFAULT_OPENROUTER_MODEL,
        openrouter_allowed_models=parse_list(env_text(env, "OPENROUTER_ALLOWED_MODELS")),
        openrouter_base_url=env_url(env, "OPENROUTER_BASE_URL", DEFAULT_OPENROUTER_URL),
        openrouter_embedding_model=env_text(env, "OPENROUTER_EMBEDDING_MODEL"),
        openrouter_http_referer=env_text(env, "OPENROUTER_HTTP_REFERER"),
        openrouter_app_title=env_text(env, "OPENROUTER_APP_TITLE"),
        max_iterations=env_int(env, "AGENTIC_MAX_ITERATIONS", 10, maximum=100),
        chat_max_iterations=env_int(env, "AGENTIC_CHAT_MAX_ITERATIONS", 6, maximum=100),
        tool_timeout=_timeout(env, "INSIGHTS_TOOL_TIMEOUT_SEC", 30.0),
        nominatim_url=env_url(env, "NOMINATIM_URL", DEFAULT_NOMINATIM_URL),
        nominatim_user_agent=env_text(env, "NOMINATIM_USER_AGENT") or DEFAULT_USER_AGENT,
        nominatim_min_interval=env_number(env, "NOMINATIM_MIN_INTERVAL_SEC", 1.0, minimum=0.0, maximum=3600.0,
                                          unit=" of seconds"),
        apollo_url=env_url_or_none(env, "APOLLO_API_BASE_URL"),
        sms_api_url=env_url(env, "SMS_API_URL", DEFAULT_SMS_API_URL),
        sms_api_token=env_text(env, "SMS_API_TOKEN"),
        summary_model=env_text(env, "SUMMARIES_MODEL"),
        summaries_contacts=parse_list(env_text(env, "SUMMARIES_CONTACTS")),
        summaries_from=env_day(env, "SUMMARIES_FROM"),
        summaries_to=env_day(env, "SUMMARIES_TO"),
        summaries_days=env_int(env, "SUMMARIES_DAYS", 30, maximum=36600),
    )
    if settings.summaries_from and settings.summaries_to and settings.summaries_from > settings.summaries_to:
        raise ConfigError("SUMMARIES_FROM", "is after SUMMARIES_TO")
    return settings


def insight_settings(config: Config) -> InsightSettings:
    """The insight settings load_config read."""
    return config.insights
