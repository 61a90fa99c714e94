"""The run store: one folder per run, found again by its config, never overwritten.

A run's folder is ``<runs_dir>/<readable name>-<hash>``, e.g.
``mnist-5k-mlp-300x100-random20-magnitude-lottery-seed0-3f9c2a1b7e``: readable for
people, the hash of :meth:`ExperimentConfig.identity` for the machine. The index of all runs is made
by scanning the folders' ``config.json`` (``sddlib ls``), so it can never go stale, even with
several machines writing to one shared store.

A run folder holds::

    config.json        the full config it was started with
    meta.json          versions, code revision, device, host, start time
    levels.csv         one row per finished level (the results)
    checksums.json     size and sha256 of every committed checkpoint, and how many rows
                       levels.csv has (see "Damage" below)
    label_noise.npz    which training samples got which noisy label
    validation.npz     which training samples were held out (validation_size > 0 only)
    checkpoints/init.pt, rewind.pt, level_XX/mask.pt, level_XX/final.pt
    checkpoints/level_XX/entropy.json   the level's activation entropy per layer
    progress.pt        the newest mid-level checkpoint (deleted when its level is done)
    .lock              held (flock) by the process computing the run

Kills. Every file is written atomically (a temporary file in the same folder, flushed,
then ``os.replace``), so a process killed at any moment leaves either the old file or the
new one; a new run's folder appears whole (``config.json`` and ``meta.json`` are written
into a hidden folder that is then renamed), and the process that takes a run's lock
removes the temporary files a killed one left. A level is committed in three steps,
its checkpoints, its row in ``levels.csv``, then ``checksums.json``; a level with a row
is never computed again. ``scripts/kill_trials.py`` kills runs at random moments and
checks that they resume to the uninterrupted table.

Concurrency. The process computing a run holds its ``.lock`` (``flock``); a second one
refuses with :class:`RunBusyError`, one line, after half a second of retries (so that
``sddlib ls`` probing the lock is not mistaken for a rival).

Damage. A truncated or corrupted file raises :class:`DamagedFileError`, one line naming
the file; ``sddlib ls`` shows the run as ``damaged`` with that line, :meth:`RunStore.find`
refuses to reuse or resume it, and ``sddlib clean --damaged`` removes it. What is checked
where (:meth:`Run.check`), by cost:

- listing and finding a run (``sddlib ls``, every :meth:`RunStore.find`): its JSON files
  parse, ``levels.csv`` is whole (every line complete, levels 0, 1, ... in order, numbers
  where numbers belong) and has as many rows as ``checksums.json`` records (one more
  while a level is being committed), and every committed checkpoint exists with its
  recorded size and its zip directory. That reads the small files and the end of each
  checkpoint, whatever the checkpoints weigh, so it stays cheap on a store of paper-sized
  runs (gigabytes of checkpoints per run);
- ``sddlib ls --verify`` also hashes every committed checkpoint against its sha256 and
  checks the CRC of every zip member: it reads every byte, so it is asked for;
- every checkpoint that is loaded (:func:`files.load_torch`) has its CRCs checked, so a
  silently flipped byte is caught where it would do harm, at no extra read.

``levels.csv`` is not hashed: the learning-distance and activation-entropy upgrades
rewrite it in place, and its numbers can be recomputed from the hashed checkpoints.
A damaged mid-level checkpoint (``progress.pt``) loses nothing committed: ``sddlib run``
discards it with a warning and restarts its level, and ``clean --damaged`` removes only it.

Disk full. A failed write leaves the file it was replacing as it was (see
:mod:`sddlib.base.files`), so nothing already stored is lost; the run resumes once there is
space.
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import errno
import fcntl
import hashlib
import io
import json
import multiprocessing
import os
import platform
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Optional

import pandas as pd
import torch

# re-exported: a store is read and written with them
from sddlib.base.files import (  # noqa: F401
    DamagedFileError,
    atomic_save_torch,
    atomic_write_bytes,
    atomic_write_text,
    check_zip,
    load_torch,
)

# the config's own value checks, so that a filter value reads as a config value does
from sddlib.config.fields import (
    IDENTITY_VERSION,
    ConfigError,
    ExperimentConfig,
    checked_value,
    parse_assignments,
)
from sddlib.pruning.retrain import mode_of

LEVEL_COLUMNS = ["level", "sparsity", "remaining_weights", "train_acc", "train_acc_clean",
                 "train_acc_corrupted", "train_loss", "test_acc", "test_loss",
                 "learning_distance", "activation_entropy", "seconds"]

CHECKSUMS = "checksums.json"
# what a level commits, beside its row; the run-wide files are committed with level 0
_LEVEL_FILES = ("mask.pt", "final.pt")
_RUN_FILES = ("checkpoints/init.pt", "checkpoints/rewind.pt", "label_noise.npz",
              "validation.npz")
_LOCK_PATIENCE = 0.5  # seconds a second process retries a held lock before it refuses


class RunBusyError(RuntimeError):
    pass


# ---------------------------------------------------------------------------- one run
class Run:
    """A run's folder. ``config`` is None only for a folder whose ``config.json`` cannot
    be read, as :meth:`RunStore.listing` finds one (it can be listed and removed, no more)."""

    def __init__(self, path: Path, config: Optional[ExperimentConfig]):
        self.path = Path(path)
        self.config = config

    @property
    def name(self) -> str:
        return self.path.name

    def file(self, *parts: str) -> Path:
        return self.path.joinpath(*parts)

    def level_dir(self, level: int) -> Path:
        return self.file("checkpoints", f"level_{level:02d}")

    def levels(self) -> pd.DataFrame:
        """The finished levels' rows; :class:`DamagedFileError` if ``levels.csv`` is not
        whole (see :func:`_check_levels_text`)."""
        path = self.file("levels.csv")
        try:
            text = path.read_text()
        except FileNotFoundError:
            return pd.DataFrame(columns=LEVEL_COLUMNS)
        except UnicodeDecodeError:
            raise DamagedFileError(path, "corrupted: not text") from None
        _check_levels_text(path, text)
        return pd.read_csv(io.StringIO(text))

    def levels_done(self) -> int:
        return len(self.levels())

    def is_finished(self, levels: Optional[int] = None) -> bool:
        """Whether the run has every level its config asks for (a re-dense branch: one)."""
        wanted = mode_of(self.config).levels(self.config) if levels is None else levels
        return self.levels_done() >= wanted + 1

    def append_level(self, row: dict) -> None:
        """Commit a level whose checkpoints are on disk: its row, then its checksums.

        In that order, and :meth:`check` reads ``checksums.json`` before ``levels.csv``, so
        a process killed between the two writes, or a reader between them, sees
        ``levels.csv`` one row ahead, which is allowed; a ``levels.csv`` behind it is
        damaged. The checksums the kill left out are recorded when the run is next locked.
        """
        table = self.levels()
        if row["level"] != len(table):
            raise RuntimeError(f"{self.name}: level {row['level']} after {len(table)} rows")
        table = pd.concat([table, pd.DataFrame([row])[table.columns.union(row.keys(),
                                                                          sort=False)]],
                          ignore_index=True)
        atomic_write_text(self.file("levels.csv"), table.to_csv(index=False))
        self._record_checksums(len(table))

    def meta(self) -> dict:
        path = self.file("meta.json")
        return _read_json(path, dict) if path.exists() else {}

    def checksums(self) -> dict:
        """``checksums.json``: ``{"levels": rows committed, "files": {relative path:
        {"bytes": size, "sha256": hex}}}``; ``levels`` is None for a run stored before it
        existed."""
        path = self.file(CHECKSUMS)
        if not path.exists():
            return {"levels": None, "files": {}}
        manifest = _read_json(path, dict)
        files, rows = manifest.get("files"), manifest.get("levels")
        if not isinstance(files, dict) or not isinstance(rows, int) or not all(
                isinstance(entry, dict) and isinstance(entry.get("bytes"), int)
                and isinstance(entry.get("sha256"), str) for entry in files.values()):
            raise DamagedFileError(path, "corrupted: not the levels and files it records")
        return manifest

    def check(self, verify: bool = False, progress: bool = True) -> None:
        """Raise :class:`DamagedFileError` naming the first damaged file of the run.

        The checks and what they cost are in the module docstring: without ``verify``
        every committed checkpoint's size and zip directory, with it their sha256 and
        CRCs. ``progress``: check ``progress.pt`` too (a damaged one loses nothing
        committed; :meth:`RunStore.find` leaves it to the resuming run to discard).
        A run being computed (:meth:`is_locked`) is in flux: check it only while holding
        its lock, or accept a false alarm.
        """
        if self.config is None:
            read_config(self.path)  # raises what is wrong with it
        self.meta()
        manifest = self.checksums()  # before levels.csv: see append_level
        rows = self.levels_done()
        recorded = manifest["levels"]
        if recorded is not None and not recorded <= rows <= recorded + 1:
            raise DamagedFileError(self.file("levels.csv"),
                                   f"{'truncated' if rows < recorded else 'corrupted'}: "
                                   f"{rows} rows, {CHECKSUMS} records {recorded}")
        for relative in self._committed(rows):
            path, entry = self.file(relative), manifest["files"].get(relative)
            if not path.exists():
                if entry is not None or relative.startswith("checkpoints/level_") or \
                        relative == "checkpoints/init.pt":
                    raise DamagedFileError(path, "missing")
                continue
            if entry is not None:
                size = path.stat().st_size
                if size != entry["bytes"]:
                    how = "truncated" if size < entry["bytes"] else "corrupted"
                    raise DamagedFileError(path, f"{how}: {size} bytes, {CHECKSUMS} records "
                                           f"{entry['bytes']}")
                if verify and _digest(path)["sha256"] != entry["sha256"]:
                    raise DamagedFileError(path, f"corrupted: its sha256 is not the one "
                                           f"{CHECKSUMS} records")
            check_zip(path, crc=verify)
        if progress:
            with contextlib.suppress(FileNotFoundError):  # its level may just have finished
                check_zip(self.file("progress.pt"), crc=verify)

    def problem(self, verify: bool = False) -> Optional[DamagedFileError]:
        """What :meth:`check` finds, or None."""
        try:
            self.check(verify)
        except DamagedFileError as error:
            return error
        return None

    def _committed(self, rows: int) -> list[str]:
        """The files (relative paths) that ``rows`` committed levels stand on."""
        if rows == 0:
            return []
        return list(_RUN_FILES) + [f"checkpoints/level_{level:02d}/{name}"
                                   for level in range(rows) for name in _LEVEL_FILES]

    def _record_checksums(self, rows: int) -> None:
        """Record the size and sha256 of the committed files not yet recorded, and
        ``rows``. A recorded file is never hashed again: a committed checkpoint does not
        change, so a new hash could only bless damage."""
        manifest = self.checksums()
        files = manifest["files"]
        for relative in self._committed(rows):
            if relative not in files and self.file(relative).exists():
                files[relative] = _digest(self.file(relative))
        atomic_write_text(self.file(CHECKSUMS),
                          json.dumps({"levels": rows, "files": files}, indent=1))

    def is_locked(self) -> bool:
        """Whether a process holds the run (probed with a shared lock, which a rival's
        :meth:`lock` waits out)."""
        try:
            handle = open(self.file(".lock"), "r")
        except FileNotFoundError:
            return False
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
        return False

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the run for this process; a second process gets :class:`RunBusyError`, one
        line naming the holder. Holding it, remove what a killed holder left: temporary
        files, and checksums not yet recorded (see :meth:`append_level`)."""
        try:
            handle = open(self.file(".lock"), "a+")
        except FileNotFoundError:
            raise FileNotFoundError(errno.ENOENT, "no such run (removed?)", str(self.path)) \
                from None
        with handle:
            deadline = time.monotonic() + _LOCK_PATIENCE
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        handle.seek(0)
                        holder = handle.read().split()
                        by = f" (pid {holder[0]} on {holder[1]})" if len(holder) == 2 else ""
                        raise RunBusyError(f"run {self.name} is being computed by another "
                                           f"process{by}; wait for it or stop it") from None
                    time.sleep(0.05)
            try:
                try:
                    current = os.stat(self.file(".lock")).st_ino
                except FileNotFoundError:
                    current = None
                if current != os.fstat(handle.fileno()).st_ino:
                    raise RunBusyError(f"run {self.name} was removed while this process "
                                       "waited for it")
                handle.seek(0)
                handle.truncate()
                handle.write(f"{os.getpid()} {platform.node()}\n")
                handle.flush()
                self._tidy()
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _tidy(self) -> None:
        """What a killed holder left: its temporary files, the checksums of its last level,
        and, killed after the last level's row, that level's mid-level checkpoint."""
        for leftover in self.path.rglob(".*.tmp"):
            with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                leftover.unlink()
        with contextlib.suppress(DamagedFileError):  # a damaged run is left as it is
            if self.config is not None:
                rows, recorded = self.levels_done(), self.checksums()["levels"]
                # a run stored before checksums.json, or a kill between a row and its
                # checksums (more rows than that is damage: check() names it)
                if rows and (recorded is None or rows == recorded + 1):
                    self._record_checksums(rows)
                if self.is_finished():
                    self.file("progress.pt").unlink(missing_ok=True)

    def _settle(self) -> None:
        """Tidy a finished run that a kill after its last row left untidy (see
        :meth:`_tidy`): nothing else would lock it again. Skipped while another process
        holds it, and on a store this process cannot write."""
        if not self.is_finished():
            return
        if not self.file("progress.pt").exists() and \
                self.checksums()["levels"] in (None, self.levels_done()):
            return
        with contextlib.suppress(RunBusyError, OSError):
            with self.lock():
                pass

    def status(self, verify: bool = False) -> str:
        """``running``, ``damaged``, ``finished``, ``partial`` (some levels or a mid-level
        checkpoint) or ``new``."""
        if self.is_locked():
            return "running"
        return "damaged" if self.problem(verify) is not None else self._progress()

    def _progress(self) -> str:
        """``finished``, ``partial`` or ``new``, for a run known not to be damaged."""
        if self.is_finished():
            return "finished"
        return "partial" if self.levels_done() or self.file("progress.pt").exists() else "new"


