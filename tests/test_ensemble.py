import pytest
import torch

from sddlib import prune
from sddlib.config import ExperimentConfig
from sddlib.ensemble import train_level_stacked
from sddlib.models import build_model
from sddlib.train import Inputs, Recipe, train_level

# Stacked members sum their convolutions and matmuls in another order than a lone model,
# so weights agree to float rounding, not bit for bit.
ATOL = 1e-5
SEEDS = (0, 1, 2)


class Bundle:
    """The fields of a DataBundle that training reads; the labels differ by seed (noise)."""
    def __init__(self, seed, n=200, image=False):
        shared = torch.Generator().manual_seed(0)
        self.is_image = image
        self.x_train = (torch.randint(0, 256, (n, 1, 8, 8), generator=shared, dtype=torch.uint8)
                        if image else torch.randn(n, 40, generator=shared))
        self.y_train_clean = torch.randint(0, 10, (n,), generator=shared)
        noisy = torch.rand(n, generator=torch.Generator().manual_seed(100 + seed)) < 0.3
        self.y_train = torch.where(noisy, (self.y_train_clean + 1 + seed) % 10,
                                   self.y_train_clean)
        self.corrupted = self.y_train != self.y_train_clean
        self.x_test, self.y_test = self.x_train[:50], self.y_train[:50]
        self.mean, self.std = ((0.5,), (0.25,)) if image else (None, None)


def member(seed, config, input_shape, sparsity_level):
    """A model initialised from ``seed`` with random masks of its own, pruned weights zero."""
    torch.manual_seed(seed)
    model = build_model(config, input_shape, 10)
    prune.attach_masks(model, False)
    masks = prune.get_masks(model)
    for _ in range(sparsity_level):
        masks = prune.prune_masks(prune.random_scores(model, 1000 + seed), masks, 0.3)
    prune.set_masks(model, masks)
    return model


def stacked_and_alone(config, input_shape, recipe, image=False):
    inputs = [Inputs.from_bundle(Bundle(seed, image=image), torch.device("cpu"))
              for seed in SEEDS]
    alone = [member(seed, config, input_shape, 2) for seed in SEEDS]
    stacked = [member(seed, config, input_shape, 2) for seed in SEEDS]
    for model, data, seed in zip(alone, inputs, SEEDS):
        train_level(model, data, recipe, seed=seed, level=1)
    train_level_stacked(stacked, inputs, recipe, seeds=list(SEEDS), level=1)
    return alone, stacked


def assert_same_training(alone, stacked):
    for one, together in zip(alone, stacked):
        assert prune.check_masks_hold(together) is None
        for (name, a), (_, b) in zip(one.state_dict().items(), together.state_dict().items()):
            assert torch.allclose(a, b, rtol=0, atol=ATOL), (name, (a - b).abs().max().item())
    # the members really are different runs
    assert not torch.allclose(stacked[0].output.weight, stacked[1].output.weight)


def test_stacked_cnn1d_with_adam_equals_training_each_member_alone():
    config = ExperimentConfig(model="cnn1d", width=8)
    recipe = Recipe(epochs=2, batch_size=32, optimizer="adam", lr=1e-3, momentum=0.9,
                    weight_decay=0.0, schedule="constant", milestones=[], gamma=0.1,
                    augment=False)
    assert_same_training(*stacked_and_alone(config, (40,), recipe))


def test_stacked_sgd_with_augmentation_schedule_and_rewind_equals_training_alone():
    config = ExperimentConfig(model="mlp", widths=[32])
    recipe = Recipe(epochs=2, batch_size=32, optimizer="sgd", lr=0.05, momentum=0.9,
                    weight_decay=1e-4, schedule="multistep", milestones=[1], gamma=0.1,
                    augment=True, start_iteration=2)
    assert_same_training(*stacked_and_alone(config, (1, 8, 8), recipe, image=True))


def test_batchnorm_models_are_refused_with_a_reason():
    config = ExperimentConfig(dataset="cifar10", model="vgglike", width=4, depth=1)
    models = [build_model(config, (3, 8, 8), 10) for _ in range(2)]
    inputs = [Inputs.from_bundle(Bundle(0, image=True), torch.device("cpu"))] * 2
    recipe = Recipe(1, 32, "sgd", 0.1, 0.9, 0.0, "constant", [], 0.1, False)
    with pytest.raises(ValueError, match="BatchNorm"):
        train_level_stacked(models, inputs, recipe, seeds=[0, 1], level=0)


def test_run_many_stacked_stores_each_run_as_training_alone_does(tiny_config, tmp_path,
                                                                  data_dir):
    from sddlib.experiment import run_many, stack_groups
    from sddlib.store import RunStore, load_torch

    configs = [tiny_config, tiny_config.replace(seed=1, criterion="gradient"),
               tiny_config.replace(noise=0.1, criterion="random"),
               tiny_config.replace(model="cnn1d", width=4)]  # another shape: trained alone
    assert sorted(len(group) for group in stack_groups(configs)) == [1, 3]
    alone_store, stacked_store = RunStore(tmp_path / "alone"), RunStore(tmp_path / "stacked")
    alone = run_many(configs[:3], alone_store, progress=False, data_dir=data_dir)
    stacked = run_many(configs[:3], stacked_store, progress=False, data_dir=data_dir,
                       stack=True)
    assert len(stacked) == len(alone) == 3 * (tiny_config.levels + 1)
    columns = [c for c in alone.columns if c not in ("run", "seconds")
               and alone[c].dtype.kind == "f"]
    merged = alone.merge(stacked, on=["run", "level"], suffixes=("", "_stacked"))
    for column in columns:
        assert (merged[column] - merged[f"{column}_stacked"]).abs().max() < 1e-4, column
    for config in configs[:3]:
        one, many = alone_store.find(config), stacked_store.find(config)
        files = sorted(p.relative_to(one.path) for p in one.path.rglob("*") if p.is_file())
        assert files == sorted(p.relative_to(many.path) for p in many.path.rglob("*")
                               if p.is_file())
        for level in range(tiny_config.levels + 1):
            for name in ("mask.pt", "final.pt"):
                a = load_torch(one.level_dir(level) / name)
                b = load_torch(many.level_dir(level) / name)
                for key in a:
                    assert torch.allclose(a[key], b[key], rtol=0, atol=ATOL), (level, key)
