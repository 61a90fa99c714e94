"""Grids of runs (sddlib.scheduling.grid, sddlib.scheduling.distributed, ``sddlib sweep``): the grid
file, the scheduler, worker processes and Ray tasks, and what happens when a worker is killed.

The grid is the example one (examples/grid-smoke.yml: 8 tiny runs, 4 of them reinit runs
that wait for their lottery runs). Its runs are computed once one by one (the reference)
and every other way of computing them must give the same tables, digit for digit. Ray is
started once for the session, in this process, small (2 CPUs, a 150 MB object store); its
tests are skipped where Ray is not installed.
"""
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from sddlib.cli import main
from sddlib.config.fields import ConfigError, ExperimentConfig
from sddlib.scheduling import executor, grid, plan
from sddlib.scheduling.sweep import run_many
from sddlib.storage.store import RunStore

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "examples" / "grid-smoke.yml"


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    return tmp_path_factory.getbasetemp() / "datasets"  # conftest's shared data_dir


@pytest.fixture(scope="module")
def reference(tmp_path_factory, datasets):
    """The smoke grid's runs computed one after another in this process: their tables."""
    root = tmp_path_factory.mktemp("sequential")
    run_many(grid.load_grid(SMOKE), RunStore(root), workers=1, progress=False,
             data_dir=datasets)
    return tables(root)


@pytest.fixture(scope="session")
def ray_session():
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        ray.init(num_cpus=2, object_store_memory=150 * 2**20, include_dashboard=False,
                 log_to_driver=False)
    yield ray
    ray.shutdown()


def tables(root: Path) -> dict:
    """Every run's per-level numbers (without its seconds), by run name."""
    return {run.name: run.levels().drop(columns="seconds") for run in RunStore(root).runs()}


def assert_same_runs(root: Path, reference: dict) -> None:
    found = tables(root)
    assert sorted(found) == sorted(reference)
    for name, table in found.items():
        assert list(table.level) == list(range(len(reference[name]))), name  # once each
        assert table.equals(reference[name]), name


