"""Files written so that a process killed at any moment leaves the old file or the new one.

Every write goes to a temporary file in the same folder, is flushed and synced, then
replaces the target with ``os.replace``. Checkpoints are read with ``weights_only`` onto
the CPU.
"""
from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path

import torch


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_save_torch(path: Path, obj) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_torch(path: Path):
    return torch.load(path, map_location="cpu", weights_only=True)
