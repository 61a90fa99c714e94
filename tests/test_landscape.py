"""The landscape measures on networks small enough to check by hand: the restricted
Hessian against a dense one from autograd, the direction's normalisation, the paths' ends."""
import pytest
import torch
from torch import nn
from torch.func import functional_call

from sddlib.analysis import landscape
from sddlib.engine import train
from sddlib.models.architectures import MLP
from sddlib.pruning import prune


def tiny_inputs(samples: int = 40, features: int = 6, classes: int = 3, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(samples, features, generator=generator)
    y = torch.randint(0, classes, (samples,), generator=generator)
    return train.Inputs(x, y, y, torch.zeros(samples, dtype=torch.bool), x, y, False,
                        torch.zeros(1), torch.ones(1))


def tiny_mlp(seed: int = 0):
    """6 -> 5 -> 3 with about a third of both weight matrices pruned."""
    torch.manual_seed(seed)
    model = MLP(6, [5], 3)
    prune.attach_masks(model, prune_output=True)
    generator = torch.Generator().manual_seed(seed + 1)
    masks = {name: (torch.rand(mask.shape, generator=generator) > 0.35).float()
             for name, mask in prune.get_masks(model).items()}
    prune.set_masks(model, masks)
    return model


def dense_restricted_hessian(model, x, y):
    """The Hessian of the mean cross-entropy over the unpruned weights, by autograd (fp64)."""
    params = {k: v.detach().double() for k, v in model.named_parameters()}
    names = ["hidden.1.weight", "output.weight"]
    shapes = [params[n].shape for n in names]
    sizes = [params[n].numel() for n in names]

    def loss(flat):
        pieces = dict(params)
        for name, piece, shape in zip(names, flat.split(sizes), shapes):
            pieces[name] = piece.view(shape)
        logits = functional_call(model.double(), pieces, (x.double(),))
        return nn.functional.cross_entropy(logits, y)

    flat = torch.cat([params[n].reshape(-1) for n in names])
    hessian = torch.autograd.functional.hessian(loss, flat)
    model.float()
    masks = prune.get_masks(model)
    kept = torch.cat([masks[n].reshape(-1) for n in names]).bool()
    return hessian[kept][:, kept]


def test_top_eigenvalues_match_a_dense_eigendecomposition():
    model, inputs = tiny_mlp(), tiny_inputs()
    x, y = inputs.x_train, inputs.y_train
    batches = [(x[:20], y[:20]), (x[20:], y[20:])]  # equal halves: the mean of means is the mean
    exact = torch.linalg.eigvalsh(dense_restricted_hessian(model, x, y)).flip(0)[:3]
    found = landscape.hessian_top_eigenvalues(model, batches, k=3)
    assert found == pytest.approx(exact.tolist(), rel=1e-3)
    assert found == sorted(found, reverse=True)
    assert landscape.restricted_hessian(model, batches).size == int(
        sum(mask.sum() for mask in prune.get_masks(model).values()))


def test_hutchpp_trace_is_close_to_the_exact_trace():
    model, inputs = tiny_mlp(), tiny_inputs()
    x, y = inputs.x_train, inputs.y_train
    hessian = dense_restricted_hessian(model, x, y)
    exact = float(hessian.trace())
    size = hessian.shape[0]
    # 2 * size queries, fewer than 3 * size: the residual part is a real Hutchinson
    # estimate. This Hessian is indefinite (trace 0.30, Frobenius norm 0.45), the hard
    # case; over 20 seeds the largest error was 2% of the trace, so 10% is a safe bound.
    estimate = landscape.hutchpp_trace(model, [(x, y)], queries=2 * size, seed=0)
    assert estimate == pytest.approx(exact, rel=0.1)
    # with 3 * size queries the sketch spans everything: exact up to rounding
    full = landscape.hutchpp_trace(model, [(x, y)], queries=3 * size, seed=0)
    assert full == pytest.approx(exact, rel=1e-4)


def test_direction_is_filter_normalised_and_zero_on_pruned_biases_and_batchnorm():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(2, 4, 3), nn.BatchNorm1d(4), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 6, 3))
    prune.attach_masks(model, prune_output=True)
    masks = prune.get_masks(model)
    generator = torch.Generator().manual_seed(1)
    prune.set_masks(model, {name: (torch.rand(mask.shape, generator=generator) > 0.3).float()
                            for name, mask in masks.items()})
    direction = landscape.filter_normalised_direction(model, seed=3)
    params = dict(model.named_parameters())
    assert set(direction) == set(params)
    for name in ("0.bias", "1.weight", "1.bias", "4.bias"):
        assert not direction[name].any()
    for name in ("0.weight", "4.weight"):
        mask = prune.get_masks(model)[name]
        assert not direction[name][mask == 0].any()
        axes = tuple(range(1, mask.dim()))
        assert direction[name].norm(dim=axes) == pytest.approx(
            params[name].detach().norm(dim=axes), rel=1e-5)
    again = landscape.filter_normalised_direction(model, seed=3)
    assert all(torch.equal(direction[k], again[k]) for k in direction)


