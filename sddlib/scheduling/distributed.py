"""Runs as Ray tasks on a cluster, their results brought home to the driver's run store.

:func:`sddlib.scheduling.executor.run_all` with ``ray=ADDRESS``
(``sddlib sweep GRID.yml --ray auto``) makes each run a Ray task that asks for what it needs
(:func:`resources`): on a cluster with GPUs a fraction of one for small models
(:data:`SMALL_RUN_GPU_SHARE`, so several small runs share a GPU) and a whole GPU otherwise; on CPUs
one core for small models. Ray is an optional extra (``pip install 'sddlib[ray]'``) and is imported
only here, only when a sweep asks for it.

Where results go. A run must end up in the driver's store, whether or not the worker's
machine sees that folder (Ray Tune needs storage shared by every node; plain tasks can
return bytes). The driver writes a token file into the store's root; a task that finds
the token there (and may write the folder) computes the run into the store directly, where
a retried task resumes from the run's last checkpoint. Otherwise the task computes it into
a temporary store of its own, with the runs it needs (a reinit run's lottery run, a
re-dense branch's parent) shipped to it as bytes (unless every run so far came back
through the shared store: then a worker that lacks them computes them itself), and returns the
finished run folder as an uncompressed tar; the driver unpacks it into a temporary folder inside the
store's root and renames it into place (:func:`install`), refusing to replace a finished run. So no
run is recorded twice or half (a driver killed while unpacking leaves a ``.incoming-*`` folder
in the store's root, which no run reads and which can be deleted). A ResNet-18 run keeps
about 134 MB of weights and masks per level, 4 GB for 31 levels: with the paper profile,
prefer a shared filesystem (NFS), or give Ray's object store room, or it spills to disk.

Faults. A task whose worker process or machine is lost is retried by Ray
(``max_retries``); an exception in the run is not retried. Every machine needs the same
sddlib installed (and the datasets, or ``--download``).
"""
from __future__ import annotations

import io
import os
import shutil
import tarfile
import tempfile
import uuid
from pathlib import Path
from typing import Optional

from sddlib.config.fields import ExperimentConfig
from sddlib.models.architectures import model_spec
from sddlib.pruning.retrain import mode_of
from sddlib.scheduling.groups import train_group
from sddlib.scheduling.plan import Outcome, Task, portable, reason
from sddlib.storage.store import Run, RunBusyError, RunStore

# The GPU fraction a run of a small model (mlp, cnn1d: ``ModelSpec.small``) asks for: such
# a run keeps a GPU far from busy, so four share one.
SMALL_RUN_GPU_SHARE = 0.25
TOKEN_PREFIX = ".sddlib-driver-"


def import_ray():
    """The ``ray`` module, or a one-line error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ValueError("--ray: Ray is not installed; allowed: install the extra "
                         "(pip install 'sddlib[ray]'), or leave out --ray") from None
    return ray


def connect(address: str) -> bool:
    """Connect to Ray at ``address`` (``auto``, ``local`` or ``host:port``); whether this
    call started or connected it (and :meth:`RayBackend.close` should disconnect)."""
    ray = import_ray()
    if ray.is_initialized():  # the caller's own Ray session (a notebook, a test)
        return False
    try:
        if address == "local":
            ray.init(include_dashboard=False)
        else:
            ray.init(address=address)
    except (ConnectionError, ValueError) as error:
        raise ValueError(f"--ray: cannot connect to {address!r} ({error}); allowed: auto (a "
                         "cluster started with ray start --head), local or host:port") from None
    return True


def resources(config: ExperimentConfig, gpus: float, node_cpus: int) -> dict:
    """What a run's task asks Ray for on a cluster with ``gpus`` GPUs in all and at most
    ``node_cpus`` cores on one machine: a GPU share where the run trains on CUDA, else
    CPU cores (one for a small model; a big one uses a whole machine's, see
    :func:`sddlib.engine.threads.run_threads`; ``threads`` if the config sets it)."""
    small = model_spec(config.model).small
    if config.device != "cpu" and gpus > 0:
        return {"num_gpus": SMALL_RUN_GPU_SHARE if small else 1, "num_cpus": 1}
    if config.threads is not None:
        return {"num_gpus": 0, "num_cpus": config.threads}
    return {"num_gpus": 0, "num_cpus": 1 if small else max(1, node_cpus)}


class RayBackend:
    """:func:`sddlib.scheduling.executor.run_all`'s runs as Ray tasks (see the module docstring)."""

    def __init__(self, address: str, store: RunStore, options: dict, retries: int,
                 transport: str = "auto", workers: Optional[int] = None):
        self.ray = import_ray()
        self.started = connect(address)
        self.store, self.options, self.transport = store, options, transport
        self.root = store.root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.token = uuid.uuid4().hex
        self.token_file = self.root / f"{TOKEN_PREFIX}{self.token}"
        self.token_file.write_text(self.token)
        self.gpus = self.ray.cluster_resources().get("GPU", 0)
        self.cpus = int(self.ray.cluster_resources().get("CPU", 0))
        self.node_cpus = int(max([node["Resources"].get("CPU", 1) for node in self.ray.nodes()
                                  if node.get("Alive")] or [1]))
        self.remote = self.ray.remote(compute)
        self.retries = retries
        self.capacity = workers or 1_000_000  # Ray queues tasks until resources are free
        self.refs: dict = {}  # object ref -> its Task
        self.shipped: dict[str, object] = {}  # run name -> object ref of its packed folder
        # how runs came back so far: written into the store (None) or as bytes
        self.came_back = {"store": 0, "bytes": 0}

    def describe(self) -> str:
        return f"Ray, {self.cpus} CPUs" + (f", {self.gpus:g} GPUs" if self.gpus else "")

    def start(self, task: Task) -> None:
        configs = [portable(config) for config in task.configs]  # Ray gives it its own GPU
        names = set(task.names)
        needed = []
        # the runs it needs go with it unless every worker so far wrote into the store
        # (packing a ResNet run takes GBs); a worker that lacks them computes them itself
        ship = self.transport == "bytes" or self.came_back["bytes"] or \
            not self.came_back["store"]
        for config in configs if ship else ():
            for need in mode_of(config).needs(config):
                found = self.store.find(need)
                if found.name in names:
                    continue
                if found.name not in self.shipped:  # packed once, however many runs need it
                    self.shipped[found.name] = self.ray.put(pack(found.path))
                if (found.name, self.shipped[found.name]) not in needed:
                    needed.append((found.name, self.shipped[found.name]))
        ref = self.remote.options(max_retries=self.retries, retry_exceptions=False,
                                  **resources(configs[0], self.gpus, self.node_cpus)).remote(
            [config.to_dict() for config in configs], str(self.root), self.token_file.name,
            self.token, self.options, needed, self.transport)
        self.refs[ref] = task

    def wait(self, timeout: float) -> list[Outcome]:
        ready, _ = self.ray.wait(list(self.refs), num_returns=1, timeout=timeout)
        outcomes = []
        for ref in ready:
            task = self.refs.pop(ref)
            name = task.name
            try:
                data = self.ray.get(ref)
                self.came_back["store" if data is None else "bytes"] += 1
                for config, packed in zip(task.configs, data or ()):
                    install(self.store, config, packed)
                outcomes.append(Outcome(name, "done"))
            except self.ray.exceptions.RayTaskError as error:  # the run raised
                cause = getattr(error, "cause", None)
                outcomes.append(Outcome(name, "failed", reason(cause or error)))
            except self.ray.exceptions.RayError as error:  # its worker or machine was lost
                outcomes.append(Outcome(name, "failed", f"its worker was lost {self.retries + 1} "
                                        f"time(s): {reason(error)}"))
            except (RunBusyError, RuntimeError, OSError, tarfile.TarError) as error:
                outcomes.append(Outcome(name, "failed", f"could not store it: {reason(error)}"))
        return outcomes

    def close(self) -> None:
        for ref in self.refs:  # an interrupted sweep
            self.ray.cancel(ref, force=True)
        self.token_file.unlink(missing_ok=True)
        if self.started:
            self.ray.shutdown()


