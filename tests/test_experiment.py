import json
import os
import signal
import subprocess
import sys
import time
from importlib import metadata

import pandas as pd
import pytest
import torch

from sddlib.cli import main
from sddlib.engine import checkpoints, experiment
from sddlib.pruning import prune
from sddlib.scheduling import groups, sweep
from sddlib.storage.store import LEVEL_COLUMNS, RunStore, load_torch


def run(config, tmp_path, data_dir, **kwargs):
    store = RunStore(tmp_path / "runs")
    return experiment.run_experiment(config, store, progress=False, data_dir=data_dir,
                                     **kwargs), store


def test_a_run_stores_its_table_config_environment_and_checkpoints(tiny_config, tmp_path,
                                                                   data_dir):
    result, store = run(tiny_config, tmp_path, data_dir)
    table = result.levels()
    assert list(table.columns) == LEVEL_COLUMNS
    assert list(table.level) == [0, 1, 2, 3]
    for level, value in zip(table.level, table.sparsity):
        assert abs(value - prune.expected_sparsity(level)) < 1e-3
    for column in ("train_acc", "train_acc_clean", "train_acc_corrupted", "test_acc"):
        assert table[column].between(0, 1).all()
    # memorisation is measured on the samples whose label really changed
    assert table.train_acc_corrupted.notna().all()
    assert (table.learning_distance > 0).all()
    config = json.loads(result.file("config.json").read_text())
    assert config["widths"] == [32, 32] and config["noise"] == 0.2
    meta = json.loads(result.file("meta.json").read_text())
    # the installed distribution's version, the release of the torch that ran
    assert meta["versions"]["torch"] == metadata.version("torch")
    assert meta["versions"]["torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert "code_revision" in meta and meta["device"] == "cpu"
    for level in range(4):
        assert result.level_dir(level).joinpath("final.pt").exists()
        masks = load_torch(result.level_dir(level) / "mask.pt")
        assert abs(prune.sparsity(masks) - table.sparsity[level]) < 1e-12
    assert result.file("checkpoints", "init.pt").exists()
    assert result.file("label_noise.npz").exists()
    assert not result.file("progress.pt").exists()
    frame = store.load()
    assert {"run", "level", "test_acc", "dataset", "noise", "retrain", "seed"} <= set(frame)
    assert len(frame) == 4


def test_a_finished_run_is_reused_and_a_longer_one_extends_it(tiny_config, tmp_path, data_dir,
                                                             monkeypatch):
    short = tiny_config.replace(levels=1)
    first, store = run(short, tmp_path, data_dir)
    before = first.levels()
    stamp = first.file("levels.csv").stat().st_mtime_ns

    def refuse(*args, **kwargs):
        raise AssertionError("a finished level was trained again")
    monkeypatch.setattr(experiment.train, "train_level", refuse)
    again, _ = run(short, tmp_path, data_dir)
    assert again.path == first.path and first.file("levels.csv").stat().st_mtime_ns == stamp
    monkeypatch.undo()

    longer, _ = run(tiny_config, tmp_path, data_dir)
    assert longer.path == first.path
    table = longer.levels()
    assert len(table) == 4
    pd.testing.assert_frame_equal(table.iloc[:2].drop(columns="seconds"),
                                  before.drop(columns="seconds"))


def test_same_config_and_seed_give_the_same_numbers(tiny_config, tmp_path, data_dir):
    a, _ = run(tiny_config, tmp_path / "a", data_dir)
    b, _ = run(tiny_config, tmp_path / "b", data_dir)
    pd.testing.assert_frame_equal(a.levels().drop(columns="seconds"),
                                  b.levels().drop(columns="seconds"))
    c, _ = run(tiny_config.replace(seed=1), tmp_path / "a", data_dir)
    # another seed: another init, so every level ends at another training loss
    assert (a.levels().train_loss != c.levels().train_loss).all()


@pytest.mark.parametrize("mode", ["finetune", "lr-rewind", "scratch"])
def test_retraining_modes_start_where_the_paper_says(mode, tiny_config, tmp_path, data_dir):
    config = tiny_config.replace(retrain=mode, levels=2)
    result, _ = run(config, tmp_path, data_dir)
    assert len(result.levels()) == 3
    init = load_torch(result.file("checkpoints", "init.pt"))
    final0 = load_torch(result.level_dir(0) / "final.pt")
    final1 = load_torch(result.level_dir(1) / "final.pt")
    masks1 = load_torch(result.level_dir(1) / "mask.pt")
    mask1 = masks1["hidden.1.weight"]
    # global magnitude: the level-1 masks keep the largest level-0 weights over all layers
    kept = torch.cat([final0[n][m == 1].abs() for n, m in masks1.items()])
    dropped = torch.cat([final0[n][m == 0].abs() for n, m in masks1.items()])
    assert kept.min() >= dropped.max()
    assert torch.count_nonzero(final1["hidden.1.weight"][mask1 == 0]) == 0
    # the bias of the output layer is never pruned or rewound: where it goes tells the start
    start_bias = {"finetune": final0, "lr-rewind": final0, "scratch": None}[mode]
    if start_bias is None:
        assert not torch.equal(final1["output.bias"], init["output.bias"])
    else:
        distance_from_final0 = (final1["output.bias"] - final0["output.bias"]).norm()
        distance_from_init = (final1["output.bias"] - init["output.bias"]).norm()
        assert distance_from_final0 < distance_from_init


def test_reinit_uses_the_lottery_runs_masks_with_a_fresh_init(tiny_config, tmp_path, data_dir):
    reinit, store = run(tiny_config.replace(retrain="reinit", levels=2), tmp_path, data_dir)
    lottery = store.find(tiny_config.replace(levels=2))
    assert lottery is not None and lottery.is_finished()
    for level in range(3):
        ours = load_torch(reinit.level_dir(level) / "mask.pt")
        theirs = load_torch(lottery.level_dir(level) / "mask.pt")
        assert all(torch.equal(ours[name], theirs[name]) for name in ours)
    assert not torch.equal(load_torch(reinit.file("checkpoints", "init.pt"))["output.weight"],
                           load_torch(lottery.file("checkpoints", "init.pt"))["output.weight"])


def test_lottery_rewinds_to_iteration_k_of_the_dense_run(tiny_config, tmp_path, data_dir):
    config = tiny_config.replace(rewind_iteration=3, levels=1)
    result, _ = run(config, tmp_path, data_dir)
    rewind = load_torch(result.file("checkpoints", "rewind.pt"))
    init = load_torch(result.file("checkpoints", "init.pt"))
    assert not torch.equal(rewind["output.weight"], init["output.weight"])


@pytest.mark.parametrize("changes", [{"scope": "layerwise"},
                                     {"optimizer": "sgd", "lr": 0.05, "schedule": "cosine"}])
def test_other_scopes_and_recipes_run(changes, tiny_config, tmp_path, data_dir):
    result, _ = run(tiny_config.replace(levels=2, **changes), tmp_path, data_dir)
    table = result.levels()
    assert len(table) == 3 and abs(table.sparsity[2] - 0.36) < 1e-3


def test_layerwise_scope_prunes_every_layer_by_the_same_share(tiny_config, tmp_path, data_dir):
    result, _ = run(tiny_config.replace(levels=1, scope="layerwise"), tmp_path, data_dir)
    masks = load_torch(result.level_dir(1) / "mask.pt")
    assert {name: round(prune.sparsity({name: mask}), 2) for name, mask in masks.items()} \
        == {name: 0.2 for name in masks}


def test_criteria_choose_different_weights_and_magnitude_keeps_the_largest(tiny_config,
                                                                          tmp_path, data_dir):
    masks, finals = {}, {}
    for criterion in ("magnitude", "gradient", "random"):
        result, _ = run(tiny_config.replace(levels=1, criterion=criterion), tmp_path, data_dir)
        masks[criterion] = load_torch(result.level_dir(1) / "mask.pt")
        finals[criterion] = load_torch(result.level_dir(0) / "final.pt")
    for first, second in [("magnitude", "gradient"), ("magnitude", "random"),
                          ("gradient", "random")]:
        assert any(not torch.equal(masks[first][name], masks[second][name])
                   for name in masks[first]), (first, second)
    # global magnitude: level 1 keeps exactly the largest |w| of level 0's final weights
    magnitude, final0 = masks["magnitude"], finals["magnitude"]
    kept = torch.cat([final0[name][mask == 1].abs() for name, mask in magnitude.items()])
    dropped = torch.cat([final0[name][mask == 0].abs() for name, mask in magnitude.items()])
    assert len(dropped) == round(0.2 * (len(kept) + len(dropped)))
    assert kept.min() >= dropped.max()


# ---------------------------------------------------------------------------- command line
def test_bad_input_fails_in_one_line_and_leaves_the_store_untouched(tmp_path, capsys):
    runs = tmp_path / "runs"
    for sets in (["criterion=size"], ["lr=fast"], ["noise=2"], ["bogus=1"]):
        code = main(["run", "--runs-dir", str(runs), *sum([["--set", s] for s in sets], [])])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1
        assert err.startswith(f"sddlib run: error: {sets[0].split('=')[0]}:")
        assert "allowed" in err or "not a number" in err or "sddlib keys" in err
    assert not runs.exists()


def test_ls_and_show(tiny_config, tmp_path, data_dir, capsys):
    result, store = run(tiny_config, tmp_path, data_dir)
    assert main(["ls", "--runs-dir", str(store.root)]) == 0
    out = capsys.readouterr().out
    assert result.name in out and "finished" in out and "4/4" in out
    assert main(["show", result.name[-10:], "--runs-dir", str(store.root)]) == 0
    out = capsys.readouterr().out
    assert "test_acc" in out and len(out.strip().splitlines()) == 6
    assert main(["show", "nothing-like-this", "--runs-dir", str(store.root)]) == 2


CLI_SETS = ["model=mlp", "widths=64,64", "train_size=1500", "test_size=500", "epochs=6", "levels=3",
            "batch_size=32", "device=cpu"]


def cli_run(runs, data_dir, extra=()):
    command = [sys.executable, "-m", "sddlib", "run", "--runs-dir", str(runs), "--data-dir",
               str(data_dir), "--checkpoint-every", "0", "--quiet", *extra]
    for item in CLI_SETS:
        command += ["--set", item]
    return command


@pytest.mark.slow
def test_a_run_killed_mid_level_resumes_to_the_same_table(tmp_path, data_dir):
    reference = subprocess.run(cli_run(tmp_path / "reference", data_dir), capture_output=True,
                               text=True, check=True)
    folder = reference.stdout.strip().splitlines()[-1]
    expected = pd.read_csv(f"{folder}/levels.csv")

    runs = tmp_path / "killed"
    process = subprocess.Popen(cli_run(runs, data_dir), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    deadline = time.time() + 120
    killed_with_progress = False
    while time.time() < deadline and process.poll() is None:
        progress = list(runs.glob("*/progress.pt"))
        rows = list(runs.glob("*/levels.csv"))
        if progress and rows:  # at least one level done and the next one half way
            time.sleep(0.05)
            process.send_signal(signal.SIGKILL)
            killed_with_progress = True
            break
        time.sleep(0.02)
    process.wait()
    assert killed_with_progress, "the run ended before it could be killed mid-level"
    partial = pd.read_csv(next(runs.glob("*/levels.csv")))
    assert len(partial) < 4
    resumed = subprocess.run(cli_run(runs, data_dir), capture_output=True, text=True,
                             check=True)
    table = pd.read_csv(f"{resumed.stdout.strip().splitlines()[-1]}/levels.csv")
    pd.testing.assert_frame_equal(table.drop(columns="seconds"),
                                  expected.drop(columns="seconds"))
    assert not list(runs.glob("*/progress.pt")) and not list(runs.glob("*/.*.tmp"))


def test_cli_run_prints_the_run_folder_and_reuses_it(tmp_path, data_dir):
    first = subprocess.run(cli_run(tmp_path / "runs", data_dir), capture_output=True, text=True,
                           check=True)
    folder = first.stdout.strip().splitlines()[-1]
    assert os.path.isdir(folder) and "-mlp-" in folder
    assert "-random20-magnitude-lottery-" in folder and "-seed0-" in folder
    second = subprocess.run(cli_run(tmp_path / "runs", data_dir), capture_output=True,
                            text=True, check=True)
    assert second.stdout.strip().splitlines()[-1] == folder
    assert "reused it" in second.stderr


def test_evaluate_pruned_reproduces_the_stored_accuracy(tiny_config, tmp_path, data_dir):
    result, _ = run(tiny_config.replace(levels=2), tmp_path, data_dir)
    table = result.levels()
    for level in range(3):
        again = checkpoints.evaluate_pruned(result, level, data_dir=data_dir)
        assert abs(again["test_acc"] - table.test_acc[level]) < 1e-9
    not_retrained = checkpoints.evaluate_pruned(result, 1, mask_level=2, data_dir=data_dir)
    assert not_retrained["remaining_weights"] == table.remaining_weights[2]


def test_cli_reads_a_yaml_config_and_sets_override_it(tmp_path, data_dir, capsys):
    config = tmp_path / "experiment.yml"
    config.write_text("model: mlp\nwidths: [16, 16]\ntrain_size: 300\ntest_size: 100\n"
                      "epochs: 1\nlevels: 3\ndevice: cpu\n")
    runs = tmp_path / "runs"
    code = main(["run", str(config), "--set", "levels=1", "--set", "noise=0.4", "--quiet",
                 "--runs-dir", str(runs), "--data-dir", str(data_dir)])
    assert code == 0
    folder = capsys.readouterr().out.strip().splitlines()[-1]
    assert "-mlp-" in folder and "-random40-" in folder
    assert len(pd.read_csv(f"{folder}/levels.csv")) == 2
    stored = json.loads((runs / folder.split("/")[-1] / "config.json").read_text())
    assert stored["widths"] == [16, 16] and stored["noise"] == 0.4
    bad = tmp_path / "bad.yml"
    bad.write_text("modle: mlp\n")
    assert main(["run", str(bad), "--runs-dir", str(tmp_path / "other")]) == 2
    assert capsys.readouterr().err.strip().startswith("sddlib run: error: modle: unknown key")
    assert not (tmp_path / "other").exists()


def test_a_redense_run_trains_the_parents_sparse_solution_with_every_weight_free(
        tiny_config, tmp_path, data_dir):
    config = tiny_config.replace(levels=2)
    redense, store = run(config.replace(redense_level=2), tmp_path, data_dir)
    parent = store.find(config)
    assert parent is not None and parent.is_finished() and redense.path != parent.path
    assert list(redense.levels().level) == [0] and redense.levels().sparsity[0] == 0.0
    sparse = load_torch(parent.level_dir(2) / "final.pt")
    start = load_torch(redense.file("checkpoints", "init.pt"))
    assert all(torch.equal(sparse[k], start[k]) for k in sparse)  # starts from the parent
    final = load_torch(redense.level_dir(0) / "final.pt")
    masks = load_torch(parent.level_dir(2) / "mask.pt")
    for name, mask in masks.items():
        assert not sparse[name][mask == 0].any()
        assert final[name][mask == 0].abs().sum() > 0  # pruned weights grew back
        assert (load_torch(redense.level_dir(0) / "mask.pt")[name] == 1).all()
    # asking again finds the finished run, and the parent's identity is unchanged
    again, _ = run(config.replace(redense_level=2), tmp_path, data_dir)
    assert again.path == redense.path
    assert config.short_hash() == config.replace(redense_level=None).short_hash()


# ---------------------------------------------------------------------------- stacked groups
# A process that trains a stacked group and kills itself (SIGKILL) at the end of the first
# epoch of level 1, after the group's checkpointer has written every member's progress.pt.
KILLED_GROUP = """
import json, os, signal, sys
from sddlib.engine import ensemble, experiment
from sddlib.scheduling import sweep
from sddlib.config.fields import ExperimentConfig
from sddlib.storage.store import RunStore

runs, data, configs = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
original = ensemble.train_level_stacked

def killed(*args, level, callbacks=(), **kwargs):
    def kill(event, state):
        if event == "epoch" and level == 1 and state.epoch == 1:
            os.kill(os.getpid(), signal.SIGKILL)
    return original(*args, level=level, callbacks=(*callbacks, kill), **kwargs)

ensemble.train_level_stacked = killed
sweep.run_many([ExperimentConfig.from_dict(c) for c in configs], RunStore(runs),
               stack=True, progress=False, data_dir=data, checkpoint_seconds=0)
"""


def stack_configs():
    base = experiment.ExperimentConfig(model="mlp", widths=[16, 16], train_size=300,
                                       test_size=100, epochs=2, levels=2, batch_size=50,
                                       lr=0.01, device="cpu")
    return [base, base.replace(seed=1, criterion="random"),
            base.replace(noise=0.4, criterion="gradient")]


@pytest.fixture(scope="module")
def killed_group(tmp_path_factory):
    """An uninterrupted stacked group, and the same group killed half way through level 1."""
    data_dir = tmp_path_factory.getbasetemp() / "datasets"
    root = tmp_path_factory.mktemp("stacked")
    configs = stack_configs()
    reference = RunStore(root / "reference")
    sweep.run_many(configs, reference, stack=True, progress=False, data_dir=data_dir)
    killed = subprocess.run([sys.executable, "-c", KILLED_GROUP, str(root / "killed"),
                             str(data_dir), json.dumps([c.to_dict() for c in configs])],
                            capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    for config in configs:
        run = RunStore(root / "killed").find(config)
        assert run.levels_done() == 1
        progress = load_torch(run.file("progress.pt"))
        assert progress["level"] == 1 and progress["iteration"] == 6  # 300 samples / 50
    return configs, reference, root / "killed", data_dir


def stacked_copy(killed, tmp_path):
    import shutil

    shutil.copytree(killed, tmp_path / "runs")
    return RunStore(tmp_path / "runs")


def record_calls(monkeypatch, module, name):
    """Wrap ``module.name`` to record the ``(level, resume)`` of every call."""
    calls, original = [], getattr(module, name)

    def recording(*args, level, resume=None, **kwargs):
        calls.append((level, resume))
        return original(*args, level=level, resume=resume, **kwargs)
    monkeypatch.setattr(module, name, recording)
    return calls


def assert_same_runs(store, reference, configs, atol):
    for config in configs:
        ours, theirs = store.find(config), reference.find(config)
        a, b = ours.levels(), theirs.levels()
        assert list(a.level) == list(b.level) == [0, 1, 2]
        for column in LEVEL_COLUMNS[1:-1]:
            assert (a[column] - b[column]).abs().max() <= atol, (config.run_name(), column)
        for level in range(3):
            x, y = load_torch(ours.level_dir(level) / "final.pt"), \
                load_torch(theirs.level_dir(level) / "final.pt")
            assert all(torch.allclose(x[k], y[k], rtol=0, atol=atol) for k in x), level
        assert not ours.file("progress.pt").exists()


def test_a_stacked_group_killed_mid_level_resumes_to_the_same_numbers(killed_group, tmp_path,
                                                                    monkeypatch):
    configs, reference, killed, data_dir = killed_group
    store = stacked_copy(killed, tmp_path)
    calls = record_calls(monkeypatch, groups.ensemble, "train_level_stacked")
    sweep.run_many(configs, store, stack=True, progress=False, data_dir=data_dir)
    assert [level for level, _ in calls] == [1, 2]
    assert [payload["iteration"] for payload in calls[0][1]] == [6, 6, 6]  # resumed, not redone
    assert_same_runs(store, reference, configs, atol=1e-6)
    names = [store.find(config).name for config in configs]
    for config, name in zip(configs, names):
        trained = store.find(config).meta()["trained_as"]
        assert trained == {"stacked_with": sorted(set(names) - {name}),
                           "stacked_levels": [0, 1, 2]}


def test_a_stacked_members_checkpoint_resumes_it_alone(killed_group, tmp_path, monkeypatch):
    configs, reference, killed, data_dir = killed_group
    store = stacked_copy(killed, tmp_path)
    calls = record_calls(monkeypatch, experiment.train, "train_level")
    run = experiment.run_experiment(configs[1], store, progress=False, data_dir=data_dir)
    assert [level for level, _ in calls] == [1, 2]
    assert calls[0][1]["iteration"] == 6 and calls[0][1]["level"] == 1
    # alone and stacked agree to float rounding; level 0 was trained stacked, 1 and 2 alone
    assert_same_runs(store, reference, configs[1:2], atol=1e-4)
    assert run.meta()["trained_as"]["stacked_levels"] == [0]


def test_a_group_whose_checkpoints_disagree_restarts_the_level(killed_group, tmp_path,
                                                              monkeypatch):
    configs, reference, killed, data_dir = killed_group
    store = stacked_copy(killed, tmp_path)
    store.find(configs[2]).file("progress.pt").unlink()
    calls = record_calls(monkeypatch, groups.ensemble, "train_level_stacked")
    sweep.run_many(configs, store, stack=True, progress=False, data_dir=data_dir)
    assert calls[0][0] == 1 and calls[0][1] is None
    assert_same_runs(store, reference, configs, atol=1e-6)


def test_cli_run_with_seeds_stacks_them_and_prints_each_folder(tmp_path, data_dir, capsys):
    sets = ["model=mlp", "widths=16,16", "train_size=300", "test_size=100", "epochs=1",
            "levels=1", "batch_size=50", "device=cpu"]
    arguments = ["run", "--quiet", "--data-dir", str(data_dir), "--seeds", "0", "1", "2",
                 *sum([["--set", s] for s in sets], [])]
    assert main([*arguments, "--runs-dir", str(tmp_path / "stacked"), "--stack"]) == 0
    stacked = capsys.readouterr().out.strip().splitlines()
    assert [folder.split("-")[-2] for folder in stacked] == ["seed0", "seed1", "seed2"]
    names = [folder.split("/")[-1] for folder in stacked]
    for folder, name in zip(stacked, names):
        meta = json.loads((tmp_path / "stacked" / name / "meta.json").read_text())
        assert meta["trained_as"]["stacked_with"] == sorted(set(names) - {name})
        assert len(pd.read_csv(f"{folder}/levels.csv")) == 2
    # --no-stack, and the default on the CPU (stacking only pays on CUDA): one by one
    assert main([*arguments, "--runs-dir", str(tmp_path / "auto")]) == 0
    auto = capsys.readouterr().out.strip().splitlines()
    assert all("trained_as" not in json.loads(open(f"{f}/meta.json").read()) for f in auto)
    assert main([*arguments, "--runs-dir", str(tmp_path / "alone"), "--no-stack"]) == 0
    alone = capsys.readouterr().out.strip().splitlines()
    assert [folder.split("/")[-1] for folder in alone] == names
    for folder, other in zip(alone, stacked):
        assert "trained_as" not in json.loads(open(f"{folder}/meta.json").read())
        a, b = pd.read_csv(f"{folder}/levels.csv"), pd.read_csv(f"{other}/levels.csv")
        assert (a.test_loss - b.test_loss).abs().max() < 1e-4
    # asking again reuses all three
    assert main([*arguments, "--runs-dir", str(tmp_path / "stacked")]) == 0
    out, err = capsys.readouterr()
    assert out.strip().splitlines() == stacked and err.count("reused it") == 3
