import pytest
import torch
from torch import nn

from sddlib.config.fields import ExperimentConfig
from sddlib.models.architectures import build_model


@pytest.mark.parametrize("dataset, model, shape, extra", [
    ("mnist1d", "mlp", (40,), {"widths": [300, 100]}),
    ("mnist1d", "cnn1d", (40,), {"width": 16}),
    ("cifar10", "resnet18", (3, 32, 32), {"width": 8}),
    ("cifar10", "resnet101", (3, 32, 32), {"width": 4}),
    ("cifar10", "vgg16", (3, 32, 32), {"width": 8}),
    ("cifar10", "vgglike", (3, 32, 32), {"width": 4, "depth": 3}),
    ("digits", "mlp", (1, 8, 8), {"widths": [32]}),
    ("mnist1d", "cnn1d", (40,), {}),  # the default width
])
def test_models_map_inputs_to_class_logits(dataset, model, shape, extra):
    config = ExperimentConfig(dataset=dataset, model=model, **extra)
    net = build_model(config, shape, 10)
    assert net(torch.randn(4, *shape)).shape == (4, 10)
    assert isinstance(getattr(net, net.output_name), nn.Linear)


def test_lenet_300_100_and_resnet18_have_the_papers_sizes():
    lenet = build_model(ExperimentConfig(dataset="mnist", model="mlp", widths=[300, 100]),
                        (1, 28, 28), 10)
    assert sum(p.numel() for p in lenet.parameters()) == 266_610
    resnet = build_model(ExperimentConfig(dataset="cifar10", model="resnet18"), (3, 32, 32), 10)
    assert sum(p.numel() for p in resnet.parameters()) == 11_173_962


@torch.no_grad()
def test_initialisation_follows_the_paper():
    torch.manual_seed(0)
    net = build_model(ExperimentConfig(dataset="cifar10", model="resnet18", width=16),
                      (3, 32, 32), 10)
    bn = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(float(m.weight.min()) >= 0 and float(m.weight.max()) <= 1 for m in bn)
    assert all(float(m.bias.abs().max()) == 0 for m in bn)
    assert any(float(m.weight.std()) > 0.2 for m in bn)  # uniform, not the default ones
    conv = net.layers[0].conv1.weight  # Kaiming normal: std = sqrt(2 / fan_in)
    assert abs(float(conv.std()) - (2 / (16 * 9)) ** 0.5) < 0.02
