"""The helpers a page's cells call: its profile, its runs' levels, glue, claims and tables.

The cell after a notebook's ``parameters`` cell calls :func:`use_profile`, so a notebook
given only ``profile`` (``papermill NB.ipynb OUT.ipynb -p profile paper``) loads that
profile's values, explicit values winning, and shows every value it used once. The page
then gets its runs from its declaration (:func:`sddlib.book.pages.page_runs`), their
levels with :func:`gather`, and states what they show: numbers glued into the text
(:func:`glue`), claims with their judgement over seeds (:func:`claim`, collected by the
landing page with :func:`book_claims`), and tables.
"""
from __future__ import annotations

import ast
import html
import inspect
import json
import math
from pathlib import Path
from typing import Any, Iterable, Optional

import pandas as pd
import yaml

from sddlib.analysis.metrics import curve_summary
from sddlib.base.cache import cached
from sddlib.book import pages
from sddlib.book.build import each_once, executed_profile, plan_runs
from sddlib.book.profiles import (
    LANDING,
    NOTEBOOK_DIR,
    book_folder,
    finished,
    in_kernel,
    notebook_names,
    notebook_parameters,
    parameters_cell_defaults,
    progress_setting,
    stack_setting,
    store,
    workers_setting,
)
from sddlib.config.fields import ExperimentConfig
from sddlib.config.project import load_settings
from sddlib.scheduling.sweep import run_many


def use_profile(name: str, namespace: dict, show: bool = True) -> None:
    """Give notebook ``name`` the parameters of the profile its ``profile`` parameter names.

    Called by every notebook in the cell after its ``parameters`` cell, with
    ``globals()``. The profile's parameters come from the root ``_config.yml`` (as
    ``sddlib figures --profile`` gives them); values set explicitly win: those papermill
    injected (``papermill NB.ipynb OUT.ipynb -p profile paper -p seeds "[0]"``; its
    injected cell is read back from the kernel's input history) and those edited in the
    ``parameters`` cell (any value that differs from the cell as written in
    ``notebooks/<name>.py``). The result is checked like ``sddlib figures`` checks it,
    written into ``namespace`` and shown once as the page's parameters box (``show``).
    """
    settings = load_settings()
    if settings.config_path is None:
        raise FileNotFoundError("use_profile: no _config.yml with an sddlib section in the "
                                "working folder or above; run from the repository")
    declared = parameters_cell_defaults(settings.root / NOTEBOOK_DIR / f"{name}.py")
    given = _injected_names(namespace)
    explicit = {key: namespace[key] for key in declared
                if key != "profile" and key in namespace and
                (key in given or namespace[key] != declared[key])}
    profile = namespace.get("profile", declared.get("profile", "quick"))
    parameters = notebook_parameters(settings, profile, name, explicit)
    try:
        pages.check_parameters(name, parameters, declared)
    except ValueError as error:
        raise ValueError(f"{error} (notebook {name}, profile {profile})") from None
    namespace.update(parameters)
    if show:
        from IPython.display import Markdown, display

        used = {key: namespace.get(key, default) for key, default in declared.items()}
        shown = "\n".join(yaml.safe_dump({key: value}, sort_keys=False, width=88,
                                          default_flow_style=None if isinstance(
                                              value, (dict, list)) else False).strip()
                           for key, value in used.items())
        display(Markdown(f"**Parameters** (profile `{profile}`; every value this page was "
                         f"computed with):\n\n```yaml\n{shown}\n```"))


def left_for(name: str, key: str, shown, profile: str = "paper") -> list[str]:
    """The variants of page ``name``'s parameter ``key`` (a dict of labels) that
    ``profile`` computes and this page, with ``shown``, leaves out: what a page says it
    left for the paper profile."""
    theirs = notebook_parameters(load_settings(), profile, name).get(key) or {}
    return [label for label in theirs if label not in shown]


