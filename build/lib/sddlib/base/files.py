"""Files written so that a process killed at any moment leaves the old file or the new one,
and read so that a damaged one is named instead of trusted.

Every write goes to a temporary file in the same folder, is flushed and synced, then
replaces the target with ``os.replace``. A write that fails part way (a full disk) removes
its temporary file and leaves the target as it was; its ``OSError`` names the target.

Checkpoints are read with ``weights_only`` onto the CPU. ``torch.save`` writes a zip
archive that records a CRC-32 of every tensor, but ``torch.load`` does not check them: a
flipped byte loads as a wrong weight. So :func:`load_torch` checks them (the file is read
once, the CRC costs a fraction of the load) and raises :class:`DamagedFileError`, one
line naming the file, for a truncated or corrupted checkpoint.
"""
from __future__ import annotations

import contextlib
import io
import os
import tempfile
import zipfile
from pathlib import Path

import torch


class DamagedFileError(ValueError):
    """A stored file is truncated, corrupted or missing: ``path`` and ``reason``, one line."""

    def __init__(self, path: Path | str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = Path(path), reason


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        try:
            _write_fully(handle, data)
            os.fsync(handle)
        finally:
            os.close(handle)
        os.replace(temporary, path)
    except BaseException as error:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        if isinstance(error, OSError) and error.filename is None and error.errno is not None:
            raise OSError(error.errno, error.strerror or os.strerror(error.errno),
                          str(path)) from error
        raise


def _write_fully(handle: int, data: bytes) -> None:
    """Write all of ``data`` to the open file ``handle`` (``os.write`` may write less)."""
    view = memoryview(data)
    while view:
        view = view[os.write(handle, view):]


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_save_torch(path: Path, obj) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_torch(path: Path):
    """The checkpoint at ``path``, its CRCs checked; :class:`DamagedFileError` if it is
    truncated or corrupted (a missing file raises ``FileNotFoundError``)."""
    data = Path(path).read_bytes()
    check_zip(path, io.BytesIO(data), crc=True)
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises RuntimeError, pickle and zip errors alike
        raise DamagedFileError(path, f"unreadable checkpoint ({_first_line(error)})") from None


def check_zip(path: Path, source=None, crc: bool = False) -> None:
    """Raise :class:`DamagedFileError` unless ``path`` (or the open ``source`` read from
    it) is a whole zip archive, as ``torch.save`` and ``numpy.savez`` write them.

    Without ``crc`` only the archive's directory at its end is read (a truncated file
    fails): cheap, whatever the file's size. With ``crc`` every member is read and its
    CRC-32 compared.
    """
    try:
        with zipfile.ZipFile(source if source is not None else path) as archive:
            bad = archive.testzip() if crc else None
    except (zipfile.BadZipFile, EOFError, ValueError, OSError) as error:
        if isinstance(error, FileNotFoundError):
            raise
        raise DamagedFileError(path, f"truncated or not a checkpoint ({_first_line(error)})") \
            from None
    if bad is not None:
        raise DamagedFileError(path, f"corrupted: the CRC of {bad} does not match its bytes")


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
