import pytest
import torch

from sddlib.config.fields import ExperimentConfig
from sddlib.engine.ensemble import train_level_stacked
from sddlib.engine.train import Inputs, Recipe, train_level
from sddlib.models.architectures import build_model
from sddlib.pruning import prune

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


def assert_same_training(alone, stacked, distinct=True):
    for one, together in zip(alone, stacked):
        assert prune.check_masks_hold(together) is None
        for (name, a), (_, b) in zip(one.state_dict().items(), together.state_dict().items()):
            assert torch.allclose(a, b, rtol=0, atol=ATOL), (name, (a - b).abs().max().item())
    if distinct:  # the members really are different runs
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
    from sddlib.scheduling.groups import stack_groups
    from sddlib.scheduling.sweep import run_many
    from sddlib.storage.store import RunStore, load_torch

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


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_a_member_checkpoint_is_a_single_run_checkpoint_and_resumes_either_way(optimizer):
    from sddlib.engine.ensemble import member_checkpoint
    from sddlib.engine.train import checkpoint_payload

    config = ExperimentConfig(model="mlp", widths=[32])
    recipe = Recipe(epochs=3, batch_size=32, optimizer=optimizer, lr=0.01, momentum=0.9,
                    weight_decay=1e-4, schedule="multistep", milestones=[2], gamma=0.1,
                    augment=False)
    inputs = [Inputs.from_bundle(Bundle(seed), torch.device("cpu")) for seed in SEEDS]
    caught = {}

    def keep(event, state):
        if event == "epoch" and state.epoch == 1:
            caught["members"] = [member_checkpoint(state, k) for k in range(len(SEEDS))]
    uninterrupted = [member(seed, config, (40,), 2) for seed in SEEDS]
    train_level_stacked(uninterrupted, inputs, recipe, seeds=list(SEEDS), level=1,
                        callbacks=(keep,))
    checkpoints = caught["members"]
    assert {payload["iteration"] for payload in checkpoints} == {7}  # 200 samples / 32
    # the same keys, shapes and hyperparameters as a lone run's checkpoint
    lone = train_level(member(SEEDS[1], config, (40,), 2), inputs[1],
                       Recipe(**{**recipe.__dict__, "epochs": 1}), seed=SEEDS[1], level=1)
    single, ours = checkpoint_payload(lone), checkpoints[1]
    assert {k: v.shape for k, v in single["model"].items()} == \
        {k: v.shape for k, v in ours["model"].items()}
    assert single["optimizer"]["param_groups"] == ours["optimizer"]["param_groups"]
    assert single["optimizer"]["state"].keys() == ours["optimizer"]["state"].keys()
    for index, entry in single["optimizer"]["state"].items():
        assert {k: (v.shape, v.dtype) for k, v in entry.items()} == \
            {k: (v.shape, v.dtype) for k, v in ours["optimizer"]["state"][index].items()}
    # each member's state is its own slice, not the stack's
    moments = "exp_avg" if optimizer == "adam" else "momentum_buffer"
    assert not torch.equal(checkpoints[0]["optimizer"]["state"][0][moments],
                           checkpoints[1]["optimizer"]["state"][0][moments])
    # a group resumes from its members' checkpoints to the same weights, bit for bit
    resumed = [member(seed, config, (40,), 2) for seed in SEEDS]
    train_level_stacked(resumed, inputs, recipe, seeds=list(SEEDS), level=1,
                        resume=checkpoints)
    for one, other in zip(uninterrupted, resumed):
        for (name, a), b in zip(one.state_dict().items(), other.state_dict().values()):
            assert torch.equal(a, b), name
    # and one member resumes alone from its checkpoint, to float rounding
    alone = member(SEEDS[2], config, (40,), 2)
    train_level(alone, inputs[2], recipe, seed=SEEDS[2], level=1, resume=checkpoints[2])
    assert_same_training([alone], [uninterrupted[2]], distinct=False)