def page_parameters(name: str, profile: str) -> dict:
    """The parameters page ``name`` was executed with, when its executed copy in
    :func:`book_folder` was computed on ``profile``; else the profile's own; the
    notebook's defaults for any it leaves out."""
    path = book_folder() / f"{name}.ipynb"
    settings = load_settings()
    defaults = parameters_cell_defaults(settings.root / NOTEBOOK_DIR / f"{name}.py")
    if executed_profile(path) == profile:
        metadata = json.loads(path.read_text())["metadata"]
        if "sddlib" in metadata:
            return {**defaults, **metadata["sddlib"]["parameters"]}
        given = (metadata.get("papermill") or {}).get("parameters") or {}  # papermill's own
        return {**defaults, **notebook_parameters(
            settings, profile, name, {k: v for k, v in given.items() if k != "profile"})}
    return {**defaults, **notebook_parameters(settings, profile, name)}


def _injected_names(namespace: dict) -> set[str]:
    """The names papermill's injected ``# Parameters`` cell assigned, from the IPython
    input history (``In``) of the kernel; empty outside a papermill run."""
    for source in reversed(namespace.get("In") or []):
        if isinstance(source, str) and source.lstrip().startswith("# Parameters"):
            try:
                tree = ast.parse(source)
            except SyntaxError:
                return set()
            return {target.id for node in tree.body if isinstance(node, ast.Assign)
                    for target in node.targets if isinstance(target, ast.Name)}
    return set()


def gather(variants: dict[str, list[ExperimentConfig]], compute_missing: bool = True,
           label: str = "variant"):
    """The tidy levels of every variant's runs, with a ``label`` column naming the variant.

    The runs of all variants are computed in one :func:`sddlib.scheduling.sweep.run_many` call, so
    on CUDA runs that differ only in seed, label noise or pruning criterion train together as
    stacked ensembles, across variants (see :func:`sddlib.scheduling.groups.stack_groups`; on the
    CPU stacking does not pay, see :func:`sddlib.scheduling.groups.stacking_pays`).
    ``SDDLIB_STACK=1`` in the environment stacks on any device, ``SDDLIB_STACK=0`` never
    (``sddlib figures`` passes the environment on to the notebooks). The runs (or stacked groups)
    train in parallel processes, one per core on the CPU (see :mod:`sddlib.scheduling.parallel`);
    ``SDDLIB_WORKERS=N`` sets how many (``auto`` by default, ``1``: one after another). A run in two
    variants is computed once (at the most ``levels`` asked for) and its rows appear under both
    labels, each cut at that variant's ``levels``. With ``compute_missing=False`` nothing is
    computed and each variant shows its finished runs, as
    :func:`sddlib.scheduling.sweep.run_many` says.
    """
    settings = load_settings()
    progress = progress_setting()
    if compute_missing:
        wanted = each_once(config for group in variants.values() for config in group)
        if in_kernel() and not progress:
            missing = [c for c in wanted.values() if not finished(c)]
            if missing:  # one line instead of the bars (see progress_setting)
                print(f"computing {len(missing)} of {len(wanted)} runs (SDDLIB_PROGRESS=1 "
                      "shows their progress bars)")
        run_many(list(wanted.values()), store(), progress=progress,
                 stack=stack_setting(), workers=workers_setting(),
                 data_dir=settings.data_dir)
    frames = []
    for name, group in variants.items():  # now only reads the finished runs
        frame = run_many(group, store(), compute_missing=False, progress=progress,
                         data_dir=settings.data_dir)
        frame[label] = name
        frames.append(frame)
    frame = pd.concat(frames, ignore_index=True)
    if frame.empty:
        raise RuntimeError("no finished runs for this figure; run with compute_missing=True")
    return frame


def computed(function, **arguments):
    """``function(**arguments)`` for a result that comes from no run (the theory page's
    simulations): kept in the run store's ``.analysis`` folder, keyed by the arguments and
    the source of the function's module, and reused (:mod:`sddlib.base.cache`)."""
    module = inspect.getmodule(function)
    return cached(load_settings().runs_dir / ".analysis", f"{module.__name__}.{function.__name__}",
                  arguments, lambda: function(**arguments), code=(module,))


