"""Errors that a user can act on. The command line prints their message, without a traceback."""

__all__ = ["ConfigError", "RunDirError", "TrainingDiverged", "UserError"]


class UserError(Exception):
    """Base class: a problem with the user's input, files or settings, not a bug."""


class ConfigError(UserError, ValueError):
    """An invalid setting, or one that does not fit the data or the run being resumed."""


class RunDirError(UserError):
    """The output folder cannot be used: not writable, locked by another run, or holding another run."""


class TrainingDiverged(UserError):
    """The loss became NaN or infinite. The last good checkpoint is left intact."""
