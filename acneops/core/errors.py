"""Errors a person can act on. The CLI prints their message (no traceback) and exits non-zero."""


class AcneopsError(Exception):
    """Base of every error caused by input or configuration rather than by a bug."""


class StageError(AcneopsError):
    """A stage cannot produce its outputs from what it was given (the message says why and the fix)."""
