"""Exceptions raised for user mistakes.

Everything a user can get wrong (an unknown name, a bad option value, a
missing file) raises a subclass of :class:`DeqcertError` with a one-line
message naming the problem and what is accepted.  The CLI turns these into a
single line on stderr and exit code 2; anything else is a bug.
"""

from __future__ import annotations


class DeqcertError(Exception):
    """Base class of all user-facing deqcert errors."""


class UnknownNameError(DeqcertError, KeyError):
    """A registry lookup for a name that is not registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class OptionError(DeqcertError, ValueError):
    """An unknown, mistyped or out-of-range option."""


class RegistrationError(DeqcertError):
    """A name registered twice without ``override=True``, or a bad target."""


class PluginLoadError(DeqcertError):
    """A registered component whose module failed to import."""


class CheckpointError(DeqcertError):
    """A checkpoint file that is missing, malformed or does not match its model."""


class DataError(DeqcertError):
    """A dataset or input that cannot be used (missing files, wrong shape, NaN)."""


class ResultsError(DeqcertError):
    """A results file that cannot be written, resumed or merged."""


class DeqcertWarning(UserWarning):
    """Something a user should know about a result that is still valid (shown by default)."""
