"""Typed errors: every failure a user can cause names the file, row or key and the rule."""


class SafePatchingError(Exception):
    """Base class of all errors raised on purpose by safepatching."""


class ConfigError(SafePatchingError):
    """params.yaml (or another config) is invalid: names the key and the rule."""


class DataError(SafePatchingError):
    """An input data file is malformed: names the file, row and rule."""


class ValidationFailed(SafePatchingError):
    """A harmful-data batch failed its expectations; the report path says which rows and rules."""

    def __init__(self, message: str, report_path: str | None = None):
        super().__init__(message)
        self.report_path = report_path


class CheckpointError(SafePatchingError):
    """A checkpoint or patch is unusable (missing file, shape mismatch, pickle-only, ...)."""


class NonFiniteError(CheckpointError):
    """A merge or patch produced NaN/Inf: names the tensor."""


class ExecutorError(SafePatchingError):
    """A distributed executor (the sweep's Dask cluster) is missing or unreachable: names the address."""


class UnknownNameError(SafePatchingError, KeyError):
    """A registry lookup failed; the message lists the known names."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])
