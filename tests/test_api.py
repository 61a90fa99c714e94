"""The public API: what ``from sddlib import ...`` gives a researcher."""
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import sddlib
from sddlib import (
    ConfigError,
    ExperimentConfig,
    RunStore,
    load_runs,
    register_criterion,
    register_dataset,
    register_model,
    run,
    run_many,
)

EXAMPLE = Path(__file__).parents[1] / "examples" / "own_model.py"


def test_the_package_exports_the_api():
    assert set(sddlib.__all__) >= {"ExperimentConfig", "run", "run_many", "RunStore",
                                   "load_runs", "register_model", "register_dataset",
                                   "register_criterion"}


def test_a_script_prunes_its_own_model_with_only_sddlib_names(tmp_path):
    text = EXAMPLE.read_text()
    imports = [line for line in text.splitlines() if line.startswith(("import", "from"))]
    assert [line for line in imports if "sddlib" in line] == \
        ["from sddlib import ExperimentConfig, register_model, run"]
    done = subprocess.run([sys.executable, str(EXAMPLE)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    folder = Path(done.stdout.strip().splitlines()[-1])
    assert folder.parent == tmp_path / "data" / "runs" and "-tiny-" in folder.name
    runpy.run_path(str(EXAMPLE))  # registers "tiny" here too, to read its runs back
    frame = load_runs(tmp_path / "data" / "runs")
    assert list(frame.level) == [0, 1, 2, 3, 4] and frame.model.unique().tolist() == ["tiny"]
    # the head stayed dense: 20% of the body's weights go each level
    assert frame.sparsity.iloc[-1] == pytest.approx(1 - 0.8 ** 4, abs=0.01)


def test_own_dataset_and_criterion_run_through_the_same_engine(tmp_path):
    def read(data_dir, download):
        x = torch.randn(300, 12, generator=torch.Generator().manual_seed(0))
        y = (x[:, 0] > 0).long() + 2 * (x[:, 1] > 0).long()
        return x[:200], y[:200], x[200:], y[200:], None, None

    register_dataset("toy-signals", read, num_classes=4, input_shape=(12,), train_size=200,
                     test_size=100, kind="signal")
    calls = []

    def smallest_first(model, inputs):
        calls.append(inputs.seed)
        return {name: -param.detach().abs() for name, param in model.named_parameters()
                if name.endswith("weight") and name + "_mask" in dict(model.named_buffers())}

    register_criterion("anti-magnitude", smallest_first)
    config = ExperimentConfig(dataset="toy-signals", model="mlp", widths=[16],
                              criterion="anti-magnitude", epochs=2, levels=2, device="cpu")
    frame = run_many([config, config.replace(seed=1)], RunStore(tmp_path / "runs"),
                     data_dir=tmp_path, progress=False)
    assert len(frame) == 6 and len(calls) == 4
    single = run(config, tmp_path / "runs", data_dir=tmp_path, progress=False)
    assert single.is_finished() and single.meta()["data"]["train_size"] == 200
    with pytest.raises(ConfigError, match="criterion: 'nope' is not allowed; allowed: .*"
                                          "anti-magnitude"):
        config.replace(criterion="nope")
    with pytest.raises(ConfigError, match="needs image data"):
        config.replace(model="resnet18")


def test_register_model_checks_what_it_is_told():
    with pytest.raises(ValueError, match="reads: 'audio' is not allowed"):
        register_model("bad", lambda c, s, k: None, reads="audio")
