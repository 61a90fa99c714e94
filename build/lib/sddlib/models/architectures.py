"""The networks of the papers, by name.

- ``mlp``: fully connected ReLU network; LeNet-300-100 is ``widths=[300, 100]`` (He et al.).
- ``cnn1d``: a small 1-D CNN for MNIST-1D signals (three convolutions, a hidden linear
  layer of ``4 * width`` units and a linear head).
- ``resnet18`` / ``resnet101``: the CIFAR variant (3x3 stride-1 stem, no max-pool), base
  width 64 by default (He et al. on CIFAR and Tiny ImageNet).
- ``vgg16``: the CIFAR VGG-16 with BatchNorm and one linear head (open_lth's ``cifar_vgg``).
- ``vgglike``: the depth/width family of Quetu & Tartaglione (DSD^2): blocks of two 3x3
  convolutions, each conv -> ReLU -> BatchNorm, max-pool after each block, adaptive
  average pool to 7x7 and a linear head.

Every model names its classifier layer in ``output_name`` so pruning can keep it dense,
and applies its ReLUs as ``nn.ReLU`` modules, one per application (they hold no weights,
so the state dict is the same as with ``torch.relu``), which is how :mod:`sddlib.engine.entropy`
finds them.
Initialisation follows the paper's code: Kaiming-normal conv and linear weights,
BatchNorm weight ~ U(0, 1) and bias 0.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import nn


@dataclass(frozen=True)
class ModelSpec:
    """A model's facts, in one place: what the engine and the config checks read.

    ``build(config, input_shape, num_classes)`` returns the network initialised from the
    torch RNG, with an ``output_name`` attribute naming its classifier layer (the layer
    ``prune_output`` decides about). ``reads``: ``"signal"`` (1-D inputs only),
    ``"image"`` (images only) or ``"any"`` (inputs are flattened). ``batch_norm``: it has
    BatchNorm layers, whose running statistics stacked ensembles do not keep per member,
    so its runs are never stacked. ``small``: few weights; on the CPU its runs train on
    one thread each, several side by side. ``default_width``: the base width when the
    config's ``width`` is none. ``fields``: the config fields ``build`` reads (the others
    of the model family do nothing for it and stay out of a run's identity).
    """

    build: Callable[..., nn.Module]
    reads: str = "any"
    batch_norm: bool = False
    prune_output: bool = False
    default_width: Optional[int] = None
    small: bool = False
    fields: tuple[str, ...] = ()


MODELS: dict[str, ModelSpec] = {}  # filled at the end of this module


def register_model(name: str, build: Callable[..., nn.Module], *, reads: str = "any",
                   batch_norm: bool = False, prune_output: bool = False,
                   default_width: Optional[int] = None, small: bool = False,
                   fields: tuple[str, ...] = ("widths", "width", "depth")) -> None:
    """Make ``name`` a model the engine can prune (``ExperimentConfig(model=name)``); see
    :class:`ModelSpec` for what each fact means. Conv and linear weights are pruned; the
    layer named by the model's ``output_name`` only if ``prune_output``. ``fields``
    defaults to every size field, so that runs of the model that differ in one never share
    a name; name only those ``build`` reads to keep the others out of its runs' names."""
    if reads not in ("any", "signal", "image"):
        raise ValueError(f"reads: {reads!r} is not allowed; allowed: any, signal, image")
    MODELS[name] = ModelSpec(build, reads, batch_norm, prune_output, default_width, small,
                             tuple(fields))


def model_spec(name: str) -> ModelSpec:
    if name not in MODELS:
        raise ValueError(f"model: unknown {name!r}; allowed: {', '.join(MODELS)}")
    return MODELS[name]


