"""The figure functions draw what their docstrings say, and the table helpers word it."""
import math
import re

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from sddlib.analysis import metrics
from sddlib.book import figures, plots  # noqa: E402

SHAPE = [0.80, 0.75, 0.70, 0.78, 0.90, 0.60, 0.40]


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def levels(variant: str, test_acc, seeds=(0, 1), **columns) -> pd.DataFrame:
    """A hand-made tidy frame of one variant: the same per-level values for every seed."""
    return pd.DataFrame([{"seed": seed, "level": level, "sparsity": 1 - 0.8 ** level,
                          "variant": variant, "test_acc": acc, "train_acc": 1.0 - level / 20,
                          **{name: values[level] for name, values in columns.items()}}
                         for seed in seeds for level, acc in enumerate(test_acc)])


def titles(fig) -> list[str]:
    return [ax.get_title() for ax in fig.axes]


def test_paired_figure_draws_both_variants_and_their_differences():
    frame = pd.concat([levels("lottery", SHAPE), levels("reinit", [a - 0.05 for a in SHAPE])])
    difference = metrics.paired_difference(frame, "variant", "lottery", "reinit")
    train = metrics.paired_difference(frame, "variant", "lottery", "reinit", value="train_acc")
    drops = {"lottery": 0.5, "reinit": float("nan")}
    fig = plots.paired_figure(frame, "variant", {"training": train, "test": difference},
                              "lottery − reinit", drops=drops,
                              phases=metrics.curve_summary(levels("lottery", SHAPE)),
                              legend_title="retraining")
    assert titles(fig) == ["training accuracy (noisy labels)", "test accuracy",
                           "training accuracy, lottery − reinit, paired by seed",
                           "test accuracy, lottery − reinit, paired by seed"]
    top_left, top_right, bottom_left, bottom_right = fig.axes
    assert top_left.get_legend().get_title().get_text() == "retraining"
    assert [t.get_text() for t in top_left.get_legend().get_texts()] == ["lottery", "reinit"]
    # one dashed line for the lottery drop at 50% left; the reinit curve never drops
    dashed = [line for line in top_left.get_lines() if line.get_linestyle() == "--"]
    assert len(dashed) == 1 and dashed[0].get_xdata()[0] == pytest.approx(50.0)
    assert bottom_right.get_ylabel() == "test accuracy difference"
    assert [t.get_text() for t in top_right.texts] == list(metrics.PHASES)  # phases shaded
    # the test difference is 0.05 at every level; a line at zero
    means = [line for line in bottom_right.get_lines() if len(line.get_xdata()) == len(SHAPE)]
    assert means[0].get_ydata() == pytest.approx([0.05] * len(SHAPE))
    assert any(list(line.get_ydata()) == [0.0, 0.0] for line in bottom_left.get_lines())


def test_distance_figure_has_one_row_per_name():
    distance = {"learning_distance": [1, 2, 3, 2, 1, 0.5, 0.2]}
    frame = pd.concat([levels("a", SHAPE, **distance), levels("b", SHAPE, **distance)])
    fig = plots.distance_figure(frame, ["a", "b"], by="variant")
    assert titles(fig) == ["a: learning distance", "a: test accuracy",
                           "b: learning distance", "b: test accuracy"]
    assert [ax.get_ylabel() for ax in fig.axes[:2]] == ["learning distance", "test accuracy"]
    assert fig.axes[0].get_xscale() == "log"


def path_table(levels_sparsity: dict, alphas=(0.0, 0.5, 1.0)) -> pd.DataFrame:
    return pd.DataFrame([{"level": level, "sparsity": sparsity, "split": split, "alpha": alpha,
                          "loss": 1 + alpha * level, "accuracy": 0.5 + alpha / 10}
                         for level, sparsity in levels_sparsity.items()
                         for split in ("train", "test") for alpha in alphas])