def book_curves(profile: str, exclude: Iterable[str] = (LANDING,)) -> pd.DataFrame:
    """The tidy levels of every finished run the book's pages draw on ``profile`` (each
    page with the parameters it was executed with, :func:`page_parameters`; the runs
    found by :func:`plan_runs`), for analyses across the whole book. Runs not finished
    are left out."""
    settings = load_settings()
    plans = {name: page_parameters(name, profile) for name in notebook_names(settings)
             if name not in exclude}
    wanted = each_once(c for found in plan_runs(settings, plans).values() for c in found)
    return run_many(list(wanted.values()), store(), compute_missing=False, progress=False,
                    data_dir=settings.data_dir)


def book_early_stops(profile: str, patience: int = 3) -> pd.DataFrame:
    """:func:`metrics.early_stop_report` on every curve of the book (:func:`book_curves`)
    long enough to judge (at least twice ``patience`` levels), each named in words
    (``curve``, :func:`curve_name`) and sorted by it; ``validation`` says yes or no."""
    from sddlib.analysis.metrics import early_stop_report

    curves = book_curves(profile)
    if not curves.empty:
        curves = curves[curves.groupby("run")["level"].transform("max") >= 2 * patience]
    if curves.empty:  # no run of the book stored yet
        return pd.DataFrame(columns=["run", "curve", "validation", "keep_level",
                                     "keep_sparsity", "keep_test_acc", "best_level",
                                     "best_sparsity", "best_test_acc", "test_acc_lost",
                                     "levels_saved"])
    report = early_stop_report(curves, by="run", patience=patience)
    described = curves.groupby("run").first()
    report["curve"] = [curve_name(described.loc[run]) for run in report.run]
    report["validation"] = report["validation"].map({True: "yes", False: "no"})
    return report.sort_values("curve", ignore_index=True)


def curve_name(row) -> str:
    """A run's curve in words: dataset, model, noise, criterion, retraining, seed."""
    noise = f"{row.noise:.0%} {row.noise_kind} labels" if row.noise else "clean labels"
    size = ""  # the model's size where the config sets one
    if row.model == "mlp":
        widths = row.widths if isinstance(row.widths, (list, tuple)) else \
            yaml.safe_load(str(row.widths))
        size = " " + "-".join(str(w) for w in widths)
    elif isinstance(getattr(row, "width", None), (int, float)) and not pd.isna(row.width):
        size = f" width {int(row.width)}"
    extras = ""
    if getattr(row, "weight_decay", 0):
        extras += f", L2 {row.weight_decay:g}"
    if getattr(row, "distill_from", "none") not in ("none", None):
        extras += f", distilled ({row.distill_from} teacher)"
    return (f"{row.dataset} {row.model}{size}, {noise}, {row.criterion}, {row.retrain}"
            f"{extras}, seed {row.seed}")


def lottery_runs(experiment: dict, seeds, compute_missing: bool = True):
    """The profile's lottery runs of ``seeds``: their levels (one frame) and the runs
    themselves by seed (for the pages that analyse runs' checkpoints)."""
    variants = pages.configs(experiment, list(seeds), {"lottery": {"retrain": "lottery"}})
    frame = gather(variants, compute_missing)
    return frame, {config.seed: store().find(config) for config in variants["lottery"]}


def lottery_run(experiment: dict, seed: int, compute_missing: bool = True):
    """The profile's lottery run for one seed: its levels, the run itself and its landmarks
    (:func:`lottery_runs` of one seed)."""
    frame, runs = lottery_runs(experiment, [seed], compute_missing)
    return frame, runs[seed], curve_summary(frame)


def glue(name: str, value: Any, display: bool = False) -> None:
    """myst-nb's glue, silent by default: the page shows the value where the text cites it."""
    from myst_nb import glue as myst_glue

    myst_glue(name, value, display=display)
    if type(value).__name__ == "Figure":  # shown where glued, not again below the cell
        import matplotlib.pyplot as plt

        plt.close(value)


