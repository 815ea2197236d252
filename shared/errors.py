"""User-facing errors.

Every failure a user can cause or fix (bad input, bad config, missing file)
is raised as a `FedEHRError`. The CLI turns it into one line on stderr and a
non-zero exit code, never a traceback. Messages name the file, the field and
the fix: ``where: what is wrong. Fix: what to do``.
"""

from __future__ import annotations


class FedEHRError(Exception):
    """Base class of errors that are reported to the user as one line."""

    exit_code = 1

    def __init__(self, message: str, *, where: str | None = None, fix: str | None = None):
        self.message = message
        self.where = where
        self.fix = fix
        super().__init__(self.one_line())

    def one_line(self) -> str:
        text = f"{self.where}: {self.message}" if self.where else self.message
        if self.fix:
            text += f". Fix: {self.fix}"
        return text


class DataError(FedEHRError):
    """Input data is missing, malformed or inconsistent."""


class ConfigError(FedEHRError):
    """A configuration file or option is invalid."""


class AnchorUnavailableError(FedEHRError):
    """The public anchor dataset can be neither downloaded nor found locally."""