def test_gather_stacks_across_variants_and_labels_each_variants_rows(tiny_config, tmp_path,
                                                                     data_dir, monkeypatch):
    from sddlib.book import figures, profiles
    from sddlib.config.project import ProjectSettings
    from sddlib.engine import ensemble

    for module in (figures, profiles):
        monkeypatch.setattr(module, "load_settings",
                            lambda: ProjectSettings(tmp_path, tmp_path / "runs", data_dir))
    monkeypatch.setenv("SDDLIB_PROGRESS", "0")
    monkeypatch.setenv("SDDLIB_STACK", "1")  # the default, auto, stacks only on CUDA
    sizes, original = [], ensemble.train_level_stacked

    def counting(models, *args, **kwargs):
        sizes.append(len(models))
        return original(models, *args, **kwargs)
    monkeypatch.setattr(ensemble, "train_level_stacked", counting)
    base = tiny_config.replace(levels=1, epochs=1, train_size=300, test_size=100)
    shared = base.replace(noise=0.4)
    variants = {"seeds": [base, base.replace(seed=1)],
                "noise": [shared, base],                        # base is in both variants
                "short": [shared.replace(levels=0)]}            # the same run, fewer levels
    with pytest.raises(RuntimeError, match="no finished runs"):
        figures.gather(variants, compute_missing=False)
    assert sizes == []
    frame = figures.gather(variants, label="which")
    assert sizes == [3, 3]  # one group of the three distinct runs, levels 0 and 1
    runs = {name: list(group.run.unique()) for name, group in frame.groupby("which", sort=False)}
    assert list(runs) == ["seeds", "noise", "short"]
    assert runs["seeds"][0] == runs["noise"][1] == base.run_name()
    assert runs["noise"][0] == runs["short"][0] == shared.run_name()
    assert list(frame[frame.which == "short"].level) == [0]
    assert len(frame) == 2 * 2 + 2 * 2 + 1
    # unset (auto) on the CPU: the same runs trained one by one, in a store of their own
    monkeypatch.delenv("SDDLIB_STACK")
    for module in (figures, profiles):
        monkeypatch.setattr(module, "load_settings",
                            lambda: ProjectSettings(tmp_path, tmp_path / "alone", data_dir))
    alone = figures.gather(variants, label="which")
    assert sizes == [3, 3]
    assert (alone.test_loss - frame.test_loss).abs().max() < 1e-4
    monkeypatch.setenv("SDDLIB_STACK", "yes")
    with pytest.raises(ValueError, match="SDDLIB_STACK: 'yes' is not allowed; allowed: auto, 1, 0"):
        figures.gather(variants, label="which")


def test_stacked_bf16_runs_train_under_autocast_and_record_their_precision(tiny_config, tmp_path,
                                                                            data_dir):
    """precision=bf16 reaches the stacked members: their weights differ from fp32 training
    (autocast really ran), masks still hold, and meta.json says bf16 and no compile."""
    import json

    from sddlib.scheduling.sweep import run_many
    from sddlib.storage.store import RunStore, load_torch

    base = tiny_config.replace(levels=1)
    configs = {p: [base.replace(precision=p), base.replace(precision=p, seed=1)]
               for p in ("fp32", "bf16")}
    stores = {p: RunStore(tmp_path / p) for p in configs}
    frames = {p: run_many(configs[p], stores[p], progress=False, data_dir=data_dir, stack=True)
              for p in configs}
    for config in configs["bf16"]:
        run = stores["bf16"].find(config)
        meta = json.loads((run.path / "meta.json").read_text())
        assert meta["precision"] == "bf16" and meta["compile"] == "off"
        assert meta["trained_as"]["stacked_with"]
    fp32 = load_torch(stores["fp32"].find(configs["fp32"][0]).level_dir(1) / "final.pt")
    bf16 = load_torch(stores["bf16"].find(configs["bf16"][0]).level_dir(1) / "final.pt")
    weights = [k for k in fp32 if k.endswith("weight")]
    assert max(float((fp32[k] - bf16[k]).abs().max()) for k in weights) > 1e-4
    for key in weights:
        mask = bf16.get(f"{key}_mask")
        if mask is not None:
            assert torch.all(bf16[key][mask == 0] == 0)
    # the recipe is unchanged: accuracies stay close
    gap = (frames["fp32"].test_acc.values - frames["bf16"].test_acc.values)
    assert abs(gap).max() < 0.1
