import pytest
import torch

from sddlib.config.fields import ExperimentConfig
from sddlib.engine.train import Inputs, Recipe, checkpoint_payload, random_crop_flip, train_level
from sddlib.models.architectures import build_model
from sddlib.pruning import prune


class Bundle:
    """The fields of a DataBundle that training reads."""
    def __init__(self, n=300, image=False):
        generator = torch.Generator().manual_seed(0)
        self.is_image = image
        self.x_train = (torch.randint(0, 256, (n, 1, 8, 8), generator=generator, dtype=torch.uint8)
                        if image else torch.randn(n, 40, generator=generator))
        self.y_train = torch.randint(0, 10, (n,), generator=generator)
        self.y_train_clean = self.y_train.clone()
        self.corrupted = torch.zeros(n, dtype=torch.bool)
        self.x_test, self.y_test = self.x_train[:50], self.y_train[:50]
        self.mean, self.std = ((0.5,), (0.25,)) if image else (None, None)


def make(seed=0, widths=(32,)):
    torch.manual_seed(seed)
    model = build_model(ExperimentConfig(model="mlp", widths=list(widths)), (40,), 10)
    prune.attach_masks(model, False)
    return model


def recipe(**changes):
    values = dict(epochs=3, batch_size=32, optimizer="sgd", lr=0.05, momentum=0.9,
                  weight_decay=1e-4, schedule="multistep", milestones=[1, 2], gamma=0.1,
                  augment=False)
    values.update(changes)
    return Recipe(**values)


def test_training_is_deterministic_and_resumes_exactly_from_an_epoch_checkpoint():
    inputs = Inputs.from_bundle(Bundle(), torch.device("cpu"))
    uninterrupted = make()
    train_level(uninterrupted, inputs, recipe(), seed=3, level=1)

    saved = {}

    def keep_epoch_one(event, state):
        if event == "epoch" and state.epoch == 1:
            saved.update({k: v for k, v in checkpoint_payload(state).items()})
            saved["model"] = {k: v.clone() for k, v in saved["model"].items()}
            raise KeyboardInterrupt  # the process dies right after the checkpoint

    interrupted = make()
    try:
        train_level(interrupted, inputs, recipe(), seed=3, level=1, callbacks=(keep_epoch_one,))
    except KeyboardInterrupt:
        pass
    resumed = make(seed=99)  # whatever it held is replaced by the checkpoint
    train_level(resumed, inputs, recipe(), seed=3, level=1, resume=saved)
    for (name, a), (_, b) in zip(uninterrupted.state_dict().items(),
                                 resumed.state_dict().items()):
        assert torch.equal(a, b), name
    other_seed = make()
    train_level(other_seed, inputs, recipe(), seed=4, level=1)
    assert not torch.equal(other_seed.output.weight, uninterrupted.output.weight)


def test_learning_rate_schedules():
    r = recipe(epochs=160, milestones=[80, 120])
    assert r.lr_factor(0, 10) == 1.0
    assert abs(r.lr_factor(80 * 10, 10) - 0.1) < 1e-12
    assert abs(r.lr_factor(130 * 10, 10) - 0.01) < 1e-12
    cosine = recipe(epochs=10, schedule="cosine")
    assert cosine.lr_factor(0, 5) == 1.0 and abs(cosine.lr_factor(25, 5) - 0.5) < 1e-12
    assert recipe(schedule="constant").lr_factor(1000, 5) == 1.0


def test_rewound_level_starts_at_the_rewind_iteration():
    inputs = Inputs.from_bundle(Bundle(n=64), torch.device("cpu"))
    seen = []
    state = train_level(make(), inputs, recipe(epochs=2, start_iteration=3), seed=0, level=1,
                        callbacks=(lambda e, s: seen.append(s.iteration) if e == "iteration"
                                   else None,))
    # 64 samples in batches of 32: 2 steps an epoch, 4 in all; from iteration 3 one remains
    assert seen == [4] and state.iteration == state.total_iterations == 4


def test_random_crop_flip_moves_pixels_without_changing_them():
    images = torch.arange(2 * 3 * 8 * 8, dtype=torch.int64).view(2, 3, 8, 8).to(torch.uint8)
    generator = torch.Generator().manual_seed(0)
    out = random_crop_flip(images, generator, padding=2)
    assert out.shape == images.shape and out.dtype == torch.uint8
    for i in range(2):
        values = set(out[i].unique().tolist()) - {0}
        assert values <= set(images[i].unique().tolist())
    no_padding = random_crop_flip(images, torch.Generator().manual_seed(1), padding=0)
    for i in range(2):  # without padding the only change is an optional mirror image
        assert torch.equal(no_padding[i], images[i]) or \
            torch.equal(no_padding[i], images[i].flip(-1))


def test_a_training_set_normalised_once_gives_the_weights_of_batches_normalised_each_step(
        monkeypatch):
    from sddlib.engine import train
    inputs = Inputs.from_bundle(Bundle(image=True), torch.device("cpu"))
    torch.manual_seed(0)
    first = build_model(ExperimentConfig(model="mlp", widths=[16]), (1, 8, 8), 10)
    prune.attach_masks(first, False)
    second = __import__("copy").deepcopy(first)
    assert train._prepared_once(inputs, recipe(), train.fast.Speed()) is not None
    train_level(first, inputs, recipe(), seed=1, level=0)
    monkeypatch.setattr(train, "PREPARED_ONCE_BYTES", 0)
    assert train._prepared_once(inputs, recipe(), train.fast.Speed()) is None
    train_level(second, inputs, recipe(), seed=1, level=0)
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items()):
        assert torch.equal(a, b), name


def test_a_cuda_device_this_machine_lacks_is_bad_input(monkeypatch):
    """training_device: a CUDA index torch cannot see here is a one-line ConfigError naming
    ``device`` and what this machine allows; one it can see is taken as it is."""
    from sddlib.config.fields import ConfigError
    from sddlib.engine import train

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert train.training_device("cuda:0") == torch.device("cuda:0")
    assert train.training_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match=r"^device: 'cuda:1' is not on this machine \(torch "
                                          r"sees 1 CUDA device\); allowed here: auto, cpu, "
                                          r"cuda, cuda:0 to cuda:0$"):
        train.training_device("cuda:1")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(ConfigError, match=r"sees 0 CUDA devices\); allowed here: auto, cpu$"):
        train.training_device("cuda")
