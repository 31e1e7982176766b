"""Typed errors of the settings subsystem.

Every failure the settings code reports is one of these (all subclass
scx_slo.errors.ScxSloError), so callers and the property tests can rely on
"our typed error or success, nothing else".
"""
from __future__ import annotations

from dataclasses import dataclass

from scx_slo.errors import ScxSloError


class SettingsError(ScxSloError):
    """Base class of settings errors."""


class DurationError(SettingsError):
    """A duration string that is not a positive, unit-bearing, bounded duration."""


@dataclass(frozen=True)
class Issue:
    """One problem in a settings file, located as FILE:LINE:COL."""

    file: str
    line: int
    col: int
    key: str
    message: str

    def __str__(self) -> str:
        key = self.key or "(document)"
        return f"{self.file}:{self.line}:{self.col}: {key}: {self.message}"


class ValidationError(SettingsError):
    """A settings document that fails validation; carries every issue found."""

    def __init__(self, issues: list[Issue]):
        self.issues = list(issues)
        super().__init__("\n".join(str(i) for i in self.issues))


class UserDataError(SettingsError):
    """User-data that cannot be decoded (bad base64, binary, not UTF-8)."""


class RenderError(SettingsError):
    """A render request that cannot be honoured (bad name, unknown target)."""


class StoreError(SettingsError):
    """The persistent last-good store cannot be read or written."""
