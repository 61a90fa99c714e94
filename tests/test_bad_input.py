"""Every error a user can cause, as a new user would cause it: one line on stderr, exit
code 2, no traceback, and the run store exactly as it was.

The store starts with two finished tiny runs (made once for the module), so "unchanged"
means something: file names, sizes and modification times are compared before and after
each command. Most cases call :func:`sddlib.cli.main` in-process; three go through the
installed ``sddlib`` command to prove the exit code and the absence of a traceback end to
end.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

from sddlib.book import build
from sddlib.cli import main
from sddlib.config.fields import ExperimentConfig
from sddlib.engine.experiment import run_experiment
from sddlib.storage.store import RunStore

ROOT = Path(__file__).resolve().parents[1]
SDDLIB = Path(sys.executable).with_name("sddlib")

# The stored runs' config: a bad value on top of it is the only thing wrong with a command.
TINY = dict(model="mlp", widths=[8], train_size=300, test_size=100, epochs=1, levels=1,
            batch_size=100, device="cpu")
SAFE = [arg for key, value in TINY.items() for arg in
        ("--set", f"{key}={','.join(map(str, value)) if isinstance(value, list) else value}")]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("bad-input")
    data_dir = tmp_path_factory.getbasetemp() / "datasets"  # conftest's shared data_dir
    store = RunStore(base / "runs")
    names = [run_experiment(ExperimentConfig(**TINY, seed=seed), store, progress=False,
                            data_dir=data_dir).name for seed in (0, 1)]
    files = base / "files"
    files.mkdir()
    for name, text in {
        "broken.yml": "model: mlp\nwidths: [8, 8\nepochs: 1\n",
        "list.yml": "- model\n- mlp\n",
        "options.yml": "model: mlp\ndata_dir: /somewhere\n",
        "typed.yml": "model: mlp\nlr: [0.1]\n",
        "typo.yml": "modle: mlp\n",
        "grid-typo.yml": "base: {modle: mlp}\ngrid: {seed: [0, 1]}\n",
        "grid-rate.yml": "base: {model: mlp}\ngrid: {rate: [0.2, 0]}\n",
    }.items():
        (files / name).write_text(text)
    (base / "empty").mkdir()

    # a project of its own: the repository's notebooks, its profiles and some bad ones
    project = base / "project"
    project.mkdir()
    (project / "notebooks").symlink_to(ROOT / "notebooks")
    content = yaml.safe_load((ROOT / "_config.yml").read_text())
    content["profiles"].update({
        "zero-rate": {"common": {"experiment": {"rate": 0}, "seeds": [0]}},
        "ghost": {"notebooks": {"no-such-page": {"seeds": [0]}}},
        "negative-seeds": {"common": {"seeds": [-1]}},
    })
    (project / "_config.yml").write_text(yaml.safe_dump(content, sort_keys=False))
    broken = base / "broken-project"
    broken.mkdir()
    (broken / "_config.yml").write_text("sddlib:\n  runs_dir: [data/runs\nnotebooks: []\n")
    world = SimpleNamespace(runs=store.root, data=data_dir, files=files, empty=base / "empty",
                            project=project, broken=broken, names=names)
    world.initial = snapshot(store.root)
    return world


def snapshot(root: Path) -> dict:
    """Every file and folder under ``root`` (itself included): kind, size and mtime."""
    seen = {}
    for folder, dirs, files in os.walk(root):
        for name in [".", *dirs, *files]:
            path = Path(folder, name)
            stat = path.stat()
            seen[str(path.relative_to(root))] = (path.is_dir(), stat.st_size, stat.st_mtime_ns)
    return seen


@pytest.fixture
def store_guard(world):
    """The store before the test; afterwards anything a failing case left is removed, so
    one case cannot spoil the next."""
    before = snapshot(world.runs)
    yield before
    for path in sorted(world.runs.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if str(path.relative_to(world.runs)) not in world.initial:
            shutil.rmtree(path) if path.is_dir() else path.unlink()


@pytest.fixture
def no_notebooks(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a notebook was executed: its parameters were not checked first")

    monkeypatch.setattr(build, "execute_notebook", refuse)


def expand(arguments, world):
    places = dict(runs=world.runs, data=world.data, files=world.files, empty=world.empty)
    return [a.format(**places) for a in arguments]


def run_args(*extra, data="{data}"):
    return ["run", *SAFE, *extra, "--runs-dir", "{runs}", "--data-dir", data, "--quiet"]


CASES = [
    # --set: values out of range (exclusive bounds where a value must be strictly inside)
    pytest.param(run_args("--set", "rate=0"), "rate", ["> 0.0", "< 1.0"], id="set-rate-0"),
    # too many samples asked of a dataset, for several seeds at once (in worker processes)
    pytest.param(run_args("--set", "dataset=digits", "--set", "model=mlp", "--set",
                          "train_size=5000", "--seeds", "0", "1", "--workers", "2"),
                 "train_size", ["5000", "only"], id="set-train-size-past-the-split-seeds"),
    pytest.param(run_args("--set", "rate=1"), "rate", ["> 0.0", "< 1.0"], id="set-rate-1"),
    pytest.param(run_args("--set", "lr=0"), "lr", ["> 0.0"], id="set-lr-0"),
    pytest.param(run_args("--set", "lr=nan"), "lr", ["finite", "> 0.0"], id="set-lr-nan"),
    pytest.param(run_args("--set", "momentum=1"), "momentum", [">= 0.0", "< 1.0"],
                 id="set-momentum-1"),
    pytest.param(run_args("--set", "gamma=0"), "gamma", ["> 0.0"], id="set-gamma-0"),
    pytest.param(run_args("--set", "noise=1.5"), "noise", ["0.0 to 1.0"], id="set-noise"),
    pytest.param(run_args("--set", "epochs=0"), "epochs", [">= 1"], id="set-epochs-0"),
    pytest.param(run_args("--set", "seed=-1"), "seed", [">= 0"], id="set-seed-negative"),
    # --set: wrong types and unknown values
    pytest.param(run_args("--set", "epochs=1.5"), "epochs", ["an integer", ">= 1"],
                 id="set-epochs-float"),
    pytest.param(run_args("--set", "widths=a,b"), "widths", ["integers"], id="set-widths"),
    pytest.param(run_args("--set", "augment=maybe"), "augment", ["true or false"],
                 id="set-augment"),
    pytest.param(run_args("--set", "criterion=size"), "criterion",
                 ["magnitude, gradient, random"], id="set-criterion"),
    pytest.param(run_args("--set", "model=nope"), "model", ["mlp, cnn1d, resnet18"],
                 id="set-model"),
    pytest.param(run_args("--set", "device=tpu"), "device", ["auto, cpu, cuda"],
                 id="set-device"),
    # a new run (a stored one is reused wherever it trained)
    pytest.param(run_args("--set", "device=cuda", "--set", "seed=5"), "device",
                 ["not on this machine", "allowed here: auto, cpu"], id="set-device-not-here",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here")),
    pytest.param(run_args("--set", "model=resnet18"), "model", ["mlp, cnn1d"],
                 id="set-model-needs-images"),
    pytest.param(run_args("--set", "train_size=333"), "train_size", ["multiple of 10"],
                 id="set-mnist1d-sizes"),
    pytest.param(run_args("--set", "colour=red"), "colour", ["unknown key", "sddlib keys"],
                 id="set-unknown-key"),
    pytest.param(run_args("--set", "nosuchkey=1"), "nosuchkey",
                 ["unknown key; the closest: ", "(every key: sddlib keys)"],
                 id="set-unknown-key-short"),
    pytest.param(run_args("--set", "epochs"), "epochs", ["key=value"], id="set-no-equals"),
    # --set: keys that are options of the command
    pytest.param(run_args("--set", "data_dir=/tmp"), "data_dir", ["--data-dir"],
                 id="set-data-dir"),
    pytest.param(run_args("--set", "runs-dir=/tmp"), "runs_dir", ["--runs-dir"],
                 id="set-runs-dir"),
    pytest.param(run_args("--set", "download=true"), "download", ["--download"],
                 id="set-download"),
    pytest.param(run_args("--set", "seeds=0,1"), "seeds", ["--seeds"], id="set-seeds"),
    pytest.param(run_args("--set", "workers=2"), "workers", ["--workers"], id="set-workers"),
    # distillation and its validation split
    pytest.param(run_args("--set", "distill_from=best"), "distill_from",
                 ["none, dense, best-fit"], id="set-distill-from"),
    pytest.param(run_args("--set", "distill_alpha=2"), "distill_alpha", ["0.0 to 1.0"],
                 id="set-distill-alpha"),
    pytest.param(run_args("--set", "distill_from=best-fit"), "validation_size", [">= 1"],
                 id="best-fit-without-validation"),
    pytest.param(run_args("--set", "distill_from=dense", "--set", "teacher.dataset=digits"),
                 "teacher.dataset", ["any key but"], id="set-teacher-dataset"),
    pytest.param(run_args("--set", "validation_size=300"), "validation_size", ["0 to 299"],
                 id="validation-size-too-big"),
    # what only the data can tell: checked before the run folder is made
    pytest.param(run_args("--set", "dataset=digits", "--set", "train_size=8000",
                          "--set", "test_size=none"),
                 "train_size", ["8000", "1437"], id="digits-train-size-too-big"),
    pytest.param(run_args("--set", "dataset=mnist", data="{empty}"), "mnist",
                 ["--download"], id="missing-dataset"),
    # flags
    pytest.param(run_args("--workers", "0"), "--workers", ["auto", ">= 1"], id="flag-workers"),
    pytest.param(run_args("--seeds", "-1"), "--seeds", [">= 0"], id="flag-seeds"),
    pytest.param(run_args("--checkpoint-every", "soon"), "--checkpoint-every", [">= 0"],
                 id="flag-checkpoint-every"),
    pytest.param(run_args("--colour"), "--colour", ["unrecognized"], id="flag-unknown"),
    pytest.param(["run", *SAFE, "--runs-dir", "{files}/typo.yml"], "--runs-dir",
                 ["not a folder"], id="flag-runs-dir-is-a-file"),
    # config files
    pytest.param(run_args("{files}/broken.yml"), "broken.yml", ["line 3", "column"],
                 id="yaml-broken"),
    pytest.param(run_args("{files}/list.yml"), "list.yml", ["key: value"], id="yaml-not-a-map"),
    pytest.param(run_args("{files}/options.yml"), "data_dir", ["--data-dir"],
                 id="yaml-command-line-key"),
    pytest.param(run_args("{files}/typed.yml"), "lr", ["a number", "> 0.0"],
                 id="yaml-wrong-type"),
    pytest.param(run_args("{files}/typo.yml"), "modle", ["did you mean model"],
                 id="yaml-unknown-key"),
    pytest.param(run_args("{files}/missing.yml"), "missing.yml", ["no file"],
                 id="yaml-no-file"),
    # sddlib sweep: grid files
    pytest.param(["sweep", "{files}/grid-typo.yml", "--runs-dir", "{runs}"], "base.modle",
                 ["did you mean model"], id="sweep-base-typo"),
    pytest.param(["sweep", "{files}/grid-rate.yml", "--runs-dir", "{runs}"], "grid.rate",
                 ["> 0.0", "< 1.0"], id="sweep-grid-value"),
    # sddlib show
    pytest.param(["show", "nothing-like-this", "--runs-dir", "{runs}"], "nothing-like-this",
                 ["mnist1d-n300-mlp-8-"], id="show-unknown"),
    pytest.param(["show", "mnist1d-n300-mlp", "--runs-dir", "{runs}"], "mnist1d-n300-mlp",
                 ["matches 2 runs", "seed0", "seed1"], id="show-ambiguous"),
]

# sddlib figures, in a project of its own (cwd), with the stored runs as its store
FIGURES = [
    pytest.param(["--profile", "huge"], "profile", ["smoke, quick, paper"], id="fig-profile"),
    pytest.param(["--only", "nope"], "nope", ["sdd-datasets, pruning-criteria"],
                 id="fig-only"),
    pytest.param(["-p", "colour=red"], "colour", ["not a parameter", "the closest: "],
                 id="fig-unknown"),
    pytest.param(["--only", "label-noise", "-p", "experiment.noise=2"], "experiment.noise",
                 ["0.0 to 1.0"], id="fig-experiment-value-checked"),
    pytest.param(["--only", "label-noise", "-p", "experiment.noise=0.4"], "experiment.noise",
                 ["sets its own noise", "noises"], id="fig-experiment-override-unused"),
    pytest.param(["-p", "experiment.rate=0"], "experiment.rate", ["> 0.0", "< 1.0"],
                 id="fig-experiment-rate"),
    pytest.param(["-p", "seeds=[a]"], "seeds", [">= 0"], id="fig-seeds"),
    pytest.param(["--profile", "smoke", "--only", "pruning-criteria", "-p",
                  "experiment.device=cuda"], "device", ["not on this machine"],
                 id="fig-device-not-here",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here")),
    pytest.param(["-p", "experiment.model=nope"], "experiment.model", ["mlp, cnn1d"],
                 id="fig-experiment-model"),
    pytest.param(["-p", "experiment.data_dir=/tmp"], "experiment.data_dir", ["--data-dir"],
                 id="fig-experiment-option-key"),
    pytest.param(["--only", "pruning-criteria", "-p", "criteria=[size]"], "criteria",
                 ["magnitude, gradient, random"], id="fig-criteria"),
    pytest.param(["--only", "label-noise", "-p", "noises={odd: {noise: 2}}"],
                 "noises.odd.noise", ["0.0 to 1.0"], id="fig-noises"),
    pytest.param(["--only", "theory", "-p", "network.widths=[0]"], "network.widths",
                 [">= 1"], id="fig-theory-widths"),
    pytest.param(["-p", "seeds=[0, 1"], "seeds", ["YAML"], id="fig-broken-yaml-value"),
    pytest.param(["--profile", "zero-rate"], "experiment.rate", ["> 0.0", "zero-rate"],
                 id="profile-bad-experiment"),
    pytest.param(["--profile", "negative-seeds"], "seeds", [">= 0", "negative-seeds"],
                 id="profile-bad-seeds"),
    pytest.param(["--profile", "ghost"], "no-such-page", ["sdd-datasets"],
                 id="profile-unknown-notebook"),
]


def check(code, captured, key, expected, world, before):
    err = captured.err
    lines = err.splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].strip(), err
    assert len(lines[0]) <= 320, f"{len(lines[0])} characters: {lines[0]}"  # one short line
    assert "Traceback" not in err + captured.out
    assert key in lines[0], lines[0]
    for text in expected:
        assert text in lines[0], lines[0]
    assert snapshot(world.runs) == before, "the run store changed"


@pytest.mark.parametrize("arguments, key, expected", CASES)
def test_bad_command_line_input(arguments, key, expected, world, store_guard, capsys,
                                no_notebooks):
    code = main(expand(arguments, world))
    check(code, capsys.readouterr(), key, expected, world, store_guard)


@pytest.mark.parametrize("arguments, key, expected", FIGURES)
def test_bad_figure_parameters_fail_before_any_notebook(arguments, key, expected, world,
                                                        store_guard, capsys, no_notebooks,
                                                        monkeypatch):
    monkeypatch.chdir(world.project)
    code = main(["figures", *arguments, "--runs-dir", str(world.runs)])
    check(code, capsys.readouterr(), key, expected, world, store_guard)


def test_a_broken_project_config_is_one_line(world, store_guard, capsys, no_notebooks,
                                             monkeypatch):
    monkeypatch.chdir(world.broken)
    code = main(["figures", "--runs-dir", str(world.runs)])
    check(code, capsys.readouterr(), "_config.yml", ["line 3", "column"], world, store_guard)


def test_the_table_is_big_enough():
    assert len(CASES) + len(FIGURES) + 1 >= 25


@pytest.mark.parametrize("arguments, cwd, key", [
    (run_args("--set", "rate=0"), None, "rate"),
    (run_args("{files}/broken.yml"), None, "broken.yml"),
    (["figures", "-p", "experiment.lr=0", "--runs-dir", "{runs}"], "project", "experiment.lr"),
], ids=["run-rate", "run-broken-yaml", "figures-lr"])
def test_the_installed_command_exits_2_in_one_line(arguments, cwd, key, world, store_guard):
    result = subprocess.run([str(SDDLIB), *expand(arguments, world)], capture_output=True,
                            text=True, cwd=world.project if cwd else None, timeout=120)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("sddlib ") and key in lines[0], lines
    assert "Traceback" not in result.stderr + result.stdout
    assert snapshot(world.runs) == store_guard
