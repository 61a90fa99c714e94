"""Runs stored under the first identity are found under the second, never recomputed.

``tests/fixtures/store_before_identity_v2`` is a run store written by sddlib as it was
before identity version 2 (commit f0a75ff): five tiny runs (lottery, finetune, reinit,
a re-dense branch, random pruning with SGD) under their old folder names.
"""
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from sddlib.config.fields import ExperimentConfig
from sddlib.engine import train
from sddlib.scheduling import sweep
from sddlib.storage.store import RunStore

FIXTURE = Path(__file__).parent / "fixtures" / "store_before_identity_v2"
BASE = dict(model="mlp", widths=[8, 8], train_size=200, test_size=100, epochs=1, levels=2,
            batch_size=100, device="cpu")
CONFIGS = [ExperimentConfig(**BASE), ExperimentConfig(**BASE, retrain="finetune"),
           ExperimentConfig(**BASE, retrain="reinit"), ExperimentConfig(**BASE, redense_level=1),
           ExperimentConfig(**BASE, criterion="random", optimizer="sgd", lr=0.05, momentum=0.0)]


@pytest.fixture
def old_store(tmp_path, monkeypatch):
    root = tmp_path / "runs"
    shutil.copytree(FIXTURE, root)

    def refuse(*args, **kwargs):
        raise AssertionError("a stored run was trained again")
    monkeypatch.setattr(train, "train_level", refuse)
    return RunStore(root)


def test_the_fixture_holds_old_names_only():
    names = sorted(path.name for path in FIXTURE.iterdir())
    assert names == sorted(config.legacy_run_name() for config in CONFIGS)
    assert all(config.legacy_run_name() != config.run_name() for config in CONFIGS)


def test_runs_of_the_old_code_are_found_without_retraining(old_store, tmp_path):
    before = {config.run_name(): pd.read_csv(FIXTURE / config.legacy_run_name() / "levels.csv")
              for config in CONFIGS}
    frame = sweep.run_many(CONFIGS, old_store, progress=False, data_dir=tmp_path / "data")
    assert sorted(frame.run.unique()) == sorted(before)
    for config in CONFIGS:
        run = old_store.find(config)
        assert run.name == config.run_name() and run.is_finished()
        # the stored numbers unchanged; measures added later (the activation entropy,
        # computed from the stored weights) come as new columns
        pd.testing.assert_frame_equal(run.levels()[before[run.name].columns], before[run.name])
        assert "activation_entropy" in run.levels()
        meta = run.meta()
        assert meta["renamed_from"] == config.legacy_run_name()
        assert meta["identity_version"] == 2
        assert not (old_store.root / config.legacy_run_name()).exists()
    assert len(old_store.runs()) == len(CONFIGS)  # moved, not copied


def test_a_setting_that_does_nothing_finds_the_same_old_run(old_store, tmp_path):
    same = CONFIGS[0].replace(momentum=0.5, finetune_lr=0.02, gradient_batches=3)
    run = sweep.run_many([same], old_store, progress=False, data_dir=tmp_path / "data")
    assert run.run.unique().tolist() == [CONFIGS[0].run_name()]
    assert json.loads((old_store.root / CONFIGS[0].run_name() / "meta.json").read_text())[
        "renamed_from"] == CONFIGS[0].legacy_run_name()


def test_a_run_being_computed_under_its_old_name_is_left_alone(old_store):
    from sddlib.storage.store import Run, RunBusyError

    legacy = old_store.root / CONFIGS[0].legacy_run_name()
    with Run(legacy, CONFIGS[0]).lock():
        # flock is per open file: another open of the lock file in this process conflicts
        with pytest.raises(RunBusyError):
            old_store.find(CONFIGS[0])
    assert legacy.exists()
    assert old_store.find(CONFIGS[0]).name == CONFIGS[0].run_name()