def read_config(folder: Path) -> ExperimentConfig:
    """The config stored in ``folder``; :class:`DamagedFileError` naming ``config.json`` if
    it is missing, unreadable or not a valid config."""
    path = Path(folder) / "config.json"
    if not path.exists():
        raise DamagedFileError(path, "missing: the folder is not a whole run")
    values = _read_json(path, dict)
    try:
        return ExperimentConfig.from_dict(values)
    except ConfigError as error:
        raise DamagedFileError(path, f"not a valid config ({error})") from None


def _read_json(path: Path, kind: type):
    try:
        value = json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        where = f"line {error.lineno}" if isinstance(error, json.JSONDecodeError) else "bytes"
        raise DamagedFileError(path, f"truncated or corrupted: not JSON ({where})") from None
    if not isinstance(value, kind):
        raise DamagedFileError(path, f"corrupted: holds a {type(value).__name__}, not a "
                               f"{kind.__name__}")
    return value


def _check_levels_text(path: Path, text: str) -> int:
    """The number of rows of a whole ``levels.csv``; :class:`DamagedFileError` naming the
    first line that shows it is not whole (``to_csv`` ends every line, numbers every
    measured column, and the levels count up from 0)."""
    if not text.endswith("\n"):
        raise DamagedFileError(path, "truncated: its last line is incomplete")
    try:
        header, *rows = list(csv.reader(io.StringIO(text)))
    except (csv.Error, ValueError) as error:
        raise DamagedFileError(path, f"corrupted: {error}") from None
    if "level" not in header:
        raise DamagedFileError(path, "corrupted: its header has no level column")
    numeric = [k for k, column in enumerate(header) if column in LEVEL_COLUMNS]
    for number, row in enumerate(rows):
        line = number + 2
        if len(row) != len(header):
            raise DamagedFileError(path, f"corrupted: line {line} has {len(row)} fields, its "
                                   f"header {len(header)}")
        for k in numeric:
            try:
                value = float(row[k]) if row[k] else float("nan")
            except ValueError:
                raise DamagedFileError(path, f"corrupted: line {line}: {header[k]} "
                                       f"{row[k][:20]!r} is not a number") from None
            if header[k] == "level" and value != number:
                raise DamagedFileError(path, f"corrupted: line {line} holds level {row[k]!r}, "
                                       f"expected {number}")
    return len(rows)


