"""Distillation from a sparse teacher (DSD²) and the validation split that picks it."""
import copy
import json
import math

import pandas as pd
import pytest
import torch
from torch.nn import functional as F

from sddlib.cli import main
from sddlib.config.fields import ConfigError, ExperimentConfig
from sddlib.data import datasets as data_module
from sddlib.engine import distill, experiment, train
from sddlib.scheduling import groups, sweep
from sddlib.storage.store import RunStore, load_torch

TINY = dict(model="mlp", widths=[16], train_size=300, test_size=100, epochs=1, levels=2,
            batch_size=100, device="cpu")
SETS = [arg for key, value in TINY.items() for arg in
        ("--set", f"{key}={','.join(map(str, value)) if isinstance(value, list) else value}")]


# ---------------------------------------------------------------------------- the loss
def test_the_loss_is_the_papers_on_fixed_logits():
    # float64: T^2 = 100 scales a small KL, and float32's rounding with it
    student = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]], dtype=torch.float64)
    teacher = torch.tensor([[1.0, 3.0, 0.0], [0.0, 0.0, 4.0]], dtype=torch.float64)
    labels = torch.tensor([0, 2])
    alpha, t = 0.8, 10.0

    def softmax(row, scale):
        exps = [math.exp(v / scale) for v in row]
        return [e / sum(exps) for e in exps]
    kl = ce = 0.0
    for s_row, t_row, label in zip(student.tolist(), teacher.tolist(), labels.tolist()):
        p, q = softmax(t_row, t), softmax(s_row, t)
        kl += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
        ce -= math.log(softmax(s_row, 1.0)[label])
    expected = alpha * t * t * kl / 2 + (1 - alpha) * ce / 2  # batchmean: over 2 samples
    got = distill.distillation_loss(student, teacher, labels, alpha, t)
    assert got.item() == pytest.approx(expected, rel=1e-12)


def test_alpha_zero_is_cross_entropy_and_alpha_one_ignores_the_labels():
    generator = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(8, 10, generator=generator), torch.randn(8, 10,
                                                                          generator=generator)
    labels = torch.randint(0, 10, (8,), generator=generator)
    assert torch.equal(distill.distillation_loss(student, teacher, labels, 0.0, 10.0),
                       F.cross_entropy(student, labels))
    other = (labels + 1) % 10
    assert torch.equal(distill.distillation_loss(student, teacher, labels, 1.0, 4.0),
                       distill.distillation_loss(student, teacher, other, 1.0, 4.0))
    # a student that already agrees with its teacher has nothing to learn from it
    assert distill.distillation_loss(teacher, teacher, labels, 1.0, 4.0).abs() < 1e-6


def test_best_fit_takes_the_best_validation_accuracy_then_the_lower_loss():
    table = pd.DataFrame({"level": [0, 1, 2, 3, 4], "val_acc": [0.5, 0.7, 0.7, 0.6, 0.9],
                          "val_loss": [2.0, 1.5, 1.2, 1.3, 0.1]})
    assert distill.teacher_level(table, "best-fit", 3) == 2  # level 4 is beyond the range
    assert distill.teacher_level(table, "best-fit", 4) == 4
    assert distill.teacher_level(table, "dense", 4) == 0
    with pytest.raises(ValueError, match="validation_size >= 1"):
        distill.teacher_level(table.drop(columns=["val_acc", "val_loss"]), "best-fit", 4)


# ---------------------------------------------------------------------------- training
@pytest.fixture
def inputs(data_dir):
    bundle = data_module.load("mnist1d", data_dir, noise=0.2, train_size=300, test_size=100)
    return train.Inputs.from_bundle(bundle, torch.device("cpu"))


def test_a_student_distilled_from_itself_with_alpha_one_does_not_move(inputs):
    """The loss train_level minimises is the distiller's: from a teacher equal to the
    student's start, with alpha = 1, the gradient is zero and plain SGD stays put; with
    alpha = 0 it is cross-entropy and the weights move."""
    recipe = train.Recipe(1, 50, "sgd", 0.5, 0.0, 0.0, "constant", [], 0.1, False)
    torch.manual_seed(0)
    start = torch.nn.Sequential(torch.nn.Linear(40, 16), torch.nn.ReLU(),
                                torch.nn.Linear(16, 10))
    moved = {}
    for alpha in (1.0, 0.0):
        student, teacher = copy.deepcopy(start), copy.deepcopy(start)
        distiller = distill.Distiller(teacher, alpha, 10.0).precompute(inputs)
        train.train_level(student, inputs, recipe, seed=0, level=0, distill=distiller)
        moved[alpha] = max((a - b).abs().max().item() for a, b in
                           zip(student.parameters(), start.parameters()))
    assert moved[1.0] < 1e-5 < 1e-2 < moved[0.0]
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())


