"""What one verification step found, and the whole run's verdict."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict


class StepStatus(StrEnum):
    """``not deployed`` is only ever given to components a target may lack."""

    PASS = "pass"  # noqa: S105 - a status word, not a password
    FAIL = "fail"
    NOT_DEPLOYED = "not deployed"


class StepResult(BaseModel):
    """One row of the report."""

    model_config = ConfigDict(frozen=True)

    number: int
    name: str
    status: StepStatus
    seconds: float
    detail: str


class VerifyReport(BaseModel):
    """Everything ``--json`` prints."""

    model_config = ConfigDict(frozen=True)

    target: str
    event_id: str | None
    steps: list[StepResult]

    @property
    def ok(self) -> bool:
        """True when no deployed step failed."""
        return all(step.status is not StepStatus.FAIL for step in self.steps)