def kill_a_worker_mid_run(root: Path, levels: int, stop: threading.Event, killed: list):
    """Kill (SIGKILL) the process computing a run in ``root`` once it has a finished level
    and not all ``levels``: the pid its ``.lock`` holds, if it is not this process."""
    while not stop.is_set():
        for lock in root.glob("*/.lock"):
            try:
                done = len((lock.parent / "levels.csv").read_text().splitlines()) - 1
                pid = int(lock.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue
            if 1 <= done < levels and pid != os.getpid():
                os.kill(pid, signal.SIGKILL)
                killed.append((lock.parent.name, pid))
                return
        time.sleep(0.005)


def sweep_with_a_kill(root: Path, **how) -> tuple[plan.Summary, tuple[str, int]]:
    configs = grid.load_grid(SMOKE)
    stop, killed = threading.Event(), []
    watcher = threading.Thread(target=kill_a_worker_mid_run,
                               args=(root, configs[0].levels + 1, stop, killed), daemon=True)
    watcher.start()
    try:
        summary = executor.run_all(configs, RunStore(root), progress=False, retries=2, **how)
    finally:
        stop.set()
        watcher.join()
    assert killed, "no worker was caught mid-run"
    return summary, killed[0]


# ---------------------------------------------------------------------------- the grid file
def test_a_grid_is_the_product_of_its_values_on_top_of_its_base():
    configs = grid.load_grid(SMOKE)
    assert len(configs) == 8
    assert {(c.seed, c.noise, c.retrain) for c in configs} == {
        (seed, noise, mode) for seed in (0, 1) for noise in (0.0, 0.2)
        for mode in ("lottery", "reinit")}
    assert all(c.model == "mlp" and c.widths == [32, 32] and c.levels == 3 for c in configs)
    # a key that does nothing for these runs (momentum under Adam) gives each run once
    same = grid.expand_grid({"base": {"optimizer": "adam"}, "grid": {"momentum": [0.5, 0.9]}})
    assert len(same) == 1
    lists = grid.expand_grid({"base": {"model": "mlp"}, "grid": {"widths": [[8], [16, 8]]}})
    assert [c.widths for c in lists] == [[8], [16, 8]]


def test_needed_runs_are_added_and_wait_and_the_biggest_start_first(tmp_path):
    """Scheduling order, with a backend that records what it is asked to start: a reinit
    run's lottery run is added (though not asked for) and starts before it; among runs
    that can start, the biggest (epochs x levels x samples x parameters) first."""
    base = ExperimentConfig(model="mlp", widths=[8], train_size=300, test_size=100,
                            epochs=1, levels=1, device="cpu")
    small, big, reinit = base, base.replace(seed=1, epochs=5), base.replace(seed=2,
                                                                             retrain="reinit")
    tasks, reused = plan.plan([small, big, reinit], RunStore(tmp_path))
    lottery = reinit.lottery_counterpart.run_name()
    assert reused == [] and set(tasks) == {small.run_name(), big.run_name(),
                                           reinit.run_name(), lottery}
    assert tasks[reinit.run_name()].needs == {lottery}
    assert plan.cost(big) == 5 * plan.cost(small)

    class Recorder:
        capacity = 1

        def __init__(self):
            self.started, self.current = [], None

        def describe(self):
            return "recorder"

        def start(self, task):
            self.started.append(task.name)
            self.current = task.name

        def wait(self, timeout):
            return [plan.Outcome(self.current, "done")]

        def close(self):
            pass

    recorder, summary = Recorder(), plan.Summary()
    executor._schedule(tasks, recorder, 2, False, summary)
    assert recorder.started.index(lottery) < recorder.started.index(reinit.run_name())
    assert recorder.started.index(big.run_name()) < recorder.started.index(small.run_name())
    assert sorted(summary.computed) == sorted(tasks) and summary.ok


def test_stacking_is_the_plans_choice_of_tasks_not_another_path(tmp_path):
    """With stack, runs that differ only in seed (and wait for the same runs) are one task
    of the one plan; the reinit runs wait for their lottery runs and stack among
    themselves only; without stack, every run is its own task."""
    base = ExperimentConfig(model="mlp", widths=[8], train_size=300, test_size=100,
                            epochs=1, levels=1, device="cpu")
    seeds = [base.replace(seed=seed) for seed in range(3)]
    reinits = [config.replace(retrain="reinit") for config in seeds]
    tasks, _ = plan.plan(seeds + reinits, RunStore(tmp_path), stack=True)
    by_size = sorted(tasks.values(), key=lambda task: len(task.configs))
    assert [len(task.configs) for task in by_size] == [1, 1, 1, 3]
    lottery = by_size[-1]
    assert lottery.names == [c.run_name() for c in seeds] and not lottery.needs
    assert {task.name for task in by_size[:3]} == {c.run_name() for c in reinits}
    assert all(task.needs == {c.lottery_counterpart.run_name()} for task, c in
               zip(sorted(by_size[:3], key=lambda task: task.name),
                   sorted(reinits, key=lambda c: c.run_name())))
    assert lottery.cost == sum(plan.cost(c) for c in seeds)
    alone, _ = plan.plan(seeds + reinits, RunStore(tmp_path))
    assert sorted(len(task.configs) for task in alone.values()) == [1] * 6


def test_a_distilling_run_waits_for_its_teacher_run(tmp_path):
    """The teacher run is a dependency like a reinit run's lottery run: added if missing,
    and never computed by two workers at once (the student's worker would otherwise
    compute it beside the teacher's own task)."""
    student = ExperimentConfig(model="mlp", widths=[8], train_size=300, test_size=100,
                               epochs=1, levels=1, device="cpu", validation_size=50,
                               distill_from="best-fit")
    tasks, _ = plan.plan([student], RunStore(tmp_path))
    teacher = student.teacher_config.run_name()
    assert set(tasks) == {student.run_name(), teacher}
    assert tasks[student.run_name()].needs == {teacher}


def test_a_lost_run_is_retried_and_a_failed_one_fails_the_runs_that_need_it(tmp_path):
    base = ExperimentConfig(model="mlp", widths=[8], train_size=300, test_size=100,
                            epochs=1, levels=1, device="cpu")
    flaky, broken, needing = base, base.replace(seed=1), base.replace(seed=1, retrain="reinit")
    tasks, _ = plan.plan([flaky, broken, needing], RunStore(tmp_path))

    class Faulty:
        capacity = 2

        def __init__(self):
            self.running, self.lost = [], 0

        def describe(self):
            return "faulty"

        def start(self, task):
            self.running.append(task.name)

        def wait(self, timeout):
            name = self.running.pop(0)
            if name == flaky.run_name() and self.lost < 2:
                self.lost += 1
                return [plan.Outcome(name, "lost", "its worker process died (signal SIGKILL)")]
            if name == broken.run_name():
                return [plan.Outcome(name, "failed", "ValueError: bad")]
            return [plan.Outcome(name, "done")]

        def close(self):
            pass

    summary = plan.Summary()
    executor._schedule(tasks, Faulty(), 2, False, summary)
    assert summary.computed == [flaky.run_name()] and summary.retried == {flaky.run_name(): 2}
    assert summary.failed == {broken.run_name(): "ValueError: bad",
                              needing.run_name(): f"needs {broken.run_name()}, which failed"}
    summary = plan.Summary()
    executor._schedule(plan.plan([flaky], RunStore(tmp_path))[0], Faulty(), 1, False, summary)
    assert summary.failed == {flaky.run_name(): "its worker process died (signal SIGKILL); "
                                                "tried 2 time(s)"}
    assert "failed " + broken.run_name() in plan.Summary(failed={broken.run_name(): "x"}).report()


# ---------------------------------------------------------------------------- computing it
def test_two_local_workers_give_the_sequential_tables_though_one_is_killed(
        tmp_path, reference, datasets):
    """Two worker processes, one killed (SIGKILL) mid-run: the pool notices the dead
    worker, starts its run again in a new one, and the run resumes from its finished
    levels and mid-level checkpoint (one at every epoch); every run ends up stored once,
    with the numbers of the runs computed one by one. A second sweep computes nothing."""
    summary, (name, pid) = sweep_with_a_kill(tmp_path, workers=2, data_dir=datasets,
                                             checkpoint_seconds=0)
    assert summary.ok, summary.report()
    assert summary.retried == {name: 1} and len(summary.computed) == 8
    assert summary.reused == []
    assert int((tmp_path / name / ".lock").read_text().split()[0]) != pid
    assert_same_runs(tmp_path, reference)
    again = executor.run_all(grid.load_grid(SMOKE), RunStore(tmp_path), workers=2,
                         progress=False, data_dir=datasets)
    assert again.computed == [] and len(again.reused) == 8


def test_on_ray_runs_come_back_as_bytes_equal_to_the_sequential_ones(
        tmp_path, reference, datasets, ray_session):
    """transport="bytes": each run is computed in the worker's own temporary store (the
    reinit runs get their lottery runs shipped) and unpacked into place by the driver; a
    run that raises is reported with its error and stores nothing."""
    failing = ExperimentConfig(dataset="cifar10", model="vgglike", depth=1, width=4,
                               train_size=300, test_size=100, epochs=1, levels=1,
                               device="cpu")
    summary = executor.run_all([*grid.load_grid(SMOKE), failing], RunStore(tmp_path),
                           ray="local", transport="bytes", progress=False, data_dir=datasets)
    assert len(summary.computed) == 8 and list(summary.failed) == [failing.run_name()]
    assert summary.failed[failing.run_name()].startswith("FileNotFoundError: cifar10")
    assert_same_runs(tmp_path, reference)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    for run in RunStore(tmp_path).runs():  # computed elsewhere: no lock was ever held here
        assert not run.file(".lock").exists()


def test_a_killed_ray_worker_neither_loses_nor_duplicates_its_run(tmp_path, reference,
                                                                  datasets, ray_session):
    """The store is shared (same machine): Ray retries the task, which resumes the run."""
    summary, (name, pid) = sweep_with_a_kill(tmp_path, ray="local", data_dir=datasets,
                                             checkpoint_seconds=0)
    assert summary.ok, summary.report()
    assert len(summary.computed) == 8
    assert int((tmp_path / name / ".lock").read_text().split()[0]) != pid
    assert_same_runs(tmp_path, reference)


# ---------------------------------------------------------------------------- the command
def test_sweep_reports_each_failed_run_and_exits_1(tmp_path, datasets, capsys):
    base = {"model": "vgglike", "depth": 1, "width": 4, "train_size": 300, "test_size": 100,
            "epochs": 1, "levels": 1, "device": "cpu"}
    grid_file = tmp_path / "grid.yml"
    grid_file.write_text(yaml.safe_dump({"base": base,
                                         "grid": {"dataset": ["digits", "cifar10"]}}))
    arguments = ["sweep", str(grid_file), "--workers", "1", "--runs-dir",
                 str(tmp_path / "runs"), "--data-dir", str(datasets), "--quiet"]
    assert main(arguments) == 1
    err = capsys.readouterr().err
    missing = ExperimentConfig(**base, dataset="cifar10").run_name()
    assert "1 computed, 0 already finished, 1 failed" in err
    assert f"failed {missing}: FileNotFoundError" in err and "cifar10" in err, err
    assert main(arguments) == 1
    assert "0 computed, 1 already finished, 1 failed" in capsys.readouterr().err


BAD_GRIDS = [
    pytest.param({"base": {"modle": "mlp"}}, "base.modle", ["did you mean model"],
                 id="base-unknown-key"),
    pytest.param({"base": {"rate": 0}, "grid": {"seed": [0, 1]}}, "base.rate",
                 ["> 0.0", "< 1.0"], id="base-bad-value"),
    pytest.param({"grid": {"rate": [0.2, 1.5]}}, "grid.rate", ["> 0.0", "< 1.0"],
                 id="grid-bad-value"),
    pytest.param({"grid": {"criterion": ["magnitude", "size"]}}, "grid.criterion",
                 ["magnitude, gradient, random"], id="grid-unknown-value"),
    pytest.param({"grid": {"colour": ["red"]}}, "grid.colour", ["unknown key", "sddlib keys"],
                 id="grid-unknown-key"),
    pytest.param({"grid": {"seed": 3}}, "grid.seed", ["list of values"], id="grid-scalar"),
    pytest.param({"grid": {"seed": []}}, "grid.seed", ["one or more"], id="grid-empty"),
    pytest.param({"base": {"seed": 0}, "grid": {"seed": [1]}}, "grid.seed",
                 ["also set in base"], id="grid-and-base"),
    pytest.param({"base": {"dataset": "mnist1d"}, "grid": {"model": ["mlp", "resnet18"]}},
                 "grid.model", ["mlp, cnn1d"], id="grid-combination"),
    pytest.param({"base": {"model": "resnet18"}, "grid": {"dataset": ["mnist1d"]}},
                 "base.model", ["mlp, cnn1d"], id="base-alone-wrong"),
    pytest.param({"base": {"dataset": "cifar10", "augment": True},
                  "grid": {"model": ["resnet18", "mlp"]}},
                 "base.augment", ["allowed with mlp on cifar10: false", "(with grid "
                                  "model='mlp')"], id="base-wrong-with-a-grid-value"),
    pytest.param({"runs": {"seed": [0]}}, "runs", ["allowed: base, grid"],
                 id="unknown-section"),
    pytest.param(["seed"], "grid", ["base:", "grid:"], id="not-a-mapping"),
    pytest.param("base: {model: mlp\n", "grid", ["invalid YAML", "line 2"], id="broken-yaml"),
]


@pytest.mark.parametrize("content, key, expected", BAD_GRIDS)
def test_a_bad_grid_is_one_line_exit_2_and_touches_nothing(content, key, expected,
                                                           tmp_path, capsys):
    grid_file = tmp_path / "grid.yml"
    grid_file.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
    code = main(["sweep", str(grid_file), "--runs-dir", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("sddlib sweep: error: ") and key in lines[0], lines[0]
    for text in expected:
        assert text in lines[0], lines[0]
    assert not (tmp_path / "runs").exists()


def test_the_library_imports_without_ray():
    """Only sddlib.scheduling.distributed uses Ray, and imports it inside its functions."""
    import ast

    for path in (ROOT / "sddlib").glob("*.py"):
        for node in ast.parse(path.read_text()).body:
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(name.split(".")[0] == "ray" for name in names), path.name


def test_bad_flags_and_a_missing_ray_are_one_line(tmp_path, capsys, monkeypatch):
    arguments = ["sweep", str(SMOKE), "--runs-dir", str(tmp_path / "runs")]
    assert main([*arguments, "--workers", "0"]) == 2
    assert capsys.readouterr().err.strip() == ("sddlib sweep: error: --workers: '0' is not "
                                               "allowed; allowed: auto or an integer >= 1")
    assert main(["sweep", str(tmp_path / "none.yml")]) == 2
    assert "grid: no file" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    assert main([*arguments, "--ray", "auto"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "pip install 'sddlib[ray]'" in err
    assert not (tmp_path / "runs").exists()
    with pytest.raises(ConfigError, match="grid.rate"):
        grid.expand_grid({"grid": {"rate": [0]}})
