import pytest

from sddlib.config.fields import ExperimentConfig


@pytest.fixture
def tiny_config():
    """A config that runs a whole experiment in a few seconds on the CPU."""
    return ExperimentConfig(model="mlp", widths=[32, 32], train_size=500, test_size=200, epochs=2,
                            levels=3, batch_size=64, device="cpu")


@pytest.fixture
def data_dir(tmp_path_factory):
    """One MNIST-1D cache shared by the tests of a session."""
    return tmp_path_factory.getbasetemp() / "datasets"


@pytest.fixture(autouse=True)
def registries_as_shipped():
    """What a test registers (a model, dataset or criterion) is gone after it."""
    from sddlib.data import datasets as data
    from sddlib.models import architectures as models
    from sddlib.pruning import prune

    saved = [(table, dict(table)) for table in (data.DATASETS, models.MODELS, prune.CRITERIA)]
    yield
    for table, content in saved:
        table.clear()
        table.update(content)
