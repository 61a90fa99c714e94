"""Each page declared once (sddlib.book.pages): its parameters and its runs."""
from pathlib import Path

import pytest

from sddlib.book import build, pages, profiles
from sddlib.config.project import load_settings

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = load_settings(ROOT)


def test_every_notebook_declares_the_parameters_its_page_declares():
    """The notebook's parameters cell and the page's declaration name the same parameters
    (besides profile and compute_missing), so no parameter escapes its check."""
    assert set(pages.PAGES) == set(profiles.notebook_names(SETTINGS))
    for name, page in pages.PAGES.items():
        cell = profiles.parameters_cell_defaults(ROOT / "notebooks" / f"{name}.py")
        assert set(cell) - set(pages.COMMON) == set(page.parameters), name
        for key, kind in page.parameters.items():  # a shared kind means the same everywhere
            assert kind is pages.PAGES_PARAMETER[key]


def test_a_pages_runs_come_from_its_parameters_without_running_it():
    """The planner reads a page's runs from its declaration: its notebook's code is not
    run (a page whose code would fail still plans), and the runs follow the parameters."""
    plans = profiles.checked_parameters(SETTINGS, "smoke", ["label-noise", "theory"])
    planned = build.plan_runs(SETTINGS, plans)
    noises, seeds = plans["label-noise"]["noises"], plans["label-noise"]["seeds"]
    assert len(planned["label-noise"]) == len(noises) * len(seeds)
    assert {c.seed for c in planned["label-noise"]} == set(seeds)
    network = plans["theory"]["network"]
    assert {c.seed for c in planned["theory"]} == set(network.get("seeds", [0]))
    assert all(c.retrain == "lr-rewind" for c in planned["theory"])
    more = build.plan_runs(SETTINGS, {"label-noise": {**plans["label-noise"],
                                                        "seeds": seeds + [max(seeds) + 1]}})
    assert len(more["label-noise"]) == len(noises) * (len(seeds) + 1)


@pytest.mark.parametrize("name, parameters, message", [
    ("label-noise", {"noises": {"clean": {"noise": 2.0}}}, r"^noises\.clean\.noise: "),
    ("label-noise", {"experiment": {"rate": 7}}, r"^experiment\.rate: "),
    ("label-noise", {"seeds": [-1]}, r"^seeds: \[-1\] is not allowed; allowed: a list of seeds"),
    ("pruning-criteria", {"criteria": ["best"]}, r"^criteria: .*allowed: a list of magnitude"),
    ("antidotes", {"antidotes": {"l2": {"seeds": "x"}}}, r"^antidotes\.l2\.seeds: "),
    ("antidote-capacity", {"width_experiment": {"epochs": 0}}, r"^width_experiment\.epochs: "),
    ("minima-flatness", {"levels_shown": [999]}, r"^levels_shown: \[999\] goes past"),
    ("theory", {"network": {"widths": [0]}}, r"^network\.widths: \[0\] is not allowed"),
    ("antidotes", {"patience": 0}, r"^patience: 0 is not allowed; allowed: an integer >= 1"),
])
def test_a_bad_parameter_is_named_by_its_declared_kind(name, parameters, message):
    defaults = profiles.parameters_cell_defaults(ROOT / "notebooks" / f"{name}.py")
    checked = profiles.notebook_parameters(SETTINGS, "smoke", name)
    with pytest.raises(ValueError, match=message):
        pages.check_parameters(name, pages.merge(checked, parameters), defaults)


def test_the_kinds_tell_the_rehearsal_what_to_shrink():
    from sddlib.book import rehearsal

    assert set(rehearsal.BASE_KEYS) == {"experiment", "width_experiment", "depth_experiment"}
    assert rehearsal.VARIANT_KEYS["width_sweep"] == "width_experiment"
    assert rehearsal.VARIANT_KEYS["noises"] == "experiment"
    assert set(rehearsal.THEORY_KEYS) == {"linear", "isotropic", "random_features"}


def test_a_pages_key_follows_every_module_of_the_library():
    """An executed page is redone when any sddlib module changes, in any package."""
    from sddlib.book import build

    modules = set(build.code_files())
    for package in ("engine", "scheduling", "analysis", "book", "config", "storage"):
        assert any(path.parent.name == package for path in modules), package
    assert build.PACKAGE / "engine" / "train.py" in modules