def test_lines_by_level_labels_each_level_by_the_weights_it_keeps():
    fig, axes = plots.figure(1, 1)
    plots.lines_by_level(axes[0, 0], path_table({2: 0.36, 5: 0.67232}), "test", "loss",
                         "test loss", "step")
    ax = axes[0, 0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["64% left", "32.8% left"]
    assert ax.get_title() == "test loss" and ax.get_xlabel() == "step"
    losses = [list(line.get_ydata()) for line in ax.get_lines() if len(line.get_xdata()) == 3]
    assert [1.0, 2.0, 3.0] in losses and [1.0, 3.5, 6.0] in losses


def test_redense_figure_has_loss_and_accuracy_panels():
    fig = plots.redense_figure(path_table({2: 0.36}))
    assert titles(fig) == ["training loss (noisy labels)", "test loss", "test accuracy"]
    assert fig.axes[0].get_xlabel().startswith("α")


def test_flatness_figure_has_six_panels_and_logs_positive_sharpness():
    frame = levels("lottery", SHAPE, seeds=(0,))
    directions = path_table({0: 0.0, 4: 0.5904}, alphas=(-0.5, 0.0, 0.5))
    sharpness = pd.DataFrame({"level": range(7), "sparsity": frame.sparsity,
                              "top_eigenvalue": [1, 2, 3, 4, 5, 6, 7],
                              "trace": [5, 4, 3, 2, 1, 0, -1]})
    fig = plots.flatness_figure(directions, frame, sharpness, metrics.curve_summary(frame))
    assert titles(fig) == ["training loss (noisy labels)", "test loss",
                           "test accuracy of the run", "test accuracy along the direction",
                           "top Hessian eigenvalue", "Hessian trace (Hutch++)"]
    assert fig.axes[4].get_yscale() == "log"
    assert fig.axes[5].get_yscale() == "linear"  # a trace <= 0 cannot go on a log scale


def risk_frame(methods, values) -> pd.DataFrame:
    return pd.DataFrame([{"p": p, "p_over_n": p / 100, "method": method, "risk_mean": risk,
                          "risk_std": 0.1, "trials": 4}
                         for method in methods for p, risk in zip((50, 200, 400), values)])


def test_risk_figure_draws_each_method_and_the_marks():
    simulated = risk_frame(["dense", "magnitude", "oracle"], [2.0, 1.0, 0.5])
    analytic = risk_frame(["dense"], [2.1, 1.1, 0.6]).rename(columns={"risk_mean": "risk"})
    fig = plots.risk_figure({"frame": simulated, "title": "left", "mark": 0.5},
                            {"frame": simulated, "title": "right", "analytic": analytic})
    left, right = fig.axes
    assert titles(fig) == ["left", "right"]
    assert left.get_xscale() == right.get_yscale() == "log"
    labels = [t.get_text() for t in right.get_legend().get_texts()]
    assert labels == ["dense", "magnitude", "oracle", "dense (analytic)"]
    vertical = lambda ax: sorted(line.get_xdata()[0] for line in ax.get_lines()  # noqa: E731
                                 if list(line.get_xdata()) == [line.get_xdata()[0]] * 2)
    assert vertical(left) == [0.5, 1.0]  # s/n and the interpolation threshold
    assert vertical(right) == [1.0]
    magnitude = [line for line in left.get_lines() if line.get_label() == "magnitude"][0]
    assert magnitude.get_color() == "C0" and list(magnitude.get_ydata()) == [2.0, 1.0, 0.5]


def test_refit_benefit_figure_has_a_panel_per_structure_and_a_line_per_ratio():
    benefit = pd.DataFrame([{"structure": structure, "p_over_n": ratio, "correlation": rho,
                             "benefit": rho * ratio, "benefit_se": 0.01}
                            for structure in ("equicorrelated", "ar1") for ratio in (2, 5)
                            for rho in (0.0, 0.5)])
    fig = plots.refit_benefit_figure(benefit, ["equicorrelated", "ar1"])
    assert titles(fig) == ["equicorrelated features", "AR(1) features"]
    assert [t.get_text() for t in fig.axes[1].get_legend().get_texts()] == ["p/n = 2", "p/n = 5"]


# ------------------------------------------------------------------ tables and words
def test_sparsity_list_words_missing_values_as_none():
    assert figures.sparsity_list({"magnitude": 0.5904, "random": float("nan")}) == \
        "magnitude 59.0%, random none"
    assert figures.sparsity_list(pd.Series({"clean": 0.2})) == "clean 20.0%"


def test_percent_table_formats_all_but_the_plain_columns():
    table = pd.DataFrame({"criterion": ["magnitude"], "best_acc": [0.9123],
                          "worst_sparsity": [float("nan")], "seeds": [3]})
    html = figures.percent_table(table, {"criterion": "criterion", "best_acc": "best",
                                         "worst_sparsity": "worst (sparsity)", "seeds": "seeds"},
                                 plain=["criterion", "seeds"]).to_html()
    assert ">best<" in html and "91.2%" in html and ">-<" in html.replace(" ", "")
    assert ">3<" in html.replace(" ", "")


def test_barrier_and_claims_tables_carry_their_columns():
    barriers = pd.DataFrame({"level": [2, 2], "sparsity": [0.36, 0.36],
                             "split": ["train", "test"], "barrier": [0.1234, 0.5],
                             "sparse_acc": [0.9, 0.6], "redense_acc": [0.95, 0.55]})
    html = figures.barrier_table(barriers).to_html()
    assert "train barrier" in html and "0.123" in html and "36.0%" in html and "55.0%" in html
    claims = pd.DataFrame({"dataset": ["mnist"], "peak_sparsity": [0.5], "rho": [-0.25],
                           "levels_apart": [math.nan]})
    html = figures.distance_claims_table(claims).to_html()
    assert "Spearman ρ" in html and "-0.25" in html and "50.0%" in html


def test_stand_in_text_compares_each_shared_dataset():
    comparison = pd.DataFrame({
        "dataset": ["mnist", "mnist", "cifar10"], "who": ["ours", "paper", "paper"],
        "source": ["both", "both", "paper only"], "data": ["mnist-5k", "mnist", "cifar10"],
        "training images": [4000, 60000, 50000], "dip": [0.01, 0.068, 0.1],
        "rise": [0.02, 0.189, 0.2]})
    assert figures.stand_in_text(comparison) == (
        "Our mnist-5k (4,000 training images) stands in for the paper's mnist (60,000): a "
        "dip of 1.0% below dense against the paper's 6.8%, a rise of 2.0% out of it against "
        "18.9%")
    assert figures.stand_in_text(comparison[comparison.who == "paper"]) == \
        "No dataset of this profile stands in for one of the paper's"


def test_landmark_tables_have_headings_in_words():
    import pandas as pd

    from sddlib.book import figures

    table = pd.DataFrame({"dataset_name": ["mnist-5k"], "dense_acc": [0.854],
                          "worst_acc": [0.803], "worst_sparsity": [0.914], "best_acc": [0.878],
                          "best_sparsity": [0.995], "last_acc": [0.86],
                          "last_sparsity": [0.9988], "seeds": [2], "three_phases": [True]})
    html = figures.summary_table(table, "dataset_name").to_html()
    headings = re.findall(r"<th [^>]*col_heading[^>]*>([^<]*)</th>", html)
    assert headings[:3] == ["dataset", "dense", "worst"] and "worst at sparsity" in headings
    assert not [h for h in headings if "_" in h]
    assert "85.4%" in html and "99.9%" in html  # accuracies and sparsities in percent


def test_legends_are_titled_in_words_not_column_names():
    frame = pd.concat([levels("a", SHAPE), levels("b", SHAPE)]).rename(
        columns={"variant": "dataset_name"})
    fig = plots.train_test_figure(frame, "dataset_name")
    assert [ax.get_legend().get_title().get_text() for ax in fig.axes] == ["dataset"] * 2
    fig = plots.train_test_figure(frame.rename(columns={"dataset_name": "label noise"}),
                                  "label noise")
    assert fig.axes[0].get_legend().get_title().get_text() == "label noise"
    assert plots.legend_title("some_column") == "some column"
