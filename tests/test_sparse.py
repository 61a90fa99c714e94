"""The sparse path (sddlib.pruning.sparse): packed linear layers train as the
dense-masked ones do."""
import copy

import pytest
import torch
from test_train import Bundle, recipe
from torch import nn

from sddlib.config.fields import ExperimentConfig
from sddlib.engine import fast
from sddlib.engine.train import Inputs, checkpoint_payload, train_level
from sddlib.models.architectures import build_model
from sddlib.pruning import prune, sparse

PACKED = fast.Speed(sparse=True)


def masked_mlp(density: float, seed: int = 0, widths=(64, 32)) -> nn.Module:
    """An MLP whose hidden layers keep ``density`` of their weights (random masks)."""
    torch.manual_seed(seed)
    model = build_model(ExperimentConfig(model="mlp", widths=list(widths)), (40,), 10)
    prune.attach_masks(model, False)
    generator = torch.Generator().manual_seed(seed + 1)
    prune.set_masks(model, {name: (torch.rand(mask.shape, generator=generator) < density).float()
                            for name, mask in prune.get_masks(model).items()})
    return model


@pytest.mark.parametrize("density", [0.03, 0.15])
@pytest.mark.parametrize("bias", [True, False])
def test_a_packed_layer_computes_the_masked_product_and_its_gradients(density, bias):
    torch.manual_seed(0)
    linear = nn.Linear(50, 30, bias=bias)
    mask = (torch.rand(30, 50) < density).float()
    with torch.no_grad():
        linear.weight.mul_(mask)
    packed = sparse.PackedLinear(copy.deepcopy(linear), mask)
    assert packed.values.numel() == int(mask.sum())
    x = torch.randn(17, 50, requires_grad=True)
    x_packed = x.detach().clone().requires_grad_()
    grad = torch.randn(17, 30)
    (linear(x) * grad).sum().backward()
    (packed(x_packed) * grad).sum().backward()
    assert torch.allclose(linear(x), packed(x_packed), atol=1e-5)
    assert torch.allclose(x.grad, x_packed.grad, atol=1e-5)
    kept = (linear.weight.grad * mask).reshape(-1)[packed.pattern.flat]
    assert torch.allclose(kept, packed.values.grad, atol=1e-5)
    if bias:
        assert torch.allclose(linear.bias.grad, packed.bias.grad, atol=1e-5)
    assert torch.equal(packed.dense_weight(), linear.weight.detach())


@pytest.mark.parametrize("optimizer, momentum, weight_decay",
                         [("sgd", 0.9, 1e-3), ("sgd", 0.0, 0.0), ("adam", 0.0, 1e-4)])
def test_a_level_trained_packed_ends_where_the_dense_masked_level_ends(
        optimizer, momentum, weight_decay):
    inputs = Inputs.from_bundle(Bundle(), torch.device("cpu"))
    lr = 0.05 if optimizer == "sgd" else 1e-3
    plan = recipe(optimizer=optimizer, momentum=momentum, weight_decay=weight_decay, lr=lr)
    dense, packed = masked_mlp(0.1), masked_mlp(0.1)
    seen = []
    train_level(dense, inputs, plan, seed=3, level=2)
    train_level(packed, inputs, plan, seed=3, level=2, speed=PACKED,
                callbacks=(lambda event, state: seen.append(state.packing is not None),))
    assert all(seen) and seen  # the hidden layers were packed the whole level
    assert [type(m) for m in packed.modules()] == [type(m) for m in dense.modules()]
    assert list(packed.state_dict()) == list(dense.state_dict())
    for name, value in dense.state_dict().items():
        assert torch.allclose(value, packed.state_dict()[name], atol=1e-5), name
    assert prune.check_masks_hold(packed) is None
    assert not torch.equal(packed.hidden[1].weight, masked_mlp(0.1).hidden[1].weight)


def _checkpoint_at_epoch_one(model, inputs, plan, speed):
    saved = {}

    def keep(event, state):
        if event == "epoch" and state.epoch == 1:
            payload = checkpoint_payload(state)
            saved["model"] = {k: v.clone() for k, v in payload["model"].items()}
            saved["optimizer"] = copy.deepcopy(payload["optimizer"])
            saved["iteration"] = payload["iteration"]
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        train_level(model, inputs, plan, seed=3, level=2, callbacks=(keep,), speed=speed)
    return saved


