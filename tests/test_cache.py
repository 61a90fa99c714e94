"""Analysis results are kept beside their run and reused, keyed by arguments and code."""
import importlib.util
import pickle

import pandas as pd
import pytest

from sddlib.analysis import landscape
from sddlib.base import cache


def module_from(path, text):
    path.write_text(text)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_result_is_computed_once_and_reused(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return pd.DataFrame({"x": [len(calls)]})

    first = cache.cached(tmp_path, "thing", {"a": 1}, compute)
    again = cache.cached(tmp_path, "thing", {"a": 1}, compute)
    assert calls == [1] and again.equals(first)
    other = cache.cached(tmp_path, "thing", {"a": 2}, compute)  # other arguments: computed
    assert calls == [1, 1] and other.x[0] == 2
    assert len(list((tmp_path / cache.FOLDER).glob("thing-*.pkl"))) == 2


def test_changed_code_or_an_unreadable_file_computes_again(tmp_path):
    one = module_from(tmp_path / "helper_one.py", "def f():\n    return 1\n")
    two = module_from(tmp_path / "helper_two.py", "def f():\n    return 2\n")
    assert cache.key({"a": 1}, [one]) != cache.key({"a": 1}, [two])
    assert cache.key({"a": 1}, [one]) == cache.key({"a": 1}, [one])
    cache.cached(tmp_path, "r", {}, lambda: "old", [one])
    (path,) = (tmp_path / cache.FOLDER).glob("r-*.pkl")
    path.write_bytes(pickle.dumps("old")[:5])  # cut short
    assert cache.cached(tmp_path, "r", {}, lambda: "new", [one]) == "new"
    assert cache.cached(tmp_path, "r", {}, lambda: "newer", [one]) == "new"


def test_the_landscape_of_a_run_is_read_back_not_recomputed(tmp_path, monkeypatch):
    from sddlib import ExperimentConfig, RunStore, run

    config = ExperimentConfig(dataset="mnist1d", train_size=200, test_size=100, epochs=1,
                              levels=1, width=4, batch_size=100, device="cpu")
    store = RunStore(tmp_path / "runs")
    run(config, store=store, progress=False, data_dir=tmp_path / "data")
    stored = store.find(config)
    first = landscape.sharpness_by_level(stored, hessian_batches=1, trace_queries=3,
                                         data_dir=tmp_path / "data")
    curves = landscape.direction_curves(stored, [0, 1], [0.0, 0.5], data_dir=tmp_path / "data")

    def fail(*args, **kwargs):
        raise AssertionError("computed again")

    monkeypatch.setattr(landscape, "_sharpness_by_level", fail)
    monkeypatch.setattr(landscape, "_direction_curves", fail)
    assert landscape.sharpness_by_level(stored, hessian_batches=1, trace_queries=3,
                                        data_dir=tmp_path / "data").equals(first)
    assert landscape.direction_curves(stored, [0, 1], [0.0, 0.5],
                                      data_dir=tmp_path / "data").equals(curves)
    with pytest.raises(AssertionError, match="computed again"):  # other arguments
        landscape.sharpness_by_level(stored, hessian_batches=2, trace_queries=3,
                                     data_dir=tmp_path / "data")