def compute(configs: list[dict], root: str, token_name: str, token: str, options: dict,
            needed: list, transport: str) -> Optional[list[bytes]]:
    """The Ray task: compute the task's runs (one, or a stacked group) into the driver's
    store if this worker sees it (and return None), else into a store of its own and
    return each run folder as bytes."""
    configs = [ExperimentConfig.from_dict(config) for config in configs]
    if transport == "auto" and sees_store(Path(root), token_name, token):
        train_group(configs, RunStore(root), options)
        return None
    import ray

    with tempfile.TemporaryDirectory(prefix="sddlib-run-") as folder:
        store = RunStore(folder)
        for name, ref in needed:
            unpack(ray.get(ref), Path(folder))
        train_group(configs, store, options)
        return [pack(store.find(config).path) for config in configs]


def sees_store(root: Path, token_name: str, token: str) -> bool:
    """Whether this machine sees the driver's store (its token file) and may write it."""
    try:
        return (root / token_name).read_text() == token and os.access(root, os.W_OK)
    except OSError:
        return False


def pack(folder: Path) -> bytes:
    """A run folder as an uncompressed tar (checkpoints hardly compress), without its lock."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        archive.add(folder, arcname=folder.name,
                    filter=lambda info: None if Path(info.name).name == ".lock" else info)
    return buffer.getvalue()


def unpack(data: bytes, into: Path) -> list[Path]:
    """Extract a packed run folder (or several) into ``into``; the folders made."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r") as archive:
        tops = {Path(member.name).parts[0] for member in archive.getmembers()}
        archive.extractall(into, filter="data")
    return [into / top for top in sorted(tops)]


def install(store: RunStore, config: ExperimentConfig, data: bytes) -> bool:
    """Put a finished run, packed by :func:`pack`, into ``store`` in one rename; False if
    the store already holds it finished (then nothing changes).

    It is unpacked into a temporary folder inside the store's root (same filesystem), its
    config and levels checked, and renamed to its folder; a partial run there (an earlier
    attempt) is moved aside first, unless a process is computing it.
    """
    name = config.run_name()
    store.root.mkdir(parents=True, exist_ok=True)
    incoming = Path(tempfile.mkdtemp(prefix=".incoming-", dir=store.root))
    try:
        folders = unpack(data, incoming)
        if [folder.name for folder in folders] != [name]:
            raise RuntimeError(f"expected run {name}, got {[f.name for f in folders]}")
        arrived = RunStore(incoming).find(config)
        if arrived is None or not arrived.is_finished():
            raise RuntimeError(f"run {name} came back unfinished")
        target = store.root / name
        existing = store.find(config)
        if existing is not None and existing.is_finished():
            return False
        if target.exists():
            if Run(target, config).is_locked():
                raise RunBusyError(f"run {name} is being computed by another process")
            os.rename(target, incoming / ".replaced")
        os.rename(incoming / name, target)  # fails, changing nothing, if a rival got there
        return True
    finally:
        shutil.rmtree(incoming, ignore_errors=True)
