"""The package's one exception hierarchy.

Every error a user can cause derives from :class:`EdgeMerError`, so entry
points can print it as one line and exit 2 without a traceback.
"""
from __future__ import annotations


class EdgeMerError(Exception):
    """Base class of every error raised on purpose by edge-mer."""


class ConfigError(EdgeMerError, ValueError):
    """A configuration value or file is invalid (the message names the key)."""


class BundleError(EdgeMerError):
    """A model bundle is malformed, incomplete or fails validation."""


class IntegrityError(BundleError):
    """A bundle file's content does not match the sha256 in its manifest."""


class BackendError(EdgeMerError):
    """An inference backend is unknown, unavailable or failed to run."""


class InputError(EdgeMerError, ValueError):
    """Data handed to a backend or preprocessor has the wrong name, shape, dtype or values."""


class SensorError(EdgeMerError):
    """A sensor or replay source cannot be opened or stopped delivering data."""
