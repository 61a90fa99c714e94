"""Analysis results kept beside what they were computed from, and reused.

The book's analysis pages compute more than they train: loss landscapes, Hessian spectra
and re-dense paths from a run's checkpoints, the theory page's simulations. Executing a
page again (other figure parameters, a changed text) must not compute them again. A
result is stored in ``<folder>/analysis/<name>-<key>.pkl``: beside the run it comes from
(``folder`` = the run's folder), or in the run store's ``.analysis`` folder for results
that come from no run (the theory page's simulations). The key is a hash of

- ``arguments``: everything the result depends on that can vary (levels, alphas, seeds,
  batch counts, ...), as JSON;
- the source code of the ``code`` modules that compute it, so a change to how it is
  computed is never answered with an old result; and :data:`VERSION`.

Files are written atomically; one that cannot be read is computed again and replaced.
Nothing here is specific to a result's type beyond being picklable (pandas frames,
tuples of frames). Written here rather than taken from a caching library (joblib's
``Memory`` keys on a function's own code only, not the helpers it calls, and keeps its
files in one global folder rather than beside the run they belong to).
"""
from __future__ import annotations

import hashlib
import inspect
import json
import pickle
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterable

from sddlib.base.files import atomic_write_bytes

VERSION = 1
FOLDER = "analysis"


def key(arguments: dict, code: Iterable[ModuleType] = ()) -> str:
    """The hash a result of ``arguments`` computed by the ``code`` modules is stored under."""
    digest = hashlib.sha256()
    digest.update(f"v{VERSION}".encode())
    digest.update(json.dumps(arguments, sort_keys=True, default=repr).encode())
    for module in code:
        digest.update(module.__name__.encode())
        digest.update(inspect.getsource(module).encode())
    return digest.hexdigest()[:20]


def cached(folder: Path | str, name: str, arguments: dict, compute: Callable[[], Any],
           code: Iterable[ModuleType] = (), enabled: bool = True) -> Any:
    """``compute()``, or the result stored for the same ``name``, ``arguments`` and code.

    ``enabled=False`` computes and stores without reading (to measure, or to refresh).
    """
    path = Path(folder) / FOLDER / f"{name}-{key(arguments, code)}.pkl"
    if enabled and path.is_file():
        try:
            return pickle.loads(path.read_bytes())
        except (OSError, EOFError, pickle.UnpicklingError, AttributeError, ImportError,
                IndexError, ValueError):
            pass  # unreadable (cut short, or from other library versions): compute again
    result = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL))
    return result
