"""The crash-safe run store: one folder per run identity, atomic writes, per-run locks, the
level table and its column list (store). Imports config and the layers below it.
"""
from sddlib.storage.store import Run, RunStore

__all__ = ["Run", "RunStore"]
