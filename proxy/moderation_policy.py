"""The moderation section of the policy file: what is checked, what refuses, what strikes cost."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

_WINDOW = re.compile(r"^(\d+)/(second|minute|hour|day)$")
_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}


class ModerationRules(BaseModel):
    """Which requests are moderated and which verdicts refuse them (overridable per team)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    operations: tuple[str, ...] = ("images.generate", "images.edit")
    images: tuple[str, ...] = ("images.edit", "images.create_variation")  # input images checked
    refuse: tuple[str, ...] | None = None  # None: every category OpenAI flags
    thresholds: dict[str, float] = Field(default_factory=dict)

    @field_validator("thresholds")
    @classmethod
    def _scores(cls, thresholds: dict[str, float]) -> dict[str, float]:
        if any(not 0 <= score <= 1 for score in thresholds.values()):
            raise ValueError("thresholds are scores from 0 to 1")
        return thresholds


class ModerationPolicy(BaseModel):
    """Moderation before image generation: on by default, failing closed."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    model: str = "omni-moderation-latest"
    failure: Literal["fail_closed", "fail_open"] = "fail_closed"
    timeout: float = Field(default=10.0, gt=0)
    verdict_ttl: float = Field(default=86400.0, gt=0)
    strikes: str | None = "5/day"
    log_prompts: bool = False
    rules: ModerationRules = ModerationRules()
    teams: dict[str, ModerationRules] = Field(default_factory=dict)

    @field_validator("strikes")
    @classmethod
    def _window(cls, strikes: str | None) -> str | None:
        if strikes is not None and not _WINDOW.match(strikes):
            raise ValueError('strikes look like "5/day" (per second, minute, hour or day)')
        return strikes

    def rules_for(self, team: str) -> ModerationRules:
        """The team's own rules, or the default ones."""
        return self.teams.get(team, self.rules)

    def strike_limit(self) -> tuple[int, float] | None:
        """(allowed strikes, window in seconds), or None when strikes are off."""
        found = _WINDOW.match(self.strikes or "")
        if found is None:
            return None
        return int(found.group(1)), float(_SECONDS[found.group(2)])
