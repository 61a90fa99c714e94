"""Where the plan's tasks train on this machine: in this process, or in worker processes.

Both take a task (:class:`sddlib.scheduling.plan.Task`: one run, or a group trained as one
stacked ensemble) and train it with :func:`sddlib.scheduling.groups.train_group`; the Ray
backend, for a cluster, is :mod:`sddlib.scheduling.distributed`. A backend has
``capacity`` (tasks at once), ``describe()``, ``start(task)``, ``wait(timeout)`` (the
:class:`~sddlib.scheduling.plan.Outcome` of each task that ended) and ``close()``.
"""
from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
from multiprocessing import connection
from typing import Optional

import torch

from sddlib.config.fields import ExperimentConfig
from sddlib.scheduling.groups import train_group
from sddlib.scheduling.plan import Outcome, Task, portable, reason
from sddlib.storage.store import RunStore


class InProcess:
    """One task at a time in this process (a task that raises fails alone)."""

    capacity = 1

    def __init__(self, store: RunStore, options: dict):
        self.store, self.options, self.task = store, options, None

    def describe(self) -> str:
        return "this process"

    def start(self, task: Task) -> None:
        self.task = task

    def wait(self, timeout: float) -> list[Outcome]:
        task, self.task = self.task, None
        try:
            train_group(task.configs, self.store, self.options)
        except Exception as error:
            return [Outcome(task.name, "failed", reason(error), error)]
        return [Outcome(task.name, "done")]

    def close(self) -> None:
        pass


class LocalPool:
    """``count`` spawned worker processes on this machine, one run each at a time.

    Each worker has its own pipe and is watched by its process sentinel, so a worker that
    dies (killed, out of memory) is known with the run it held: that run is reported lost
    (the scheduler starts it again; it resumes from its checkpoint, the store being this
    machine's) and a new worker takes the dead one's place. On a machine with GPUs, worker
    ``k`` sees only GPU ``k mod GPUs`` (``CUDA_VISIBLE_DEVICES``), so one per GPU by default
    and several small runs per GPU when ``count`` is larger.
    """

    def __init__(self, count: int, store: RunStore, options: dict):
        self.store, self.options = store, options
        self.context = multiprocessing.get_context("spawn")
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        self.slots = [_Slot(k, k % gpus if gpus else None) for k in range(count)]
        self.capacity = count

    def describe(self) -> str:
        return f"{self.capacity} processes"

    def start(self, task: Task) -> None:
        slot = next(slot for slot in self.slots if slot.task is None)
        message = (task.name, [portable(c).to_dict() for c in task.configs], str(self.store.root),
                   self.options)
        if slot.process is not None and slot.process.is_alive():
            try:
                slot.conn.send(message)
                slot.task = task
                return
            except OSError:  # it died since it last answered
                slot.process.join()
        slot.launch(self.context)
        slot.conn.send(message)
        slot.task = task

    def wait(self, timeout: float) -> list[Outcome]:
        busy = [slot for slot in self.slots if slot.task is not None]
        connection.wait([slot.conn for slot in busy] + [slot.process.sentinel for slot in busy],
                        timeout)
        outcomes = []
        for slot in busy:
            message = None
            try:
                if slot.conn.poll():
                    message = slot.conn.recv()
            except (EOFError, OSError):
                message = None
            if message is not None:
                name, failure, error = message
                outcomes.append(Outcome(name, "failed", failure, _unpickled(error)) if failure
                                else Outcome(name, "done"))
                slot.task = None
            elif not slot.process.is_alive():
                slot.process.join()
                outcomes.append(Outcome(slot.task.name, "lost",
                                        f"its worker process died ({_exit(slot.process)})"))
                slot.task = None
                slot.process = None
        return outcomes

    def close(self) -> None:
        """Stop the workers: idle ones are told to end; busy ones (an interrupted sweep)
        are terminated, and their runs keep their last checkpoints."""
        for slot in self.slots:
            if slot.process is None:
                continue
            if slot.task is None and slot.process.is_alive():
                try:
                    slot.conn.send(None)
                except OSError:
                    pass
            else:
                slot.process.terminate()
        for slot in self.slots:
            if slot.process is not None:
                slot.process.join(timeout=30)
                if slot.process.is_alive():
                    slot.process.kill()
                    slot.process.join()


class _Slot:
    """One worker process of a :class:`LocalPool`, its pipe and the run it holds."""

    def __init__(self, index: int, gpu: Optional[int]):
        self.index, self.gpu = index, gpu
        self.process = self.conn = None
        self.task: Optional[Task] = None

    def launch(self, context) -> None:
        parent, child = context.Pipe()
        self.conn = parent
        self.process = context.Process(target=_serve, args=(child, self.gpu), daemon=True,
                                       name=f"SweepWorker-{self.index}")
        self.process.start()
        child.close()


def _serve(conn, gpu: Optional[int]) -> None:
    """A worker process: train run after run until told to stop (None)."""
    # Ctrl-C is the driver's to handle: it terminates the workers, whose runs keep their
    # checkpoints, instead of every worker printing its own traceback
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if gpu is not None:  # before anything initialises CUDA in this process
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    try:
        while (message := conn.recv()) is not None:
            name, configs, root, options = message
            try:
                train_group([ExperimentConfig.from_dict(c) for c in configs], RunStore(root),
                            options)
                outcome = error = None
            except Exception as raised:
                outcome, error = reason(raised), _pickled(raised)
            conn.send((name, outcome, error))
    except (EOFError, OSError):  # the driver is gone: nobody to report to
        return


def _exit(process) -> str:
    code = process.exitcode
    if code is not None and code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


def _pickled(error: BaseException) -> Optional[bytes]:
    """A worker's exception as bytes for the driver (None if it cannot be pickled: then only
    its one-line reason goes back)."""
    try:
        return pickle.dumps(error)
    except Exception:
        return None


def _unpickled(data: Optional[bytes]) -> Optional[BaseException]:
    try:
        return pickle.loads(data) if data is not None else None
    except Exception:
        return None