def _digest(path: Path) -> dict:
    """``{"bytes": size, "sha256": hex}`` of a file, read in chunks."""
    sha, size = hashlib.sha256(), 0
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            sha.update(chunk)
            size += len(chunk)
    return {"bytes": size, "sha256": sha.hexdigest()}


# ---------------------------------------------------------------------------- listing
STATUSES = ("new", "partial", "finished", "running", "damaged")
# what `sddlib ls --status` and `clean` accept: a status, or a name for several
STATUS_FILTERS = {**{status: (status,) for status in STATUSES}, "unfinished": ("new", "partial")}


@dataclasses.dataclass
class Listed:
    """One folder of the store as ``sddlib ls`` shows it; ``problem`` names the damage."""
    run: Run
    status: str
    problem: Optional[DamagedFileError] = None

    @property
    def name(self) -> str:
        return self.run.name

    def levels(self) -> str:
        """``done/wanted``, or ``?`` where damage hides them."""
        config = self.run.config
        try:
            done = str(self.run.levels_done())
        except DamagedFileError:
            done = "?"
        return f"{done}/{'?' if config is None else mode_of(config).levels(config) + 1}"


def parse_status_filter(values: list[str]) -> set[str]:
    """The statuses ``--status`` values name (each a status or ``unfinished``, commas
    allowed); a one-line :class:`ConfigError` for an unknown one."""
    wanted: set[str] = set()
    for value in values:
        for name in filter(None, (part.strip() for part in value.split(","))):
            if name not in STATUS_FILTERS:
                raise ConfigError(f"--status: {name!r} is not allowed; allowed: "
                                  f"{', '.join(STATUS_FILTERS)}")
            wanted.update(STATUS_FILTERS[name])
    return wanted


