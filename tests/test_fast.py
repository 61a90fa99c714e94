"""The GPU fast path (sddlib.engine.fast), checked on the CPU: its logic, not its speed.

Epoch-level augmentation draws, bf16 autocast with channels_last, torch.compile reused
across levels, and the config keys that switch them. The speed itself is measured by
``benchmarks/bench_gpu.py`` on a GPU, never here.
"""
import json

import pytest
import torch

from sddlib.config.fields import ConfigError, ExperimentConfig
from sddlib.engine import fast
from sddlib.engine.train import (
    Inputs,
    Recipe,
    checkpoint_payload,
    crop_flip,
    draw_crop_flip,
    evaluate,
    random_crop_flip,
    train_level,
)
from sddlib.models.architectures import build_model
from sddlib.pruning import prune

CPU = torch.device("cpu")


class Bundle:
    """Image-shaped data as a DataBundle holds them: uint8 NCHW, labels, mean and std.

    ``easy``: the class is which colour channel is brightened (class 3: none), which crops
    and flips keep, so a small conv net learns it in a few epochs.
    """
    def __init__(self, n=96, channels=1, side=8, easy=False, seed=0):
        generator = torch.Generator().manual_seed(seed)
        self.is_image = True
        self.y_train = torch.randint(0, 4, (n,), generator=generator)
        if easy:
            x = torch.randint(0, 150, (n, channels, side, side), generator=generator)
            for i, label in enumerate(self.y_train.tolist()):
                if label < channels:
                    x[i, label] += 100
            self.x_train = x.to(torch.uint8)
        else:
            self.x_train = torch.randint(0, 256, (n, channels, side, side), generator=generator,
                                         dtype=torch.uint8)
        self.y_train_clean = self.y_train.clone()
        self.corrupted = torch.zeros(n, dtype=torch.bool)
        self.x_test, self.y_test = self.x_train[:64], self.y_train[:64]
        self.mean, self.std = (0.3,) * channels, (0.3,) * channels


def recipe(**changes):
    values = dict(epochs=3, batch_size=32, optimizer="sgd", lr=0.05, momentum=0.9,
                  weight_decay=1e-4, schedule="multistep", milestones=[2], gamma=0.1,
                  augment=True)
    values.update(changes)
    return Recipe(**values)


def model_of(kind, seed=0, channels=1, side=8, width=4):
    """A masked model: ``mlp`` or ``vgglike`` (conv + BatchNorm; no 1x1 stride-2 convolution,
    whose channels_last backward crashes torch 2.14.1 on one CPU thread, see sddlib.engine.fast)."""
    torch.manual_seed(seed)
    config = (ExperimentConfig(model="mlp", widths=[32]) if kind == "mlp" else
              ExperimentConfig(dataset="cifar10", model="vgglike", width=width, depth=1))
    model = build_model(config, (channels, side, side), 4)
    prune.attach_masks(model, False)
    return model


def same_weights(a, b):
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name


# ---------------------------------------------------------------------------- augmentation
def test_an_epochs_draws_made_at_its_start_equal_the_per_step_draws():
    """So stored runs, the stacked ensemble and train_level see the same crops and flips."""
    images = torch.randint(0, 256, (100, 3, 8, 8), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(5))
    sizes = [32, 32, 32, 4]
    step_by_step = torch.Generator().manual_seed(7)
    expected = [random_crop_flip(images[sum(sizes[:k]):sum(sizes[:k + 1])], step_by_step)
                for k in range(len(sizes))]
    offsets, flips = draw_crop_flip(torch.Generator().manual_seed(7), sizes)
    assert offsets.shape == (2, 100) and flips.shape == (100,)
    for k, want in enumerate(expected):
        part = slice(sum(sizes[:k]), sum(sizes[:k + 1]))
        assert torch.equal(crop_flip(images[part], offsets[:, part], flips[part]), want)


