"""Runs trained side by side in worker processes (sddlib.scheduling.parallel)."""
import json

import pytest
import torch

from sddlib.config.fields import ConfigError, ExperimentConfig
from sddlib.engine import threads
from sddlib.scheduling import parallel
from sddlib.scheduling.sweep import run_many
from sddlib.storage.store import RunStore

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def _numbers(frame):
    columns = ["run", "level", "sparsity", "train_acc", "test_acc", "test_loss",
               "learning_distance"]
    return frame[columns].sort_values(["run", "level"]).reset_index(drop=True)


def test_a_pool_gives_the_numbers_of_one_by_one_and_waits_for_lottery_runs(tmp_path, data_dir):
    """Two workers: the same numbers as one process, bit for bit (the thread count is the
    run's, not the pool's); the reinit run trains after its lottery run, which is computed
    although not asked for; every run records one torch thread, and the caller's thread
    count is back afterwards."""
    base = ExperimentConfig(train_size=400, test_size=100, epochs=2, levels=2, device="cpu")
    configs = [base.replace(seed=1), base.replace(retrain="reinit")]
    threads = torch.get_num_threads()
    alone = run_many(configs, RunStore(tmp_path / "alone"), workers=1, progress=False,
                     data_dir=data_dir)
    assert torch.get_num_threads() == threads
    pooled = run_many(configs, RunStore(tmp_path / "pool"), workers=2, progress=False,
                      data_dir=data_dir)
    assert len(pooled) == 2 * 3 and pooled.run.nunique() == 2  # the lottery run not returned
    assert _numbers(pooled).equals(_numbers(alone))
    store = RunStore(tmp_path / "pool")
    assert store.find(base) is not None and store.find(base).is_finished()
    for run in store.runs():
        meta = json.loads(run.file("meta.json").read_text())
        assert meta["torch_threads"] == 1 and meta["process"].startswith("SweepWorker")
    for run in RunStore(tmp_path / "alone").runs():
        assert json.loads(run.file("meta.json").read_text())["process"] == "MainProcess"


def test_a_run_failing_in_a_worker_fails_alone_and_is_named_in_the_caller(tmp_path, data_dir):
    """As everywhere the plan runs: the other runs go on; then the error is raised as it
    was when the failed runs failed alike, else one error names each failed run and why."""
    good = ExperimentConfig(train_size=300, test_size=100, epochs=1, levels=1, device="cpu")
    missing = good.replace(dataset="cifar10", model="vgglike", depth=1, width=4)
    store = RunStore(tmp_path / "runs")
    with pytest.raises(FileNotFoundError, match="^cifar10: expected data_batch_1"):
        run_many([missing, good], store, workers=2, progress=False,
                 data_dir=tmp_path / "no-datasets")
    assert store.find(good).is_finished() and store.find(missing) is None
    other = missing.replace(dataset="cifar100")
    with pytest.raises(RuntimeError, match=r"^2 run\(s\) failed: ") as raised:
        run_many([missing, other, good], store, workers=2, progress=False,
                 data_dir=tmp_path / "no-datasets")
    assert all(f"{config.run_name()}: FileNotFoundError: {config.dataset}: expected" in
               str(raised.value) for config in (missing, other))


def test_auto_workers_one_per_core_on_the_cpu_for_runs_worth_a_process(monkeypatch):
    monkeypatch.setattr(threads, "usable_cores", lambda: 4)
    default = ExperimentConfig()                       # 26 levels x 30 epochs x 8000 samples
    tiny = default.replace(train_size=100, epochs=1, levels=1)
    groups = [[default.replace(seed=seed)] for seed in range(6)]
    assert parallel.resolve_workers("auto", groups, CPU) == 4
    assert parallel.resolve_workers("auto", groups[:3], CPU) == 3
    assert parallel.resolve_workers("auto", groups[:1], CPU) == 1
    assert parallel.resolve_workers("auto", [[tiny], [tiny.replace(seed=1)]], CPU) == 1
    assert parallel.resolve_workers("auto", groups, CUDA) == 1
    wide = [[default.replace(seed=seed, threads=2)] for seed in range(6)]
    assert parallel.resolve_workers("auto", wide, CPU) == 2
    assert parallel.resolve_workers(3, groups[:2], CPU) == 2
    with pytest.raises(ValueError,
                       match="workers: 0 is not allowed; allowed: auto or an integer >= 1"):
        parallel.resolve_workers(0, groups, CPU)


def test_a_runs_threads_depend_on_its_model_and_device_not_on_how_it_is_run(monkeypatch):
    monkeypatch.setattr(threads, "usable_cores", lambda: 8)
    assert threads.run_threads(ExperimentConfig(), CPU) == 1
    assert threads.run_threads(ExperimentConfig(model="mlp"), CPU) == 1
    assert threads.run_threads(ExperimentConfig(model="resnet18", dataset="cifar10"), CPU) == 8
    assert threads.run_threads(ExperimentConfig(), CUDA) == 8
    assert threads.run_threads(ExperimentConfig(threads=3), CPU) == 3
    assert ExperimentConfig(threads=3).short_hash() == ExperimentConfig().short_hash()
    with pytest.raises(ConfigError, match="threads"):
        ExperimentConfig(threads=0)


def test_bad_worker_counts_get_one_line_errors(tmp_path, monkeypatch, capsys):
    from sddlib.book import profiles
    from sddlib.cli import main

    assert parallel.parse_workers("auto") == "auto" and parallel.parse_workers("3") == 3
    monkeypatch.setenv("SDDLIB_WORKERS", "many")
    with pytest.raises(ValueError, match="SDDLIB_WORKERS: 'many' is not allowed; allowed: "
                                         "auto or an integer >= 1"):
        profiles.workers_setting()
    code = main(["run", "--seeds", "0", "1", "--workers", "-1", "--runs-dir",
                 str(tmp_path / "runs")])
    assert code == 2
    assert capsys.readouterr().err.strip() == ("sddlib run: error: --workers: '-1' is not "
                                               "allowed; allowed: auto or an integer >= 1")
    assert not (tmp_path / "runs").exists()


def test_a_notebook_kernel_trains_its_runs_in_a_pool(tmp_path, monkeypatch):
    """SDDLIB_WORKERS reaches the notebooks, and worker processes spawned from a Jupyter
    kernel (no __main__ file to re-import) train the page's runs."""
    import shutil
    from pathlib import Path

    from sddlib.book import build
    from sddlib.config.project import load_settings

    root = Path(__file__).resolve().parents[1]
    book = tmp_path / "book"
    shutil.copytree(root / "book", book, ignore=shutil.ignore_patterns("_build", "*.ipynb"))
    monkeypatch.setenv("SDDLIB_WORKERS", "2")
    # the page computes its own runs (as under plain papermill), not a schedule before it
    build.make_figures("smoke", only=["pruning-criteria"], settings=load_settings(root),
                       book_dir=book, runs_dir=tmp_path / "runs", log=lambda text: None,
                       schedule_runs=False)
    runs = RunStore(tmp_path / "runs").runs()
    assert len(runs) >= 3 and all(run.is_finished() for run in runs)
    metas = [json.loads(run.file("meta.json").read_text()) for run in runs]
    assert {meta["torch_threads"] for meta in metas} == {1}
    assert all(meta["process"].startswith("SweepWorker") for meta in metas)
