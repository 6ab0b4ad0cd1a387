"""Exceptions that carry a one-line, user-facing message.

The CLI turns any `IrisError` into that line on stderr and a non-zero exit code; nothing else
should print tracebacks at users for bad input.
"""

from __future__ import annotations


class IrisError(Exception):
    """Base of every error caused by the user's input or environment (not by a bug)."""

    exit_code = 2


class ConfigError(IrisError):
    """A configuration value is missing, of the wrong type, or not among the allowed values."""


class InputError(IrisError):
    """An input file or value (audio, image, text, ...) cannot be used."""


class CheckpointError(IrisError):
    """A checkpoint file cannot be read, is unsafe, or does not match the model."""
