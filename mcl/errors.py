"""Exceptions for bad inputs; the CLI prints them as one line and exits with code 2.

Kept free of heavy imports so that reporting a bad input stays fast.
"""


class StoreError(RuntimeError):
    """A missing, corrupt, truncated or mismatched episode store."""


class CheckpointError(RuntimeError):
    """A missing, truncated, unsafe or mismatched checkpoint."""


class NonFiniteLossError(RuntimeError):
    """Training hit a non-finite loss or gradient with ``train.nonfinite: stop``."""


def brief(e: BaseException) -> str:
    """``Type: first line`` of an exception from a library (zarr, h5py, torch messages can span lines)."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return f"{type(e).__name__}: {lines[0][:200]}" if lines else type(e).__name__
