"""The run store: one folder per run, found again by its config, never overwritten.

A run's folder is ``<runs_dir>/<readable name>-<hash>``, e.g.
``mnist-5k-mlp-300x100-random20-magnitude-lottery-seed0-3f9c2a1b7e``: readable for
people, the hash of :meth:`ExperimentConfig.identity` for the machine. The index of all runs is made by
scanning the folders' ``config.json`` (``sddlib ls``), so it can never go stale, even with
several machines writing to one shared store.

A run folder holds::

    config.json        the full config it was started with
    meta.json          versions, code revision, device, host, start time
    levels.csv         one row per finished level (the results)
    label_noise.npz    which training samples got which noisy label
    checkpoints/init.pt, rewind.pt, level_XX/mask.pt, level_XX/final.pt
    progress.pt        the newest mid-level checkpoint (deleted when its level is done)
    .lock              held (flock) by the process computing the run

Every file is written atomically (a temporary file in the same folder, flushed, then
``os.replace``), so a process killed at any moment leaves either the old file or the
new one. A level's row is appended only after its final weights are on disk, and a level
with a row is never computed again.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import multiprocessing
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Iterator, Optional

import pandas as pd
import torch

from .config import IDENTITY_VERSION, ConfigError, ExperimentConfig
from .files import (atomic_save_torch, atomic_write_bytes, atomic_write_text,  # noqa: F401
                    load_torch)  # re-exported: a store is read with them
from .retrain import mode_of

LEVEL_COLUMNS = ["level", "sparsity", "remaining_weights", "train_acc", "train_acc_clean",
                 "train_acc_corrupted", "train_loss", "test_acc", "test_loss",
                 "learning_distance", "seconds"]


class RunBusyError(RuntimeError):
    pass


# ---------------------------------------------------------------------------- one run
class Run:
    def __init__(self, path: Path, config: ExperimentConfig):
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
        path = self.file("levels.csv")
        if not path.exists():
            return pd.DataFrame(columns=LEVEL_COLUMNS)
        return pd.read_csv(path)

    def levels_done(self) -> int:
        return len(self.levels())

    def is_finished(self, levels: Optional[int] = None) -> bool:
        """Whether the run has every level its config asks for (a re-dense branch: one)."""
        wanted = mode_of(self.config).levels(self.config) if levels is None else levels
        return self.levels_done() >= wanted + 1

    def append_level(self, row: dict) -> None:
        table = self.levels()
        if row["level"] != len(table):
            raise RuntimeError(f"{self.name}: level {row['level']} after {len(table)} rows")
        table = pd.concat([table, pd.DataFrame([row])[table.columns.union(row.keys(),
                                                                          sort=False)]],
                          ignore_index=True)
        atomic_write_text(self.file("levels.csv"), table.to_csv(index=False))

    def meta(self) -> dict:
        path = self.file("meta.json")
        return json.loads(path.read_text()) if path.exists() else {}

    def is_locked(self) -> bool:
        lock_path = self.file(".lock")
        if not lock_path.exists():
            return False
        with open(lock_path, "a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
        return False

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the run for this process; a second process gets a clear error."""
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.file(".lock"), "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RunBusyError(f"run {self.name} is being computed by another process; "
                                   "wait for it or stop it") from None
            handle.seek(0)
            handle.truncate()
            handle.write(f"{os.getpid()} {platform.node()}\n")
            handle.flush()
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def status(self) -> str:
        if self.is_locked():
            return "running"
        if self.is_finished():
            return "finished"
        return "partial" if self.levels_done() or self.file("progress.pt").exists() else "new"


# ---------------------------------------------------------------------------- the store
class RunStore:
    def __init__(self, root: Path | str):
        self.root = Path(root)

    def path_for(self, config: ExperimentConfig) -> Path:
        return self.root / config.run_name()

    def find(self, config: ExperimentConfig) -> Optional[Run]:
        """The stored run of ``config``, or None. A run stored under the first identity
        (before version 2) is moved to its current name here, once (:meth:`_migrate`)."""
        path = self.path_for(config)
        if not path.joinpath("config.json").exists():
            legacy = self._legacy_folder(config)
            return None if legacy is None else self._migrate(legacy, path, config)
        return self._checked(path, config)

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
                stored = ExperimentConfig.from_dict(
                    json.loads(folder.joinpath("config.json").read_text()))
            except (ConfigError, json.JSONDecodeError):
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

        ``extra`` goes into ``meta.json`` beside the environment (the experiment records
        the resolved ``precision`` and ``compile`` settings there).
        """
        path = self.path_for(config)
        if path.joinpath("config.json").exists():
            return self._checked(path, config)
        path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path / "meta.json",
                          json.dumps({**environment(device), **(extra or {}),
                                      "identity_version": IDENTITY_VERSION}, indent=2))
        atomic_write_text(path / "config.json", json.dumps(config.to_dict(), indent=2))
        return Run(path, config)

    def runs(self) -> list[Run]:
        found = []
        if not self.root.exists():
            return found
        for config_path in sorted(self.root.glob("*/config.json")):
            try:
                config = ExperimentConfig.from_dict(json.loads(config_path.read_text()))
            except (ConfigError, json.JSONDecodeError):
                continue
            found.append(Run(config_path.parent, config))
        return found

    def get(self, name: str) -> Run:
        """A run by folder name, by unique prefix, or by its hash; a ``KeyError`` whose one
        line lists the candidates otherwise."""
        if not name.strip():
            raise KeyError("run: give a run's folder name, a unique prefix of it or its hash "
                           "(`sddlib ls` lists them)")
        runs = self.runs()
        exact = [r for r in runs if r.name == name]
        matches = exact or [r for r in runs if r.name.startswith(name) or
                            r.name.endswith(name)]
        if len(matches) == 1:
            return matches[0]

        def shown(found: list[Run]) -> str:
            return ", ".join(r.name for r in found[:10]) + (", ..." if len(found) > 10 else "")
        if not matches:
            raise KeyError(f"run: no run named {name!r} in {self.root}; allowed: "
                           f"{shown(runs) if runs else 'none (the store is empty)'}")
        raise KeyError(f"run: {name!r} matches {len(matches)} runs: {shown(matches)}; give "
                       "more of the name")

    def load(self, finished_only: bool = False) -> pd.DataFrame:
        """All runs' levels as one tidy DataFrame: one row per (run, level), config columns."""
        runs = [r for r in self.runs() if r.is_finished() or not finished_only]
        return table(runs)

    def _checked(self, path: Path, config: ExperimentConfig) -> Run:
        stored = ExperimentConfig.from_dict(json.loads(path.joinpath("config.json").read_text()))
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
            levels[key] = str(value) if isinstance(value, list) else value
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
        "process": multiprocessing.current_process().name,  # SpawnPoolWorker-N in a pool
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        meta["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return meta


def code_revision() -> Optional[str]:
    """The git commit of the sddlib source, with ``+dirty`` if it has uncommitted changes."""
    source = Path(__file__).resolve().parent
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