CLAIM_PREFIX = "claim:"


def claim(name: str, statement: str, verdict: str, evidence=None) -> None:
    """Glue ``verdict`` (:func:`metrics.verdict`'s words) under ``name`` for the page's
    text, and record the claim with it in the executed page, where the landing page's
    table of every claim in the book (:func:`book_claims`) finds it. ``evidence``: the
    :class:`metrics.Judgement` the verdict rests on, or a dict of them by case (dataset,
    mode); the table shows each one's estimate, interval and seed count."""
    glue(name, verdict)
    if evidence is None:
        cases = []
    elif isinstance(evidence, dict):
        cases = [{"case": str(case), **judgement.record()}
                 for case, judgement in evidence.items()]
    else:
        cases = [{"case": "", **evidence.record()}]
    glue(CLAIM_PREFIX + name, json.dumps({"claim": statement, "verdict": verdict,
                                          "evidence": cases}))


def book_claims(book_dir: Path, names: Iterable[str]) -> pd.DataFrame:
    """Every claim recorded by :func:`claim` in the executed pages ``names`` (in that
    order) under ``book_dir``: columns page (its file name), title (its first heading),
    claim, verdict (the full words), judged (holds / does not hold here / inconclusive
    here / cannot be judged here), evidence (the judgements' records, a list), interval
    (each case's estimate and interval, one line per case) and seeds (the seed counts). A
    page not executed yet contributes nothing."""
    from sddlib.analysis.metrics import INCONCLUSIVE, VERDICTS

    states = (*VERDICTS.values(), INCONCLUSIVE)
    rows = []
    for name in names:
        path = Path(book_dir) / f"{name}.ipynb"
        if not path.is_file():
            continue
        notebook = json.loads(path.read_text())
        title = next((line.lstrip("# ").strip() for cell in notebook["cells"]
                      if cell["cell_type"] == "markdown"
                      for line in "".join(cell["source"]).splitlines()
                      if line.startswith("# ")), name)
        for cell in notebook["cells"]:
            for output in cell.get("outputs", []):
                record = output.get("metadata", {}).get("scrapbook", {})
                if not str(record.get("name", "")).startswith(CLAIM_PREFIX):
                    continue
                text = output["data"][record["mime_prefix"] + "text/plain"]
                found = json.loads(ast.literal_eval("".join(text)))
                judged = next((words for words in states
                               if found["verdict"].startswith(words)), "?")
                cases = found.get("evidence", [])
                rows.append({"page": name, "title": title, "claim": found["claim"],
                             "verdict": found["verdict"], "judged": judged,
                             "evidence": cases,
                             "interval": "\n".join(
                                 (f"{case['case']}: " if case["case"] else "")
                                 + case["interval"] for case in cases),
                             "seeds": _seed_counts(cases)})
    columns = ["page", "title", "claim", "verdict", "judged", "evidence", "interval", "seeds"]
    return pd.DataFrame(rows, columns=columns)


def _seed_counts(cases: list[dict]) -> str:
    """The seed counts of a claim's cases: one number when they agree, else per case."""
    counts = {case["seeds"] for case in cases}
    if len(counts) <= 1:
        return "".join(str(count) for count in counts)
    return "\n".join((f"{case['case']}: " if case["case"] else "") + str(case["seeds"])
                     for case in cases)


def claims_table(claims: pd.DataFrame):
    """:func:`book_claims` as the landing page's table: each claim, its estimate with its
    interval and seed count per case, its verdict and a link to the page that judges it."""
    from sddlib.analysis.metrics import CONFIDENCE

    lines = (lambda text: html.escape(text).replace("\n", "<br>"))  # noqa: E731
    shown = pd.DataFrame({
        "claim": claims.claim,
        f"estimate [{CONFIDENCE:.0%} interval]": [lines(text) or "-"
                                                  for text in claims.interval],
        "seeds": [lines(text) or "-" for text in claims.seeds],
        "verdict": claims.verdict,
        "page": [f'<a href="{page}.html">{title}</a>'
                 for page, title in zip(claims.page, claims.title)]})
    return shown.style.hide(axis="index")