@pytest.mark.parametrize("kind, speed", [
    ("mlp", fast.Speed()),
    ("vgglike", fast.Speed(precision="bf16", channels_last=True)),
])
def test_an_augmented_level_resumed_from_an_epoch_checkpoint_ends_with_the_same_weights(
        kind, speed):
    inputs = Inputs.from_bundle(Bundle(n=100), CPU)  # 100 in batches of 32: a short last one
    uninterrupted = model_of(kind)
    train_level(uninterrupted, inputs, recipe(), seed=3, level=2, speed=speed)

    saved = {}

    def die_after_epoch_one(event, state):
        if event == "epoch" and state.epoch == 1:
            saved.update(checkpoint_payload(state))
            saved["model"] = {k: v.clone() for k, v in saved["model"].items()}
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_level(model_of(kind), inputs, recipe(), seed=3, level=2,
                    callbacks=(die_after_epoch_one,), speed=speed)
    resumed = model_of(kind, seed=99)
    train_level(resumed, inputs, recipe(), seed=3, level=2, resume=saved, speed=speed)
    same_weights(uninterrupted, resumed)
    unaugmented = model_of(kind)
    train_level(unaugmented, inputs, recipe(augment=False), seed=3, level=2, speed=speed)
    assert not torch.equal(unaugmented.fc.weight if kind == "vgglike" else
                           unaugmented.output.weight,
                           uninterrupted.fc.weight if kind == "vgglike" else
                           uninterrupted.output.weight)


# ---------------------------------------------------------------------------- bf16
def test_bf16_channels_last_training_reaches_the_fp32_accuracy():
    """The fast run reproduces the slow run's accuracy, scaled down: within 5 points."""
    inputs = Inputs.from_bundle(Bundle(n=512, channels=3, easy=True), CPU)
    test = Inputs.from_bundle(Bundle(n=512, channels=3, easy=True, seed=1), CPU)
    accuracies, models = {}, {}
    for name, speed in (("fp32", fast.Speed()),
                        ("bf16", fast.Speed(precision="bf16", channels_last=True))):
        model = model_of("vgglike", channels=3, width=8)
        train_level(model, inputs, recipe(epochs=4, batch_size=64, milestones=[3]),
                    seed=0, level=0, speed=speed)
        correct, loss = evaluate(model, test, test.x_train, test.y_train, speed=speed)
        accuracies[name], models[name] = correct.float().mean().item(), model
        assert loss == loss  # finite, not nan
    conv = models["bf16"].features[0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last)
    assert not torch.equal(conv, models["fp32"].features[0].weight)  # bf16 really rounded
    assert accuracies["fp32"] >= 0.9, accuracies
    assert abs(accuracies["bf16"] - accuracies["fp32"]) <= 0.05, accuracies


# ---------------------------------------------------------------------------- compile
def test_compiled_training_compiles_once_for_all_levels_and_matches_eager():
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    inputs = Inputs.from_bundle(Bundle(n=64, channels=3), CPU)  # two full batches an epoch
    compiled = fast.Speed(compile=True)
    short = recipe(epochs=1, milestones=[])
    for level in range(2):  # each level builds a new model, as Experiment.prepare_level does
        model = model_of("vgglike", seed=level, channels=3)
        if level:
            masks = prune.prune_masks(prune.magnitude_scores(model), prune.get_masks(model), 0.5)
            prune.set_masks(model, masks)
        train_level(model, inputs, short, seed=0, level=level, speed=compiled)
        assert prune.check_masks_hold(model) is None
        assert counters["stats"]["unique_graphs"] == 1, dict(counters["stats"])
        assert counters["frames"]["ok"] == 1, dict(counters["frames"])

    eager = model_of("vgglike", seed=5, channels=3)
    twin = model_of("vgglike", seed=5, channels=3)
    x, y = inputs.prepare(inputs.x_train[:32]), inputs.y_train[:32]
    assert torch.allclose(fast.model_loss(compiled)(twin, x, y),
                          fast.model_loss(fast.Speed())(eager, x, y), atol=1e-5)
    train_level(eager, inputs, short, seed=1, level=3)
    train_level(twin, inputs, short, seed=1, level=3, speed=compiled)
    for (name, a), (_, b) in zip(eager.state_dict().items(), twin.state_dict().items()):
        assert torch.allclose(a.float(), b.float(), atol=1e-4), name
    assert counters["frames"]["ok"] == 1  # the new model and the new level reused the graph


