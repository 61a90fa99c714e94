import pytest
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from sddlib.config.fields import ExperimentConfig
from sddlib.models.architectures import build_model
from sddlib.pruning import prune


def small_mlp(seed=0, prune_output=False):
    torch.manual_seed(seed)
    model = build_model(ExperimentConfig(model="mlp", widths=[40, 30]), (40,), 10)
    prune.attach_masks(model, prune_output)
    return model


def test_prunable_tensors_are_conv_and_linear_weights_only():
    model = small_mlp()
    assert list(prune.prunable_parameters(model, False)) == ["hidden.1.weight",
                                                             "hidden.3.weight"]
    assert "output.weight" in prune.prunable_parameters(model, True)
    torch.manual_seed(0)
    resnet = build_model(ExperimentConfig(dataset="cifar10", model="resnet18", width=8),
                         (3, 32, 32), 10)
    names = prune.prunable_parameters(resnet, True)
    assert "fc.weight" in names and all(n.endswith("weight") for n in names)
    assert not any("bn" in n for n in names)


def test_global_magnitude_masks_equal_torch_global_unstructured_over_levels():
    ours = small_mlp(seed=1)
    theirs = small_mlp(seed=1)
    pairs = [(theirs.hidden[1], "weight"), (theirs.hidden[3], "weight")]
    masks = prune.get_masks(ours)
    for level in range(1, 6):
        masks = prune.prune_masks(prune.magnitude_scores(ours), masks, 0.2, "global")
        prune.set_masks(ours, masks)
        torch_prune.global_unstructured(pairs, pruning_method=torch_prune.L1Unstructured,
                                        amount=0.2)
        for (module, _), name in zip(pairs, ["hidden.1.weight", "hidden.3.weight"]):
            assert torch.equal(module.weight_mask, masks[name]), f"level {level} {name}"
        # perturb both identically so the next level's scores differ from this one's
        with torch.no_grad():
            noise = {n: torch.randn_like(p) for n, p in ours.named_parameters()}
            for n, p in ours.named_parameters():
                p.add_(noise[n])
            theirs.hidden[1].weight_orig.add_(noise["hidden.1.weight"])
            theirs.hidden[3].weight_orig.add_(noise["hidden.3.weight"])
            theirs(torch.zeros(1, 40))  # torch's pruned `weight` is refreshed by forward
        prune.apply_masks(ours)


@pytest.mark.parametrize("scope", ["global", "layerwise"])
def test_sparsity_after_level_l_is_one_minus_point_eight_to_the_l(scope):
    model = small_mlp()
    masks = prune.get_masks(model)
    total = sum(m.numel() for m in masks.values())
    for level in range(1, 21):
        masks = prune.prune_masks(prune.magnitude_scores(model), masks, 0.2, scope)
        prune.set_masks(model, masks)
        # each step rounds once per pruning group: at most half a weight per group
        groups = 1 if scope == "global" else len(masks)
        assert abs(prune.sparsity(masks) - prune.expected_sparsity(level)) <= \
            (0.5 * groups * level) / total + 1e-12
    layerwise = prune.prune_masks(prune.magnitude_scores(model), prune.get_masks(model), 0.5,
                                  "layerwise")
    for name, mask in layerwise.items():
        before = prune.get_masks(model)[name].sum()
        assert abs(mask.sum() - before * 0.5) <= 0.5 + 1e-9


def test_pruning_only_removes_and_lowest_scores_go_first():
    model = small_mlp()
    masks = prune.get_masks(model)
    scores = prune.magnitude_scores(model)
    new = prune.prune_masks(scores, masks, 0.3, "global")
    kept = torch.cat([scores[n][new[n] == 1] for n in new])
    removed = torch.cat([scores[n][(new[n] == 0) & (masks[n] == 1)] for n in new])
    assert removed.max() <= kept.min()
    assert all(bool((new[n] <= masks[n]).all()) for n in new)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_pruned_weights_stay_exactly_zero_through_training(optimizer):
    model = small_mlp()
    masks = prune.prune_masks(prune.magnitude_scores(model), prune.get_masks(model), 0.7)
    prune.set_masks(model, masks)
    if optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-2)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=0.01, weight_decay=1e-2)
    pairs = prune.masked_pairs(model)
    x, y = torch.randn(64, 40), torch.randint(0, 10, (64,))
    for _ in range(20):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        prune.mask_gradients(model, pairs)
        opt.step()
        prune.apply_masks(model, pairs)
        assert prune.check_masks_hold(model) is None
    # the optimiser's state for pruned weights stays zero too, so no drift can build up
    for weight, mask in zip(*pairs):
        state = opt.state[weight]
        buffer = state["momentum_buffer"] if optimizer == "sgd" else state["exp_avg"]
        assert torch.count_nonzero(buffer[mask == 0]) == 0


def test_gradient_scores_average_batches_and_random_scores_are_seeded():
    model = small_mlp()
    batches = [(torch.randn(16, 40), torch.randint(0, 10, (16,))) for _ in range(3)]
    scores = prune.gradient_scores(model, batches)
    manual = torch.zeros_like(model.hidden[1].weight)
    for x, y in batches:
        model.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        manual += (model.hidden[1].weight * model.hidden[1].weight.grad).abs().detach()
    torch.testing.assert_close(scores["hidden.1.weight"], manual / 3)
    first = prune.random_scores(model, seed=5)
    assert all(torch.equal(first[n], prune.random_scores(model, seed=5)[n]) for n in first)
    assert not torch.equal(first["hidden.1.weight"],
                           prune.random_scores(model, seed=6)["hidden.1.weight"])
