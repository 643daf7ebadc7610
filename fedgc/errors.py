"""Errors that reach users: each names the client, the file or the setting at fault."""


class FedGCError(ValueError):
    """Base class for user-facing errors."""


class ConfigError(FedGCError):
    """A YAML config or CLI setting is invalid."""


class DataError(FedGCError):
    """A client's data file is missing or malformed."""


class ModelError(FedGCError):
    """A client's local model is invalid (unstable, undetectable, not positive definite, ...)."""


class FedGCWarning(UserWarning):
    """Bad input that fedgc repaired (a dropped column, values turned into missing ones, rows aligned);
    the message names the client, the file and what was done."""
