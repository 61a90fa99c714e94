import pytest

from sddlib.config import ConfigError, ExperimentConfig, _ADDED_LATER, help_table

# Every field at an explicit value: if a field is added without an entry in _ADDED_LATER,
# the identity of every stored run changes and this hash with it.
FROZEN = dict(
    dataset="mnist1d", train_size=4000, test_size=1000, image_size=None, noise=0.2,
    noise_kind="random", augment=None, model="mlp", widths=[300, 100], width=64, depth=5,
    criterion="magnitude", scope="global", rate=0.2, prune_output=None, gradient_batches=8,
    retrain="lottery", rewind_iteration=0, finetune_lr=1e-3, epochs=30, batch_size=128,
    optimizer="adam", lr=1e-3, momentum=0.9, weight_decay=0.0, schedule="constant",
    milestones=[], gamma=0.1, seed=0, levels=25, device="auto")
FROZEN_HASH = "9cd1ba3fdc"


def test_identity_of_stored_runs_never_changes():
    assert ExperimentConfig(**FROZEN).short_hash() == FROZEN_HASH


def test_fields_outside_identity_do_not_change_the_hash():
    base = ExperimentConfig(**FROZEN)
    assert base.replace(levels=3, device="cpu").short_hash() == base.short_hash()
    assert base.replace(seed=1).short_hash() != base.short_hash()
    assert base.replace(noise=0.4).run_name() != base.run_name()


def test_a_field_added_later_keeps_old_identities(monkeypatch):
    base = ExperimentConfig(**FROZEN)
    monkeypatch.setitem(_ADDED_LATER, "gamma", 0.1)  # pretend gamma arrived later
    assert base.short_hash() != FROZEN_HASH  # dropping it changes the text hashed ...
    assert "gamma" not in base.identity()    # ... because at its default it is left out
    assert "gamma" in base.replace(gamma=0.5).identity()


def test_readable_name():
    name = ExperimentConfig(**FROZEN).run_name()
    assert name == f"mnist1d-mlp-random20-magnitude-lottery-seed0-{FROZEN_HASH}"


@pytest.mark.parametrize("sets, key, allowed", [
    (["criterion=size"], "criterion", "magnitude, gradient, random"),
    (["noise=1.5"], "noise", "0.0 to 1.0"),
    (["epochs=many"], "epochs", "an integer"),
    (["retrain=rewind"], "retrain", "lottery, finetune, lr-rewind, scratch, reinit"),
    (["colour=red"], "colour", "batch_size"),
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
        ["model=mlp", "widths=300,100", "lr=0.1", "optimizer=sgd", "augment=false", "train_size=none",
         "dataset=digits", "seed=3"])
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
