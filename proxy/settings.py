"""Process settings: the one place that reads the environment (TOLLGATE_*, nested with "__")."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AnyHttpUrl, BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class UpstreamSettings(BaseModel):
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


class CredentialSettings(BaseModel):
    """A named upstream credential a team bills to (TOLLGATE_CREDENTIALS__<NAME>__*)."""

    api_key: SecretStr | None = None
    organization: SecretStr | None = None
    project: SecretStr | None = None
    base_url: AnyHttpUrl | None = None


class RedisSettings(BaseModel):
    """Connection to a Redis shared by every replica."""

    url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")
    timeout: float = Field(default=0.05, gt=0)


class QuotaSettings(BaseModel):
    """What quotas do when the store fails, and how long a concurrency slot may be held.

    `fail_closed` (default) answers 503 while limits cannot be checked: money spent past a
    budget cannot be taken back, a retried request can. `fail_open` admits, and counts and
    logs every request it let through unchecked.
    """

    failure_mode: Literal["fail_open", "fail_closed"] = "fail_closed"
    breaker_failures: int = Field(default=5, ge=1)  # consecutive failures that open it
    breaker_cooldown: float = Field(default=5.0, gt=0)  # seconds before the store is probed
    lease: float = Field(default=900.0, gt=0)  # seconds a crashed replica's slot stays taken


class LogSettings(BaseModel):
    """How the canonical request lines are written."""

    format: Literal["json", "console"] = "json"
    level: Literal["debug", "info", "warning", "error"] = "info"


class Settings(BaseSettings):
    """Everything a Tollgate process needs to start."""

    model_config = SettingsConfigDict(
        env_prefix="TOLLGATE_",
        env_nested_delimiter="__",
        extra="ignore",
    )

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    config_file: Path | None = None
    passthrough: bool = True
    max_request_bytes: int = Field(default=100 * 1024 * 1024, ge=1024)
    store: Literal["memory", "redis"] = "memory"
    upstream: UpstreamSettings = UpstreamSettings()
    credentials: dict[str, CredentialSettings] = Field(default_factory=dict)
    redis: RedisSettings = RedisSettings()
    quota: QuotaSettings = QuotaSettings()
    log: LogSettings = LogSettings()
    admin_token: SecretStr | None = None
    data_file: Path | None = Path("data/tollgate-keys.json")
    pseudonym_secret: SecretStr | None = None