def glue_summary(summary, prefix: str = "") -> None:
    """Glue a curve's landmarks (accuracies and sparsities) for the page's text, its shape
    in words as ``<prefix>shape`` (:func:`shape_words`) and what pruning does to it as
    ``<prefix>path`` (:func:`path_words`)."""
    for key, value in summary.as_dict().items():
        glue(f"{prefix}{key}", value)
    glue(f"{prefix}shape", shape_words(summary))
    glue(f"{prefix}path", path_words(summary))


def shape_words(summary) -> str:
    """Where a curve bottoms out and peaks, in words that hold for every curve: "bottoms
    out at 67.2% sparsity and peaks at 89.3% (84.2%)", or, when its best level comes before
    any worst point, "has no dip before its peak at 20.0% sparsity (84.2%)"."""
    if summary.worst_level < 0:
        return f"has no dip before its peak at {summary.best_sparsity:.1%} sparsity " \
               f"({summary.best_acc:.1%})"
    return f"bottoms out at {summary.worst_sparsity:.1%} sparsity and peaks at " \
           f"{summary.best_sparsity:.1%} ({summary.best_acc:.1%})"


def path_words(summary) -> str:
    """What pruning does to a curve's test accuracy, to follow "pruning ..." in a page's
    text, in words that hold for every curve: "lowers it to 67.3% at 67.2% sparsity, then
    raises it to 80.1% at 89.3%", or, when its best level comes before any worst point,
    "finds no dip before its best, 80.1% at 20.0% sparsity" (never a NaN sparsity)."""
    if summary.worst_level < 0:
        return f"finds no dip before its best, {summary.best_acc:.1%} at " \
               f"{summary.best_sparsity:.1%} sparsity"
    return f"lowers it to {summary.worst_acc:.1%} at {summary.worst_sparsity:.1%} sparsity, " \
           f"then raises it to {summary.best_acc:.1%} at {summary.best_sparsity:.1%}"


# Headings in words for the landmark columns of metrics.summaries and the comparison.
HEADINGS = {"dataset_name": "dataset", "retrain": "retraining", "criterion": "criterion",
            "dense_acc": "dense", "worst_acc": "worst", "worst_sparsity": "worst at sparsity",
            "best_acc": "best", "best_sparsity": "best at sparsity", "last_acc": "last",
            "last_sparsity": "last at sparsity", "seeds": "seeds",
            "three_phases": "three phases", "who": "numbers from", "source": "measured by",
            "data": "data", "training images": "training images",
            "dip": "dip (dense − worst)", "rise": "rise (best − worst)",
            "smallest_phase": "smallest phase [interval]", "over_seeds": "over seeds"}


def summary_table(table, label: str, judgements: Optional[dict] = None):
    """The landmarks of several curves as a readable table (percentages); with
    ``judgements`` (label -> :class:`metrics.Judgement` of its three phases over seeds),
    each curve's smallest phase with its interval and the verdict over seeds beside them."""
    columns = [label, "dense_acc", "worst_acc", "worst_sparsity", "best_acc", "best_sparsity",
               "last_acc", "last_sparsity", "seeds", "three_phases"]
    shown = table[columns].copy()
    if judgements:
        shown["smallest_phase"] = [judgements[key].interval() for key in shown[label]]
        shown["over_seeds"] = [judgements[key].state for key in shown[label]]
    shown["three_phases"] = shown.three_phases.map({True: "yes", False: "no"})
    return _worded(shown, percent=[c for c in columns if c.endswith(("_acc", "_sparsity"))])


def _worded(table, percent):
    """``table`` with word headings (:data:`HEADINGS`), ``percent`` columns in percent."""
    headings = {c: HEADINGS.get(c, c.replace("_", " ")) for c in table.columns}
    shown = table.rename(columns=headings)
    return shown.style.format({headings[c]: "{:.1%}" for c in percent},
                              na_rep="-").hide(axis="index")