def test_precomputed_teacher_logits_are_the_ones_computed_per_batch(inputs):
    torch.manual_seed(1)
    teacher = torch.nn.Sequential(torch.nn.Linear(40, 10))
    student = torch.nn.Sequential(torch.nn.Linear(40, 10))
    index = torch.tensor([3, 17, 299, 0])
    x, y = inputs.prepare(inputs.x_train[index]), inputs.y_train[index]
    live = distill.Distiller(teacher, 0.8, 10.0).loss(student, x, y, index)
    cached = distill.Distiller(teacher, 0.8, 10.0).precompute(inputs).loss(student, x, y, index)
    assert torch.allclose(live, cached, atol=1e-6)


# ---------------------------------------------------------------------------- the split
def test_the_validation_split_is_held_out_stratified_seeded_and_after_the_noise(data_dir):
    bundle = data_module.load("mnist1d", data_dir, noise=0.2, seed=3, train_size=300,
                              test_size=100)
    trained, held = data_module.split_validation(bundle, 50, seed=3)
    again = data_module.split_validation(bundle, 50, seed=3)[1]
    other = data_module.split_validation(bundle, 50, seed=4)[1]
    assert torch.equal(held.indices, again.indices) and not torch.equal(held.indices,
                                                                        other.indices)
    assert held.stratified and trained.num_train == 250 and len(held.indices) == 50
    # its labels are the noisy ones; each class keeps its share (stratified on them)
    assert torch.equal(held.y, bundle.y_train[held.indices])
    assert (held.y != held.y_clean).any()
    shares = torch.bincount(held.y, minlength=10) / 50
    assert (shares - torch.bincount(bundle.y_train, minlength=10) / 300).abs().max() <= 0.02
    # the rest is trained on, its noise record remapped to the new positions
    kept = torch.ones(300, dtype=torch.bool)
    kept[held.indices] = False
    assert torch.equal(trained.x_train, bundle.x_train[kept])
    assert torch.equal(trained.corrupted, bundle.corrupted[kept])
    assert torch.equal(trained.y_train[trained.noise_indices] !=
                       trained.y_train_clean[trained.noise_indices],
                       bundle.corrupted[bundle.noise_indices][kept[bundle.noise_indices]])
    # a stored split is used as stored
    assert torch.equal(data_module.split_validation(bundle, 50, 9, held.indices)[1].x, held.x)


# ---------------------------------------------------------------------------- end to end
def test_a_best_fit_student_from_the_command_line(tmp_path, data_dir, capsys, monkeypatch):
    arguments = ["run", *SETS, "--set", "distill_from=best-fit", "--set", "validation_size=50",
                 "--runs-dir", str(tmp_path / "runs"), "--data-dir", str(data_dir), "--quiet"]
    assert main(arguments) == 0
    store = RunStore(tmp_path / "runs")
    student_config = ExperimentConfig(**TINY, distill_from="best-fit", validation_size=50)
    student, teacher = store.find(student_config), store.find(student_config.teacher_config)
    assert student.is_finished() and teacher.is_finished()
    # the teacher was computed first, and is the student's config without distillation
    assert json.loads(teacher.file("config.json").read_text())["distill_from"] == "none"
    assert teacher.file("levels.csv").stat().st_mtime_ns < \
        student.file("checkpoints", "init.pt").stat().st_mtime_ns
    chosen = student.meta()["teacher"]
    table = teacher.levels()
    assert chosen["run"] == teacher.name and chosen["rule"] == "best-fit"
    assert table.val_acc[chosen["level"]] == table.val_acc.max() == chosen["val_acc"]
    # both have the same validation split and report on it
    for run in (student, teacher):
        assert {"val_acc", "val_loss"} <= set(run.levels().columns)
        assert run.meta()["validation"]["size"] == 50
    assert torch.equal(data_module.load_validation_indices(student.file("validation.npz")),
                       data_module.load_validation_indices(teacher.file("validation.npz")))
    # distillation changed the training (same seed, same init, another loss)
    assert torch.equal(load_torch(student.file("checkpoints", "init.pt"))["hidden.1.weight"],
                       load_torch(teacher.file("checkpoints", "init.pt"))["hidden.1.weight"])
    assert (student.levels().train_loss != table.train_loss).all()

    capsys.readouterr()
    stamps = {path: path.stat().st_mtime_ns for run in (student, teacher)
              for path in run.path.rglob("*") if path.is_file()}

    def refuse(*args, **kwargs):
        raise AssertionError("a finished run was trained again")
    monkeypatch.setattr(train, "train_level", refuse)
    assert main(arguments) == 0
    assert f"found finished run {student.name}; reused it" in capsys.readouterr().err
    assert {path: path.stat().st_mtime_ns for path in stamps} == stamps


