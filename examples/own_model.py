"""A researcher's own model, pruned through sddlib's engine (see the README)."""
import math

from torch import nn

from sddlib import ExperimentConfig, register_model, run


class Tiny(nn.Module):
    output_name = "head"  # the classifier layer, kept dense unless prune_output

    def __init__(self, inputs: int, classes: int):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(inputs, 64), nn.ReLU())
        self.head = nn.Linear(64, classes)

    def forward(self, x):
        return self.head(self.body(x))


register_model("tiny", lambda config, shape, classes: Tiny(math.prod(shape), classes),
               small=True)

if __name__ == "__main__":
    config = ExperimentConfig(dataset="mnist1d", model="tiny", train_size=1000,
                              test_size=500, epochs=3, levels=4)
    result = run(config)
    print(result.levels()[["level", "sparsity", "test_acc", "learning_distance"]])
    print(result.path)