def test_direction_of_a_2d_convolution_normalises_each_output_channel():
    """The paper's models (ResNet, VGG) have 4-d conv weights: a filter spans three axes
    (the rehearsal of the paper profile found torch's norm refusing them)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 5, 3), nn.BatchNorm2d(5), nn.ReLU(), nn.Flatten(),
                          nn.Linear(5 * 4 * 4, 3))
    prune.attach_masks(model, prune_output=True)
    direction = landscape.filter_normalised_direction(model, seed=2)
    weight = dict(model.named_parameters())["0.weight"].detach()
    assert direction["0.weight"].shape == weight.shape == (5, 3, 3, 3)
    for channel in range(5):
        assert float(direction["0.weight"][channel].norm()) == pytest.approx(
            float(weight[channel].norm()), rel=1e-5)
    assert not torch.equal(direction["0.weight"][0] / weight[0].norm(),
                           weight[0] / weight[0].norm())  # a random direction, not the weights


def test_loss_along_direction_starts_at_the_model_and_restores_it():
    model, inputs = tiny_mlp(), tiny_inputs()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    direction = landscape.filter_normalised_direction(model, seed=0)
    curve = landscape.loss_along_direction(model, direction, [-1.0, 0.0, 0.5], inputs,
                                           inputs.x_test, inputs.y_test)
    correct, loss = train.evaluate(model, inputs, inputs.x_test, inputs.y_test)
    assert list(curve.columns) == ["alpha", "loss", "accuracy"]
    at_zero = curve[curve.alpha == 0.0].iloc[0]
    assert at_zero.loss == pytest.approx(loss) and at_zero.accuracy == pytest.approx(
        float(correct.float().mean()))
    assert curve.loss.nunique() == 3
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_interpolation_ends_are_the_two_states():
    model, inputs = tiny_mlp(seed=0), tiny_inputs()
    sparse = {k: v.clone() for k, v in model.state_dict().items()}
    dense_model = MLP(6, [5], 3)
    prune.attach_masks(dense_model, prune_output=True)
    dense = {k: v.clone() for k, v in dense_model.state_dict().items()}
    path = landscape.interpolate(model, sparse, dense, [0.0, 0.5, 1.0], inputs,
                                 inputs.x_test, inputs.y_test)
    for alpha, state in ((0.0, sparse), (1.0, dense)):
        probe = MLP(6, [5], 3)
        prune.attach_masks(probe, prune_output=True)
        probe.load_state_dict(state)
        _, loss = train.evaluate(probe, inputs, inputs.x_test, inputs.y_test)
        assert path[path.alpha == alpha].loss.iloc[0] == pytest.approx(loss, rel=1e-6)
    assert all(torch.equal(sparse[k], v) for k, v in model.state_dict().items())


def test_barrier_height_is_the_rise_above_the_line_between_the_ends():
    import pandas as pd

    path = pd.DataFrame({"alpha": [0.0, 0.5, 1.0], "loss": [1.0, 2.5, 2.0]})
    assert landscape.barrier_height(path) == pytest.approx(1.0)  # 2.5 - 1.5
    convex = pd.DataFrame({"alpha": [1.0, 0.0, 0.5], "loss": [2.0, 1.0, 1.2]})
    assert landscape.barrier_height(convex) == 0.0



def test_barrier_table_has_one_row_per_level_and_split():
    import pandas as pd

    rows = []
    for level, sparsity, losses, accuracies in ((2, 0.36, [1.0, 2.5, 2.0], [0.6, 0.4, 0.7]),
                                                (5, 0.67, [1.0, 1.2, 2.0], [0.5, 0.5, 0.8])):
        for split in ("train", "test"):
            for alpha, loss, accuracy in zip([0.0, 0.5, 1.0], losses, accuracies):
                rows.append({"level": level, "sparsity": sparsity, "split": split,
                             "alpha": alpha, "loss": loss, "accuracy": accuracy})
    table = landscape.barrier_table(pd.DataFrame(rows)).set_index(["level", "split"])
    assert len(table) == 4
    assert table.loc[(2, "test"), "barrier"] == pytest.approx(1.0)  # 2.5 - 1.5
    assert table.loc[(5, "train"), "barrier"] == 0.0  # below the line
    assert table.loc[(5, "test"), "sparsity"] == 0.67
    assert table.loc[(2, "train"), "sparse_acc"] == 0.6  # alpha 0
    assert table.loc[(2, "train"), "redense_acc"] == 0.7  # alpha 1

def test_finite_difference_products_give_the_same_top_eigenvalues():
    model, inputs = tiny_mlp(), tiny_inputs()
    batches = [(inputs.x_train, inputs.y_train)]
    exact = landscape.hessian_top_eigenvalues(model, batches, k=3)
    assert landscape.hessian_top_eigenvalues(model, batches, k=3,
                                             method="finite_difference") == pytest.approx(
        exact, rel=1e-2)