def reference_path(name: str) -> Path:
    """A table of published numbers under ``data/reference/``."""
    return load_settings().root / "data" / "reference" / name


def comparison_table(comparison):
    """Ours beside the paper's, per dataset, as a readable table."""
    columns = ["dataset", "who", "source", "data", "training images", "dense_acc",
               "worst_acc", "worst_sparsity", "best_acc", "best_sparsity", "last_acc", "dip",
               "rise"]
    columns = [c for c in columns if c in comparison]
    shown = comparison[columns].sort_values(["dataset", "who"])
    return _worded(shown, percent=[c for c in columns if c.endswith(("_acc", "_sparsity"))
                                   or c in ("dip", "rise")])


def sparsity_list(values) -> str:
    """"name 12.3%, other none": a sparsity per name (NaN: never reached) in words."""
    return ", ".join(f"{name} {sparsity:.1%}" if not math.isnan(sparsity) else f"{name} none"
                     for name, sparsity in dict(values).items())


def percent_table(table, headers: dict, plain=()):
    """The columns of ``headers`` (column -> heading) as a readable table, every one in
    percent but the ``plain`` columns (named by column)."""
    shown = table[list(headers)].rename(columns=headers)
    percent = {headers[c]: "{:.1%}" for c in headers if c not in plain}
    return shown.style.format(percent, na_rep="-").hide(axis="index")


def distance_claims_table(claims):
    """The learning-distance claim per dataset (``metrics.distance_claims``) as a table."""
    return claims.rename(columns={
        "peak_sparsity": "distance peak (sparsity)", "worst_sparsity": "test minimum (sparsity)",
        "levels_apart": "levels apart", "peak_distance": "peak distance",
        "last_distance": "last distance", "last_over_peak": "last / peak",
        "interior_peak": "interior peak", "rho": "Spearman ρ", "rho_levels": "levels in ρ",
    }).style.format({"distance peak (sparsity)": "{:.1%}", "test minimum (sparsity)": "{:.1%}",
                     "levels apart": "{:.0f}", "peak distance": "{:.2f}",
                     "last distance": "{:.2f}", "last / peak": "{:.0%}", "Spearman ρ": "{:.2f}"},
                    na_rep="-").hide(axis="index")


def barrier_table(barriers):
    """Barriers per level (``landscape.barrier_table``) as a table: the training and test
    barrier side by side, with the level's sparsity and its test accuracy at both ends."""
    test = barriers[barriers.split == "test"].set_index("level")
    shown = barriers.pivot(index="level", columns="split", values="barrier").add_suffix(" barrier")
    shown = shown.join(test[["sparsity", "sparse_acc", "redense_acc"]]).reset_index()
    return shown.style.format(
        {"sparsity": "{:.1%}", "sparse_acc": "{:.1%}", "redense_acc": "{:.1%}",
         "train barrier": "{:.3f}", "test barrier": "{:.3f}"}).hide(axis="index")


def stand_in_text(comparison) -> str:
    """One clause per dataset of ours that stands in for one of the paper's
    (``metrics.compare_with_reference`` rows with ``source`` "both"): sizes, dip and rise
    beside the paper's."""
    theirs = comparison[comparison.who.eq("paper")].set_index("dataset")
    ours = comparison[comparison.who.eq("ours") & comparison.source.eq("both")]
    sentences = []
    for _, row in ours.iterrows():
        their = theirs.loc[row["dataset"]]
        sentences.append(
            f"our {row['data']} ({row['training images']:,.0f} training images) stands in for "
            f"the paper's {row['dataset']} ({their['training images']:,.0f}): a dip of "
            f"{row['dip']:.1%} below dense against the paper's {their['dip']:.1%}, a rise of "
            f"{row['rise']:.1%} out of it against {their['rise']:.1%}")
    text = "; ".join(sentences)
    return (text[0].upper() + text[1:]) if text else \
        "No dataset of this profile stands in for one of the paper's"
