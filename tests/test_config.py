import pytest

from sddlib.config.fields import ConfigError, ExperimentConfig, help_table

# Every field at an explicit value: if a field is added without being left out of the
# identity at its default (config._ONLY_IF), the identity of every stored run changes and
# this hash with it.
FROZEN = dict(
    dataset="mnist1d", train_size=4000, test_size=1000, image_size=None, noise=0.2,
    noise_kind="random", augment=None, model="mlp", widths=[300, 100], width=64, depth=5,
    criterion="magnitude", scope="global", rate=0.2, prune_output=None, gradient_batches=8,
    retrain="lottery", rewind_iteration=0, finetune_lr=1e-3, epochs=30, batch_size=128,
    optimizer="adam", lr=1e-3, momentum=0.9, weight_decay=0.0, schedule="constant",
    milestones=[], gamma=0.1, seed=0, levels=25, device="auto")
FROZEN_HASH = "10c85a1eca"  # identity version 2
FROZEN_LEGACY_HASH = "9cd1ba3fdc"  # the first identity


def test_identity_of_stored_runs_never_changes():
    config = ExperimentConfig(**FROZEN)
    assert config.short_hash() == FROZEN_HASH
    # the first identity, kept to find runs stored under it, never changes either
    assert config.legacy_run_name() == \
        f"mnist1d-mlp-random20-magnitude-lottery-seed0-{FROZEN_LEGACY_HASH}"


def test_fields_outside_identity_do_not_change_the_hash():
    base = ExperimentConfig(**FROZEN)
    assert base.replace(levels=3, device="cpu").short_hash() == base.short_hash()
    assert base.replace(seed=1).short_hash() != base.short_hash()
    assert base.replace(noise=0.4).run_name() != base.run_name()


@pytest.mark.parametrize("changes", [
    {"momentum": 0.5},                     # under Adam
    {"finetune_lr": 0.5},                  # outside finetune
    {"depth": 3},                          # outside vgglike
    {"width": 16},                         # the MLP reads widths
    {"gradient_batches": 2},               # under magnitude pruning
    {"milestones": [3], "gamma": 0.5},     # under a constant schedule
    {"noise_kind": "symmetric", "noise": 0.0},
    {"train_size": None, "test_size": None, "prune_output": False, "augment": False},
    {"image_size": 40},                    # mnist1d has no images: resolved to none
])
def test_a_setting_that_does_nothing_does_not_change_the_name(changes):
    base = ExperimentConfig(**{**FROZEN, "train_size": 8000, "test_size": 2000,
                               "noise": 0.2 if "noise" not in changes else 0.0})
    if "image_size" in changes:
        with pytest.raises(ConfigError):
            base.replace(**changes)
        return
    assert base.replace(**changes).run_name() == base.run_name()


def test_settings_that_matter_change_the_name():
    base = ExperimentConfig(**FROZEN)
    sgd = base.replace(optimizer="sgd", lr=0.1)
    assert sgd.replace(momentum=0.5).run_name() != sgd.run_name()
    finetune = base.replace(retrain="finetune")
    assert finetune.replace(finetune_lr=0.5).run_name() != finetune.run_name()
    cnn = base.replace(model="cnn1d", width=None)
    assert cnn.replace(width=16).run_name() != cnn.run_name()
    assert cnn.replace(width=32).run_name() == cnn.run_name()  # none means 32
    gradient = base.replace(criterion="gradient")
    assert gradient.replace(gradient_batches=2).run_name() != gradient.run_name()
    assert base.replace(rewind_iteration=5).run_name() != base.run_name()
    assert base.replace(retrain="scratch", rewind_iteration=5).run_name() == \
        base.replace(retrain="scratch").run_name()


def test_readable_names_tell_branches_and_sizes_apart():
    base = ExperimentConfig(**FROZEN)
    assert base.readable_name() == \
        "mnist1d-n4000-mlp-300x100-random20-magnitude-lottery-t1000-seed0"
    assert base.replace(redense_level=3).readable_name() == \
        "mnist1d-n4000-mlp-300x100-random20-magnitude-lottery-redense3-t1000-seed0"
    assert base.replace(model="cnn1d", train_size=8000, test_size=2000).readable_name() == \
        "mnist1d-cnn1d-w64-random20-magnitude-lottery-seed0"


