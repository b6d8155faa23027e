"""Process settings: the one place that reads the environment (TOLLGATE_*, nested with "__")."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    IPvAnyNetwork,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

# How much of a documented request is checked before it is sent (README, "Validation").
ValidationMode = Literal["strict", "documented", "off"]


class Section(BaseModel):
    """A group of settings whose errors never echo what was given: it may hold a secret."""

    model_config = ConfigDict(hide_input_in_errors=True)


class UpstreamSettings(Section):
    """Where requests go and with which central credential."""

    base_url: AnyHttpUrl = AnyHttpUrl("https://api.openai.com")
    api_key: SecretStr | None = None
    organization: SecretStr | None = None
    project: SecretStr | None = None
    connect_timeout: float = Field(default=10.0, gt=0)
    read_timeout: float = Field(default=600.0, gt=0)
    pool_size: int = Field(default=512, ge=1)

    @field_validator("base_url")
    @classmethod
    def _no_path_query_or_credentials(cls, url: AnyHttpUrl) -> AnyHttpUrl:
        if url.username or url.password or url.query or url.fragment:
            raise ValueError("upstream base_url takes only scheme, host, port and path")
        return url

    @property
    def origin(self) -> str:
        """The base URL without a trailing slash, ready to have `/v1/...` appended."""
        return str(self.base_url).rstrip("/")


class CredentialSettings(Section):
    """A named upstream credential a team bills to (TOLLGATE_CREDENTIALS__<NAME>__*)."""

    api_key: SecretStr | None = None
    organization: SecretStr | None = None
    project: SecretStr | None = None
    base_url: AnyHttpUrl | None = None


class RedisSettings(Section):
    """Connection to a Redis shared by every replica: one server, or a Redis Cluster.

    With `cluster`, `url` names any one node of the cluster (its database must be 0); the
    client learns the others and which slots each serves from it.
    """

    url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")
    cluster: bool = False
    timeout: float = Field(default=0.05, gt=0)

    @field_validator("cluster")
    @classmethod
    def _cluster_has_database_0_only(cls, cluster: bool, info: ValidationInfo) -> bool:
        """A cluster has no databases but 0: say so at start-up. Checked on this field, so
        that the error shows its value only, never the URL (a secret)."""
        url = info.data.get("url")
        database = urlsplit(url.get_secret_value()).path if isinstance(url, SecretStr) else ""
        if cluster and database.strip("/") not in ("", "0"):
            raise ValueError("a Redis Cluster has database 0 only: end the URL with /0")
        return cluster


class CacheSettings(Section):
    """What is cached, for how long, and how much memory the embedded cache may hold."""

    enabled: bool = True
    ttl: float = Field(default=300.0, gt=0)
    operations: dict[str, float] = Field(default_factory=dict)  # opt-in: operation -> TTL
    max_bytes: int = Field(default=64 * 1024 * 1024, ge=0)
    max_entry_bytes: int = Field(default=1024 * 1024, ge=0)
    lock_ttl: float = Field(default=5.0, gt=0)


class QuotaSettings(Section):
    """What quotas do when the store fails, and how long a concurrency slot may be held.

    `fail_closed` (default) answers 503 while limits cannot be checked: money spent past a
    budget cannot be taken back, a retried request can. `fail_open` admits, and counts and
    logs every request it let through unchecked.
    """

    failure_mode: Literal["fail_open", "fail_closed"] = "fail_closed"
    breaker_failures: int = Field(default=5, ge=1)  # consecutive failures that open it
    breaker_cooldown: float = Field(default=5.0, gt=0)  # seconds before the store is probed
    lease: float = Field(default=900.0, gt=0)  # seconds a crashed replica's slot stays taken


class AuthSettings(Section):
    """How many failed authentications one client address gets before it is refused.

    A failure is a `/v1` request with a missing or wrong key, or an admin request with a wrong
    token. `max_failures` of them within `failure_window` seconds are answered 401; past that,
    every request from the address (a valid key included, so guessing learns nothing) gets 429
    until the window allows another. Counted in the store, so replicas on Redis add up.
    """

    max_failures: int = Field(default=10, ge=0)  # 0 turns the limit off
    failure_window: float = Field(default=60.0, gt=0, le=86_400)


class AdminSettings(Section):
    """Where the admin API listens: on the main port, or on a port of its own (and then not
    on the main port at all), e.g. one bound to an internal interface only."""

    port: int | None = Field(default=None, ge=0, le=65535)  # None: under /admin on the main port
    host: str | None = None  # for `port`; None: the main host


class LogSettings(Section):
    """How the canonical request lines are written."""

    format: Literal["json", "console"] = "json"
    level: Literal["debug", "info", "warning", "error"] = "info"


class MetricsSettings(Section):
    """Where `/metrics` is served, whether worker processes share it, and per-user labels."""

    enabled: bool = True
    port: int | None = Field(default=None, ge=0, le=65535)  # None: on the main port
    host: str | None = None  # for `port`; None: the main host
    multiproc_dir: Path | None = None  # shared by every worker process of one server
    top_users: int = Field(default=0, ge=0, le=1000)  # per-user labels: 0 is off


class HeaderLimits(BaseModel):
    """How large a request's head may be before the HTTP parser refuses it with 431.

    `max_line_bytes` bounds the request line and each header (name and value together);
    `max_count` bounds the number of headers. The defaults are aiohttp's, well above what the
    OpenAI SDKs send (about a dozen short headers); raise them only for a gateway in front
    that adds large headers of its own.
    """

    max_line_bytes: int = Field(default=8190, ge=1024, le=65536)
    max_count: int = Field(default=128, ge=16, le=1024)


class Settings(BaseSettings):
    """Everything a Tollgate process needs to start."""

    model_config = SettingsConfigDict(
        env_prefix="TOLLGATE_",
        env_nested_delimiter="__",
        extra="ignore",
        hide_input_in_errors=True,  # an error shows the whole environment it was given
    )

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    config_file: Path | None = None
    passthrough: bool = True
    max_request_bytes: int = Field(default=100 * 1024 * 1024, ge=1024)
    headers: HeaderLimits = HeaderLimits()
    shutdown_grace: float = Field(default=30.0, ge=0)
    store: Literal["memory", "redis"] = "memory"
    upstream: UpstreamSettings = UpstreamSettings()
    credentials: dict[str, CredentialSettings] = Field(default_factory=dict)
    redis: RedisSettings = RedisSettings()
    quota: QuotaSettings = QuotaSettings()
    log: LogSettings = LogSettings()
    cache: CacheSettings = CacheSettings()
    metrics: MetricsSettings = MetricsSettings()
    admin_token: SecretStr | None = None
    admin: AdminSettings = AdminSettings()
    auth: AuthSettings = AuthSettings()
    # Proxies whose X-Forwarded-For is believed (addresses or networks); none by default.
    trusted_proxies: tuple[IPvAnyNetwork, ...] = ()
    data_file: Path | None = Path("data/tollgate-keys.json")
    pseudonym_secret: SecretStr | None = None
    validation: ValidationMode = "documented"

    @field_validator("data_file", "config_file", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        """An empty TOLLGATE_DATA_FILE or TOLLGATE_CONFIG_FILE means none, not the cwd."""
        return None if value == "" else value

    @model_validator(mode="after")
    def _one_multiprocess_directory(self) -> Settings:
        """prometheus_client reads PROMETHEUS_MULTIPROC_DIR by itself; Tollgate decides here
        and exports it (see `proxy.metrics.share_across_processes`), so a different value
        set by hand would split the metrics between two directories."""
        foreign = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        ours = self.metrics.multiproc_dir
        if foreign is not None and (ours is None or Path(foreign) != ours):
            raise ValueError(
                "PROMETHEUS_MULTIPROC_DIR is set: set TOLLGATE_METRICS__MULTIPROC_DIR to the "
                "same directory instead (Tollgate exports PROMETHEUS_MULTIPROC_DIR itself)"
            )
        return self