# ---------------------------------------------------------------------------- config
@pytest.mark.parametrize("sets, key, allowed", [
    (["precision=fp16"], "precision", "auto, fp32, bf16"),
    (["compile=maybe"], "compile", "auto, on, off"),
])
def test_bad_precision_or_compile_names_the_key_and_allowed_values(sets, key, allowed):
    with pytest.raises(ConfigError) as error:
        ExperimentConfig().with_sets(sets)
    message = str(error.value)
    assert message.startswith(f"{key}:") and allowed in message and "\n" not in message


def test_bf16_changes_the_identity_compile_does_not():
    base = ExperimentConfig()
    assert base.replace(precision="auto").short_hash() == base.short_hash()
    assert "precision" not in base.legacy_identity()  # runs stored before it keep their hash
    assert base.replace(precision="bf16").short_hash() != base.short_hash()
    assert base.replace(precision="fp32").short_hash() != base.short_hash()
    assert base.replace(compile="on").short_hash() == base.short_hash()
    assert ExperimentConfig(compile=True).compile == "on"  # YAML's bare `on` is a bool
    assert ExperimentConfig(compile=False).compile == "off"


def test_auto_resolves_to_the_plain_path_on_the_cpu():
    assert fast.Speed.resolve("cpu") == fast.Speed("fp32", False, False)
    assert fast.Speed.resolve("cpu", "bf16", "on") == fast.Speed("bf16", True, False)


def test_meta_records_the_resolved_precision_and_compile(tiny_config, tmp_path, data_dir):
    from sddlib.engine.experiment import run_experiment
    from sddlib.storage.store import RunStore

    store = RunStore(tmp_path / "runs")
    plain = run_experiment(tiny_config.replace(levels=0, epochs=1), store, progress=False,
                           data_dir=data_dir)
    bf16 = run_experiment(tiny_config.replace(levels=0, epochs=1, precision="bf16"), store,
                          progress=False, data_dir=data_dir)
    assert plain.name != bf16.name
    meta = json.loads(plain.file("meta.json").read_text())
    assert (meta["device"], meta["precision"], meta["compile"]) == ("cpu", "fp32", "off")
    assert json.loads(bf16.file("meta.json").read_text())["precision"] == "bf16"
    plain_row, bf16_row = plain.levels().iloc[0], bf16.levels().iloc[0]
    assert abs(plain_row.test_acc - bf16_row.test_acc) < 0.1


def test_the_step_loop_never_reads_a_tensor_on_the_host(monkeypatch):
    """No .item(), float(), bool() or .tolist() of a tensor while a level trains: on a GPU
    each would wait for the device (they are caught here at the Python level)."""
    inputs = Inputs.from_bundle(Bundle(n=100, channels=3), CPU)

    def forbidden(*args, **kwargs):
        raise AssertionError("host synchronisation in the step loop")

    model = model_of("vgglike", channels=3)
    for name in ("item", "tolist", "__bool__", "__float__", "__int__", "__index__", "numpy"):
        monkeypatch.setattr(torch.Tensor, name, forbidden)
    for optimizer in ("sgd", "adam"):
        train_level(model, inputs, recipe(epochs=2, optimizer=optimizer), seed=0, level=0,
                    speed=fast.Speed(precision="bf16", channels_last=True))
    with pytest.raises(AssertionError, match="host synchronisation"):  # the patch does bite
        evaluate(model, inputs, inputs.x_test, inputs.y_test)  # evaluation reads once, at its end