def frozen_first_bias(model: nn.Module) -> nn.Module:
    """A parameter the optimiser does not hold: the positions of the later ones shift."""
    model.hidden[1].bias.requires_grad_(False)
    return model


@pytest.mark.parametrize("write, read", [(PACKED, PACKED), (PACKED, None), (None, PACKED)])
@pytest.mark.parametrize("prepare", [lambda model: model, frozen_first_bias])
def test_a_checkpoint_is_in_the_dense_format_and_resumes_on_either_path(write, read, prepare):
    inputs = Inputs.from_bundle(Bundle(), torch.device("cpu"))
    plan = recipe()
    uninterrupted = prepare(masked_mlp(0.1))
    train_level(uninterrupted, inputs, plan, seed=3, level=2, speed=read)
    interrupted = prepare(masked_mlp(0.1))
    saved = _checkpoint_at_epoch_one(interrupted, inputs, plan, write)
    # the interrupted model is whole again: its own layers, the values written back
    assert all(type(m) is not sparse.PackedLinear for m in interrupted.modules())
    assert list(saved["model"]) == list(uninterrupted.state_dict())
    dense_shapes = [p.shape for p in uninterrupted.parameters() if p.requires_grad]
    for index, entries in saved["optimizer"]["state"].items():
        for value in entries.values():
            if torch.is_tensor(value) and value.dim() > 0:
                assert value.shape == dense_shapes[index]
    resumed = prepare(masked_mlp(0.1, seed=7))
    train_level(resumed, inputs, plan, seed=3, level=2, resume=saved, speed=read)
    for name, value in uninterrupted.state_dict().items():
        if write is read:  # the same path resumed: bit for bit
            assert torch.equal(value, resumed.state_dict()[name]), name
        else:
            assert torch.allclose(value, resumed.state_dict()[name], atol=1e-5), name


def test_only_sparse_enough_linear_layers_are_packed_and_convolutions_never():
    model = masked_mlp(0.5)
    assert sparse.pack(model) is None
    mixed = masked_mlp(0.5)
    with torch.no_grad():
        mixed.hidden[1].weight_mask.mul_((torch.rand(64, 40) < 0.1).float())
    packing = sparse.pack(mixed)
    assert packing.layers == ["hidden.1"]
    packing.unpack()
    torch.manual_seed(0)
    cnn = build_model(ExperimentConfig(model="cnn1d", width=4), (40,), 10)
    prune.attach_masks(cnn, False)
    prune.set_masks(cnn, {n: torch.zeros_like(m) for n, m in prune.get_masks(cnn).items()})
    packing = sparse.pack(cnn)
    assert packing.layers == ["hidden.0"]  # the hidden linear layer; no convolution
    packing.unpack()
    assert sparse.pack(masked_mlp(0.1), enabled=False) is None
    # a layer with a hook, or reached by two paths, is left as it is
    hooked = masked_mlp(0.1)
    hooked.hidden[1].register_forward_hook(lambda *args: None)
    assert sparse.pack(hooked).layers == ["hidden.3"]
    shared = masked_mlp(0.1)
    shared.again = shared.hidden[3]
    assert sparse.pack(shared).layers == ["hidden.1"]


def test_the_sparse_path_is_the_cpu_default_and_off_where_it_does_not_apply():
    assert fast.Speed.resolve("cpu", sparse="auto").sparse
    assert not fast.Speed.resolve("cpu", sparse="off").sparse
    assert not fast.Speed.resolve("cpu", precision="bf16", sparse="auto").sparse
    assert not fast.Speed.resolve("cpu", compile="on", sparse="auto").sparse
    assert not fast.Speed.resolve("cuda", "fp32", "off", sparse="auto").sparse
    assert fast.speed_for(ExperimentConfig(device="cpu"), "cpu").sparse
    assert not fast.speed_for(ExperimentConfig(device="cpu", sparse="off"), "cpu").sparse
    # a speed setting, like compile: not part of a run's identity
    assert ExperimentConfig(sparse="off").run_name() == ExperimentConfig().run_name()
