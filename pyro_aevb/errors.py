"""Errors and warnings that a user can act on. The command line prints their message, without a traceback."""

import warnings

__all__ = [
    "CheckpointError", "ConfigError", "DamagedCheckpoint", "RunDirError", "RunWarning", "TrainingDiverged",
    "UnsafeCheckpoint", "UnsupportedModelError", "UserError", "note",
]


class UserError(Exception):
    """Base class: a problem with the user's input, files or settings, not a bug."""


class ConfigError(UserError, ValueError):
    """An invalid setting, or one that does not fit the data or the run being resumed."""


class RunDirError(UserError):
    """The output folder cannot be used: not writable, locked by another run, or holding another run."""


class CheckpointError(RunDirError):
    """A checkpoint that cannot be read (truncated, empty, damaged) or cannot be written."""


class DamagedCheckpoint(CheckpointError):
    """A checkpoint file that is empty, truncated or otherwise not a readable checkpoint."""


class UnsafeCheckpoint(CheckpointError):
    """
    A checkpoint that holds Python objects other than tensors, numbers, strings, lists and dicts. It is
    refused without running anything in it.
    """


class UnsupportedModelError(UserError, ValueError):
    """
    A model or guide outside the class the library supports (continuous latent variables per datapoint,
    inside a plate over the data); the message names the site and the problem.
    """


class TrainingDiverged(UserError):
    """The loss became NaN or infinite. The last good checkpoint is left intact."""


class RunWarning(UserWarning):
    """
    Something about a run folder that the user should know but that does not stop the command: a
    damaged file recovered from the checkpoint, an older checkpoint generation used, a setting ignored.
    The command line prints it as one line.
    """


def note(message):
    """Tell the user something they should know about a run (a :class:`RunWarning`; the command line prints one line)."""
    warnings.warn(message, RunWarning, stacklevel=2)