def parse_config_filter(assignments: list[str]) -> dict[str, Any]:
    """``key=value`` filters (the ``--set`` grammar, :func:`config.parse_assignments`) as
    config values, each checked as the config checks it (type, allowed values); a
    one-line :class:`ConfigError` naming the key otherwise."""
    values = parse_assignments([key.strip().replace("-", "_") + equals + value for key, equals,
                                value in (text.partition("=") for text in assignments)],
                               flag="--set")
    return {key: checked_value(key, value) for key, value in values.items()}


def selected(listed: Listed, statuses: set[str], where: dict[str, Any]) -> bool:
    """Whether ``listed`` has one of ``statuses`` (any if empty) and every ``where`` value
    (a run whose config cannot be read has none)."""
    if statuses and listed.status not in statuses:
        return False
    config = listed.run.config
    return not where or (config is not None and
                         all(getattr(config, key) == value for key, value in where.items()))


# ---------------------------------------------------------------------------- the store
class RunStore:
    def __init__(self, root: Path | str):
        self.root = Path(root)

    def path_for(self, config: ExperimentConfig) -> Path:
        return self.root / config.run_name()

    def find(self, config: ExperimentConfig) -> Optional[Run]:
        """The stored run of ``config``, or None; :class:`DamagedFileError` if it is damaged
        (:meth:`Run.check`, its ``progress.pt`` aside; not while another process computes
        it). A run stored under the first identity (before version 2) is moved to its
        current name here, once (:meth:`_migrate`)."""
        path = self.path_for(config)
        if not path.joinpath("config.json").exists():
            legacy = self._renamed_folder(config) or self._legacy_folder(config)
            run = None if legacy is None else self._migrate(legacy, path, config)
        else:
            run = self._checked(path, config)
        if run is not None:
            try:
                run.check(progress=False)
            except DamagedFileError:
                if not run.is_locked():
                    raise
            else:
                run._settle()
        return run

    def _renamed_folder(self, config: ExperimentConfig) -> Optional[Path]:
        """The folder of a run of ``config`` stored under its current identity but an
        older readable name (the readable name has grown to show more settings): same
        hash, and the stored config has ``config``'s identity."""
        for folder in sorted(self.root.glob(f"*-{config.short_hash()}")):
            if folder.name.startswith(".") or not folder.joinpath("config.json").exists():
                continue
            try:
                stored = read_config(folder)
            except DamagedFileError:
                continue
            if stored.identity() == config.identity():
                return folder
        return None

    def _legacy_folder(self, config: ExperimentConfig) -> Optional[Path]:
        """The folder of a run of ``config``'s experiment stored under the first identity.

        That identity hashed settings that do nothing (``momentum`` under Adam, ...), so
        the run may be stored under another config's old name: every folder of the old
        readable name is a candidate, and the one whose stored config has ``config``'s
        current identity is it (the exact old name is tried first).
        """
        exact = self.root / config.legacy_run_name()
        prefix = exact.name[: -len(config.short_hash())]
        candidates = [exact] + sorted(p for p in self.root.glob(f"{prefix}*") if p != exact)
        for folder in candidates:
            if len(folder.name) != len(exact.name) or not folder.joinpath("config.json").exists():
                continue
            try:
                stored = read_config(folder)
            except DamagedFileError:
                continue
            if folder.name == stored.legacy_run_name() and \
                    stored.identity() == config.identity():
                return folder
        return None

    def _migrate(self, old: Path, new: Path, config: ExperimentConfig) -> Run:
        """Move a run from its first-identity folder to its current one: ``meta.json`` notes
        where it came from, then the folder is renamed (atomic on one filesystem), so a
        process killed between the two leaves the run whole under one of its names."""
        run = Run(old, config)
        with run.lock():  # refuses while another process computes it under the old name
            meta = run.meta()
            meta.update(identity_version=IDENTITY_VERSION, renamed_from=old.name)
            atomic_write_text(old / "meta.json", json.dumps(meta, indent=2))
            try:
                os.rename(old, new)
            except OSError:
                if not new.joinpath("config.json").exists():  # not a rival's rename
                    raise
        return self._checked(new, config)

    def create(self, config: ExperimentConfig, device: str,
               extra: Optional[dict] = None) -> Run:
        """The run for ``config``, its folder and description written if new.

        A new folder appears whole: ``meta.json`` and ``config.json`` are written into a
        hidden folder beside it, which is then renamed (a rival's rename, first, wins).
        ``extra`` goes into ``meta.json`` beside the environment (the experiment records
        the resolved ``precision`` and ``compile`` settings there).
        """
        path = self.path_for(config)
        if path.joinpath("config.json").exists():
            return self._checked(path, config)
        self.root.mkdir(parents=True, exist_ok=True)
        staging = self.root / f".{path.name}.{secrets.token_hex(4)}.creating"
        staging.mkdir()
        try:
            atomic_write_text(staging / "meta.json",
                              json.dumps({**environment(device), **(extra or {}),
                                          "identity_version": IDENTITY_VERSION}, indent=2))
            atomic_write_text(staging / "config.json", json.dumps(config.to_dict(), indent=2))
            try:
                os.rename(staging, path)
            except OSError:
                if not path.joinpath("config.json").exists():
                    raise DamagedFileError(path / "config.json", "missing: the folder is not "
                                           "a whole run; `sddlib clean --damaged` removes it") \
                        from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return self._checked(path, config)

    def folders(self) -> list[Path]:
        """Every run folder, whole or damaged (hidden folders are a process's work)."""
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))

    def runs(self) -> list[Run]:
        """The runs whose config can be read (:meth:`listing` shows the others)."""
        found = []
        for folder in self.folders():
            try:
                found.append(Run(folder, read_config(folder)))
            except DamagedFileError:
                continue
        return found

    def listing(self, verify: bool = False) -> list[Listed]:
        """Every folder with its status and, if damaged, the problem (never raises for a
        damaged run: that is what this is for)."""
        listed = []
        for folder in self.folders():
            try:
                run = Run(folder, read_config(folder))
            except DamagedFileError as error:
                listed.append(Listed(Run(folder, None), "damaged", error))
                continue
            if run.is_locked():
                listed.append(Listed(run, "running"))
                continue
            problem = run.problem(verify)
            listed.append(Listed(run, "damaged", problem) if problem is not None else
                          Listed(run, run._progress()))
        return listed

    def get(self, name: str) -> Run:
        """A run by folder name, by unique prefix, or by its hash; a ``KeyError`` whose one
        line lists the candidates otherwise, :class:`DamagedFileError` if its config cannot
        be read."""
        if not name.strip():
            raise KeyError("run: give a run's folder name, a unique prefix of it or its hash "
                           "(`sddlib ls` lists them)")
        folders = self.folders()
        exact = [f for f in folders if f.name == name]
        matches = exact or [f for f in folders if f.name.startswith(name) or
                            f.name.endswith(name)]
        if len(matches) == 1:
            return Run(matches[0], read_config(matches[0]))

        def shown(found: list[Path]) -> str:
            return ", ".join(f.name for f in found[:10]) + (", ..." if len(found) > 10 else "")
        if not matches:
            raise KeyError(f"run: no run named {name!r} in {self.root}; allowed: "
                           f"{shown(folders) if folders else 'none (the store is empty)'}")
        raise KeyError(f"run: {name!r} matches {len(matches)} runs: {shown(matches)}; give "
                       "more of the name")

    def load(self, finished_only: bool = False) -> pd.DataFrame:
        """All runs' levels as one tidy DataFrame: one row per (run, level), config columns.
        A damaged run is left out with a one-line warning on stderr naming its file."""
        runs = []
        for run in self.runs():
            try:
                run.check(progress=False)
                if run.is_finished() or not finished_only:
                    runs.append(run)
            except DamagedFileError as error:
                print(f"sddlib: skipping damaged run {run.name}: {error}", file=sys.stderr)
        return table(runs)

    def remove(self, listed: Listed, statuses: set[str]) -> str:
        """Remove ``listed``'s run if, under its lock, its status is still one of
        ``statuses``; what was done, in words. A run whose only damage is its mid-level
        checkpoint loses just that file. The folder is renamed to a hidden name first, so
        a process killed while deleting leaves no half run behind."""
        run = listed.run
        with run.lock():  # RunBusyError while a process computes it
            problem = run.problem() if run.config is not None else listed.problem
            status = "damaged" if problem is not None else run._progress()
            if status not in statuses:
                return f"kept {run.name}: it is {status} now"
            if problem is not None and problem.path == run.file("progress.pt"):
                run.file("progress.pt").unlink()
                return f"removed {problem.path} (damaged mid-level checkpoint; the run keeps " \
                       f"its {run.levels_done()} levels)"
            grave = self.root / f".{run.name}.{secrets.token_hex(4)}.removing"
            os.rename(run.path, grave)
        shutil.rmtree(grave)
        return f"removed {run.name} ({status})"

    def tidy(self, older_than: float = 60.0) -> list[Path]:
        """Remove the hidden folders that killed processes left in the store root while
        creating or removing a run (younger ones may be at work now); the ones removed."""
        removed = []
        if not self.root.is_dir():
            return removed
        for path in self.root.iterdir():
            if path.name.startswith(".") and path.name.endswith((".creating", ".removing")) \
                    and time.time() - path.stat().st_mtime > older_than:
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
        return removed

    def _checked(self, path: Path, config: ExperimentConfig) -> Run:
        stored = read_config(path)
        if stored.identity() != config.identity():
            raise RuntimeError(f"{path} holds a run with a different config (hash collision); "
                               "refusing to touch it")
        return Run(path, config)