def build_model(config, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The model named in ``config.model``, initialised from the current torch RNG."""
    return model_spec(config.model).build(config, tuple(input_shape), num_classes)


def initialise(model: nn.Module) -> nn.Module:
    """The paper's init: Kaiming-normal conv and linear weights, BatchNorm weight U(0, 1)."""
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            nn.init.kaiming_normal_(module.weight)
        elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.uniform_(module.weight)
            nn.init.zeros_(module.bias)
    return model


def default_prune_output(model_name: str) -> bool:
    """He et al.: ResNets prune every conv and the fc layer; LeNet and VGG keep the output dense."""
    return model_spec(model_name).prune_output


class MLP(nn.Module):
    output_name = "output"

    def __init__(self, in_features: int, widths: list[int], num_classes: int):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        previous = in_features
        for width in widths:
            layers += [nn.Linear(previous, width), nn.ReLU()]
            previous = width
        self.hidden = nn.Sequential(*layers)
        self.output = nn.Linear(previous, num_classes)

    def forward(self, x):
        return self.output(self.hidden(x))


class CNN1D(nn.Module):
    output_name = "output"

    def __init__(self, length: int, width: int, num_classes: int):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv1d(1, width, 5, padding=2), nn.ReLU(),
            nn.Conv1d(width, width, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv1d(width, width, 3, stride=2, padding=1), nn.ReLU(),
            nn.Flatten(),
        )
        reduced = math.ceil(math.ceil(length / 2) / 2)
        # a hidden fully connected layer gives the net the capacity to memorise noisy labels
        self.hidden = nn.Sequential(nn.Linear(width * reduced, 4 * width), nn.ReLU())
        self.output = nn.Linear(4 * width, num_classes)

    def forward(self, x):
        return self.output(self.hidden(self.features(x.view(x.shape[0], 1, -1))))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, planes_in: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(planes_in, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _shortcut(planes_in, planes, stride)
        self.relu1, self.relu2 = nn.ReLU(), nn.ReLU()

    def forward(self, x):
        out = self.relu1(self.bn1(self.conv1(x)))
        return self.relu2(self.bn2(self.conv2(out)) + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, planes_in: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(planes_in, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.shortcut = _shortcut(planes_in, planes * 4, stride)
        self.relu1, self.relu2, self.relu3 = nn.ReLU(), nn.ReLU(), nn.ReLU()

    def forward(self, x):
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        return self.relu3(self.bn3(self.conv3(out)) + self.shortcut(x))


def _shortcut(planes_in: int, planes_out: int, stride: int) -> nn.Module:
    if stride == 1 and planes_in == planes_out:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(planes_in, planes_out, 1, stride, bias=False),
                         nn.BatchNorm2d(planes_out))


class CifarResNet(nn.Module):
    output_name = "fc"
    _plans = {"resnet18": (BasicBlock, (2, 2, 2, 2)), "resnet101": (Bottleneck, (3, 4, 23, 3))}

    def __init__(self, name: str, in_channels: int, width: int, num_classes: int):
        super().__init__()
        block, counts = self._plans[name]
        self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        stages, planes_in = [], width
        for stage, count in enumerate(counts):
            planes = width * 2 ** stage
            for index in range(count):
                stride = 2 if stage > 0 and index == 0 else 1
                stages.append(block(planes_in, planes, stride))
                planes_in = planes * block.expansion
        self.layers = nn.Sequential(*stages)
        self.fc = nn.Linear(planes_in, num_classes)

    def forward(self, x):
        out = self.layers(self.relu(self.bn1(self.conv1(x))))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(out, 1), 1))


class CifarVGG16(nn.Module):
    output_name = "fc"
    _plan = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)

    def __init__(self, in_channels: int, width: int, num_classes: int):
        super().__init__()
        layers, channels = [], in_channels
        for item in self._plan:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
                continue
            out = item * width // 64
            layers += [nn.Conv2d(channels, out, 3, padding=1), nn.BatchNorm2d(out), nn.ReLU()]
            channels = out
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x):
        out = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
        return self.fc(torch.flatten(out, 1))


class VGGLike(nn.Module):
    output_name = "fc"

    def __init__(self, in_channels: int, width: int, depth: int, num_classes: int):
        super().__init__()
        layers, channels = [], in_channels
        for block in range(depth):
            out = width * 2 ** block
            for conv_in in (channels, out):
                layers += [nn.Conv2d(conv_in, out, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(out)]
            layers.append(nn.MaxPool2d(2, ceil_mode=True))
            channels = out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(7)
        self.fc = nn.Linear(channels * 49, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


# ---------------------------------------------------------------------------- the registry
register_model("mlp", lambda c, shape, k: initialise(MLP(math.prod(shape), c.widths, k)),
               small=True, fields=("widths",))
register_model("cnn1d", lambda c, shape, k: initialise(CNN1D(shape[-1], c.model_width, k)),
               reads="signal", default_width=32, small=True, fields=("width",))
for _name in ("resnet18", "resnet101"):
    register_model(_name, lambda c, shape, k: initialise(
        CifarResNet(c.model, shape[0], c.model_width, k)), reads="image", batch_norm=True,
        prune_output=True, default_width=64, fields=("width",))
register_model("vgg16", lambda c, shape, k: initialise(CifarVGG16(shape[0], c.model_width, k)),
               reads="image", batch_norm=True, default_width=64, fields=("width",))
register_model("vgglike", lambda c, shape, k: initialise(
    VGGLike(shape[0], c.model_width, c.depth, k)), reads="image", batch_norm=True,
    default_width=32, fields=("width", "depth"))  # DSD²'s default width
