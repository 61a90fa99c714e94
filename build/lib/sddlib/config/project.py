"""Where this project keeps things: the root ``_config.yml``.

The file sits at the repository root. Its ``sddlib`` section says where the run store and
the dataset cache live (relative paths are taken from the file's folder); its
``profiles`` section says which notebooks make which figures with which parameters.
Commands look for it in the current folder and its parents; without one, the store is
``./data/runs`` and the cache ``./data/datasets``. The environment variable
``SDDLIB_RUNS_DIR`` overrides the store's location (``sddlib figures --runs-dir`` uses it to
reach the notebooks' kernels).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import yaml

CONFIG_NAME = "_config.yml"


@dataclass
class ProjectSettings:
    root: Path
    runs_dir: Path
    data_dir: Path
    profiles: dict = field(default_factory=dict)
    config_path: Optional[Path] = None


def find_config(start: Optional[Path] = None) -> Optional[Path]:
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / CONFIG_NAME
        if candidate.is_file():
            content = yaml.safe_load(candidate.read_text()) or {}
            if isinstance(content, dict) and "sddlib" in content:
                return candidate
    return None


def load_settings(start: Optional[Path] = None) -> ProjectSettings:
    settings = _settings_from_file(start)
    if os.environ.get("SDDLIB_RUNS_DIR"):
        settings.runs_dir = Path(os.environ["SDDLIB_RUNS_DIR"]).resolve()
    return settings


def _settings_from_file(start: Optional[Path]) -> ProjectSettings:
    path = find_config(start)
    if path is None:
        root = Path(start or Path.cwd()).resolve()
        return ProjectSettings(root, root / "data" / "runs", root / "data" / "datasets")
    content = yaml.safe_load(path.read_text())
    section = content.get("sddlib") or {}
    root = path.parent
    return ProjectSettings(
        root=root,
        runs_dir=(root / section.get("runs_dir", "data/runs")).resolve(),
        data_dir=(root / section.get("data_dir", "data/datasets")).resolve(),
        profiles=content.get("profiles") or {},
        config_path=path,
    )