def test_a_dense_teacher_of_another_architecture(tmp_path, data_dir):
    store = RunStore(tmp_path / "runs")
    config = ExperimentConfig(**TINY, distill_from="dense", teacher={"widths": [24, 24]})
    result = experiment.run_experiment(config, store, progress=False, data_dir=data_dir)
    teacher = store.find(config.teacher_config)
    assert teacher.config.widths == [24, 24] and teacher.levels_done() == 1  # level 0 only
    assert result.meta()["teacher"]["run"] == teacher.name
    assert result.meta()["teacher"]["level"] == 0
    assert "validation" not in result.meta() and "val_acc" not in result.levels()
    assert load_torch(result.level_dir(0) / "final.pt")["hidden.1.weight"].shape == (16, 40)


# ---------------------------------------------------------------------------- identity
def test_the_students_identity_holds_its_teachers():
    base = ExperimentConfig(**TINY, distill_from="best-fit", validation_size=50)
    assert base.replace(teacher={"widths": [32]}).run_name() != base.run_name()
    assert base.replace(teacher={"lr": 0.01}).run_name() != base.run_name()
    assert base.replace(teacher={"widths": [16]}).run_name() == base.run_name()  # its own
    assert base.replace(distill_alpha=0.5).run_name() != base.run_name()
    assert base.replace(distill_from="dense").run_name() != base.run_name()
    # best-fit picks among the teacher's levels: that range is part of the identity
    assert base.replace(levels=3).run_name() != base.run_name()
    pinned = base.replace(teacher={"levels": 2})
    assert pinned.replace(levels=3).run_name() == pinned.run_name()
    dense = base.replace(distill_from="dense")
    assert dense.replace(levels=3).run_name() == dense.run_name()
    # without distillation the keys do nothing; without a split, no validation_size
    plain = ExperimentConfig(**TINY)
    assert plain.replace(teacher={"widths": [32]}, distill_alpha=0.1).run_name() == \
        plain.run_name()
    assert plain.replace(validation_size=50).run_name() != plain.run_name()
    assert "distill-best-fit" in base.readable_name()


def test_teacher_entries_are_set_one_at_a_time_and_checked():
    config = ExperimentConfig(**TINY).with_sets(["teacher.widths=64,32", "teacher.lr=0.01"])
    assert config.teacher == {"widths": [64, 32], "lr": 0.01}
    assert config.with_sets(["teacher.epochs=3"]).teacher == {"widths": [64, 32], "lr": 0.01,
                                                             "epochs": 3}
    with pytest.raises(ConfigError, match=r"^teacher\.model: 'nope' is not allowed"):
        config.with_sets(["teacher.model=nope"])
    with pytest.raises(ConfigError, match=r"^teacher\.dataset: .*allowed: any key but"):
        config.with_sets(["teacher.dataset=digits"])
    with pytest.raises(ConfigError, match=r"^redense_level: .*allowed: none"):
        config.replace(distill_from="dense", redense_level=1)


def test_distilling_runs_do_not_stack_runs_with_a_validation_split_do(tmp_path, data_dir):
    plain = ExperimentConfig(**TINY)
    student = plain.replace(distill_from="dense")
    found = groups.stack_groups([plain, plain.replace(seed=1), student,
                                 student.replace(seed=1)])
    assert sorted(len(group) for group in found) == [1, 1, 2]
    with pytest.raises(ValueError, match="^distill_from: "):
        groups.run_stacked([student, student.replace(seed=1)], RunStore("/nonexistent"))
    store = RunStore(tmp_path / "runs")
    held = [plain.replace(levels=1, validation_size=50, seed=seed) for seed in (0, 1)]
    frame = sweep.run_many(held, store, progress=False, stack=True, data_dir=data_dir)
    assert frame.val_acc.between(0, 1).all() and len(frame) == 4
    for config in held:
        run = store.find(config)
        assert run.meta()["trained_as"]["stacked_levels"] == [0, 1]
        assert len(data_module.load_validation_indices(run.file("validation.npz"))) == 50
