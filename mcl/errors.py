"""Exceptions for bad inputs; the CLI prints them as one line and exits with code 2.

Kept free of heavy imports so that reporting a bad input stays fast.
"""


class StoreError(RuntimeError):
    """A missing, corrupt, truncated or mismatched episode store."""


class CheckpointError(RuntimeError):
    """A missing, truncated, unsafe or mismatched checkpoint."""


class NonFiniteLossError(RuntimeError):
    """Training hit a non-finite loss or gradient with ``train.nonfinite: stop``."""