def test_every_setting_of_the_identity_that_differs_from_its_default_shows_in_the_name():
    """Runs that differ in weight decay or the validation split once shared a readable
    name; now every identity setting off its default is in it, and runs of different
    identities never share one."""
    lenet = ExperimentConfig(dataset="mnist-5k", model="mlp", optimizer="sgd", lr=0.1,
                             momentum=0.0, epochs=40)
    assert lenet.readable_name() == \
        "mnist-5k-mlp-300x100-random20-magnitude-lottery-e40-sgd-lr0.1-mom0-seed0"
    assert "-wd5e-3-" in lenet.replace(weight_decay=0.005).readable_name()
    assert "-val500-" in lenet.replace(validation_size=500).readable_name()
    variants = [lenet, lenet.replace(weight_decay=0.005), lenet.replace(weight_decay=5e-4),
                lenet.replace(validation_size=500), lenet.replace(batch_size=64),
                lenet.replace(schedule="multistep", milestones=[20, 30]),
                lenet.replace(schedule="multistep", milestones=[10, 30]),
                lenet.replace(scope="layerwise"), lenet.replace(rate=0.5),
                lenet.replace(validation_size=500, distill_from="best-fit"),
                lenet.replace(validation_size=500, distill_from="best-fit",
                              distill_temperature=4.0)]
    names = [config.readable_name() for config in variants]
    assert len(set(names)) == len(names), names
    # settings that do nothing for a run stay out (momentum under adam) and so do defaults
    assert ExperimentConfig(momentum=0.5).readable_name() == ExperimentConfig().readable_name()


def test_a_run_stored_under_an_older_readable_name_is_found_and_renamed(tmp_path):
    """Same identity (hash), shorter old name: found, moved once to the new name."""
    import json

    from sddlib.storage.store import RunStore

    store = RunStore(tmp_path)
    config = ExperimentConfig(**FROZEN).replace(weight_decay=0.005)
    run = store.create(config, "cpu")
    old = tmp_path / ("mnist1d-n4000-mlp-300x100-random20-magnitude-lottery-seed0-"
                      f"{config.short_hash()}")
    run.path.rename(old)
    found = store.find(config)
    assert found is not None and found.path == store.path_for(config) and not old.exists()
    assert json.loads((found.path / "meta.json").read_text())["renamed_from"] == old.name


def test_a_config_is_immutable_once_built():
    import dataclasses

    config = ExperimentConfig(**FROZEN)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.lr = 0.5
    assert config.replace(lr=0.5).lr == 0.5 and config.lr == 1e-3


@pytest.mark.parametrize("sets, key, allowed", [
    (["criterion=size"], "criterion", "magnitude, gradient, random"),
    (["noise=1.5"], "noise", "0.0 to 1.0"),
    (["epochs=many"], "epochs", "an integer"),
    (["retrain=rewind"], "retrain", "lottery, finetune, lr-rewind, scratch, reinit"),
    (["colour=red"], "colour", "(every key: sddlib keys)"),
    (["batchsize=64"], "batchsize", "did you mean batch_size?"),
    (["levels=-1"], "levels", ">= 0"),
    (["device=tpu"], "device", "auto, cpu, cuda"),
    (["augment=maybe"], "augment", "true or false"),
    (["dataset=imagenet"], "dataset", "mnist1d, mnist-5k, digits"),
    (["noise_kind=gaussian"], "noise_kind", "random, symmetric, asymmetric, pairflip"),
])
def test_bad_input_names_the_key_and_allowed_values(sets, key, allowed):
    with pytest.raises(ConfigError) as error:
        ExperimentConfig().with_sets(sets)
    message = str(error.value)
    assert message.startswith(f"{key}:") and allowed in message and "\n" not in message


def test_sets_parse_types():
    config = ExperimentConfig().with_sets(
        ["model=mlp", "widths=300,100", "lr=0.1", "optimizer=sgd", "augment=false",
         "train_size=none", "dataset=digits", "seed=3"])
    assert config.widths == [300, 100] and config.lr == 0.1 and config.augment is False
    assert config.train_size is None and config.seed == 3


def test_inconsistent_combinations_are_refused():
    with pytest.raises(ConfigError, match="^model:"):
        ExperimentConfig(model="resnet18")  # mnist1d is not an image set
    with pytest.raises(ConfigError, match="^model:"):
        ExperimentConfig(dataset="cifar10", model="cnn1d")


def test_help_lists_every_key_with_allowed_values():
    keys = {row[0]: row[2] for row in help_table()}
    for required in ("dataset", "model", "noise", "noise_kind", "criterion", "scope", "rate",
                     "levels", "retrain", "rewind_iteration", "epochs", "batch_size",
                     "optimizer", "lr", "weight_decay", "seed", "device"):
        assert required in keys
    assert "lottery, finetune" in keys["retrain"]


def test_one_override_grammar_for_set_p_and_files():
    from sddlib.config.fields import parse_assignments

    base = ExperimentConfig(schedule="multistep", optimizer="sgd", lr=0.1)
    yaml_list = base.with_sets(["milestones=[80, 120]", "noise-kind=symmetric", "lr=1e-3",
                                "augment=null", "widths=300"])
    comma_list = base.with_sets(["milestones=80,120", "noise_kind=symmetric", "lr=0.001",
                                 "augment=none", "widths=[300]"])
    assert yaml_list == comma_list
    assert yaml_list.milestones == [80, 120] and yaml_list.widths == [300]
    # -p: the same values, dotted keys into dict parameters
    assert parse_assignments(["experiment.milestones=[80, 120]", "seeds=[0,1]"]) == \
        {"experiment": {"milestones": [80, 120]}, "seeds": [0, 1]}
    with pytest.raises(ConfigError, match="^experiment: --set takes config keys, not dotted ones"):
        base.with_sets(["experiment.lr=0.1"])
