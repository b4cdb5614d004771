"""Errors a user can cause and fix: the entry points print them as one line."""


class UserError(Exception):
    """A mistake in the user's input (options, data, storage); never a bug."""


class ConfigError(UserError, ValueError):
    """A trial configuration with an unknown key or an out-of-range value."""


class DataError(UserError):
    """Missing, corrupt or unrecognised training data."""