def table(runs: list[Run]) -> pd.DataFrame:
    """The levels of ``runs`` as one tidy DataFrame, each row with its run's config."""
    frames = []
    for run in runs:
        levels = run.levels()
        if levels.empty:
            continue
        for key, value in run.config.to_dict().items():
            levels[key] = str(value) if isinstance(value, (list, dict)) else value
        levels["run"] = run.name
        frames.append(levels)
    if not frames:
        return pd.DataFrame(columns=["run", *LEVEL_COLUMNS])
    return pd.concat(frames, ignore_index=True)


def environment(device: str) -> dict:
    """Versions, code revision and machine, stored beside every run."""
    from importlib import metadata

    versions = {}
    for package in ("sddlib", "torch", "torchvision", "numpy", "pandas", "mnist1d", "mlxtend",
                    "scikit-learn"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    meta = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": platform.node(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
        "code_revision": code_revision(),
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "process": multiprocessing.current_process().name,  # SweepWorker-N in a worker process
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        meta["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return meta


def code_revision() -> Optional[str]:
    """The git commit of the sddlib source, with ``+dirty`` if it has uncommitted changes."""
    source = Path(__file__).resolve().parents[1]  # the sddlib package, every subpackage
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=source, capture_output=True,
                              text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "."], cwd=source,
                               capture_output=True, text=True, timeout=10)
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None
