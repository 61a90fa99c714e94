"""The book builds on the smoke profile: every figure page holds its image and its glued
numbers, the reference appendix lists every config key and levels.csv column, and the
build warns about nothing (no missing reference, no missing glue key)."""
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sddlib import figures
from sddlib.config import help_table, parse_assignments
from sddlib.project import load_settings
from sddlib.store import LEVEL_COLUMNS

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = load_settings(ROOT)
NOTEBOOKS = figures.notebook_names(SETTINGS)
TOC = yaml.safe_load((ROOT / "book" / "_toc.yml").read_text())
PARTS = {part["caption"]: [chapter["file"] for chapter in part["chapters"]]
         for part in TOC["parts"]}
FIGURE_PAGES = [name for name in NOTEBOOKS if name not in PARTS["Appendix"]]


@pytest.fixture(scope="module")
def built_book(tmp_path_factory):
    scratch = tmp_path_factory.mktemp("book")
    book = scratch / "book"
    shutil.copytree(ROOT / "book", book, ignore=shutil.ignore_patterns("_build", "*.ipynb"))
    figures.make_figures("smoke", settings=SETTINGS, book_dir=book, runs_dir=scratch / "runs",
                         log=lambda text: None)
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    result = subprocess.run([str(jupyter_book), "build", str(book)], capture_output=True,
                            text=True)
    return book, result


def test_the_book_builds_without_warnings(built_book):
    book, result = built_book
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-3000:]
    warnings = [line for line in log.splitlines() if "WARNING" in line or "ERROR" in line]
    assert warnings == []
    assert (book / "_build" / "html" / "index.html").exists()


def test_the_math_renders_offline(built_book):
    """MathJax is served from the built book itself, never from a CDN."""
    book, _ = built_book
    html = book / "_build" / "html"
    scripts = re.findall(r'<script[^>]*src="([^"]*mathjax[^"]*)"',
                         (html / "learning-distance.html").read_text(), re.I)
    assert scripts == ["_static/mathjax/tex-chtml.js"]
    assert (html / "_static" / "mathjax" / "tex-chtml.js").is_file()


@pytest.mark.parametrize("name", FIGURE_PAGES)
def test_every_figure_page_has_its_image_and_glued_numbers(built_book, name):
    book, _ = built_book
    html = (book / "_build" / "html" / f"{name}.html").read_text()
    assert re.search(r"<img [^>]*src=\"[^\"]+\.png\"", html), f"{name}: no figure image"
    pasted = re.findall(r'<span class="pasted-text">([^<]*)</span>', html)
    assert pasted, f"{name}: no glued number in the text"
    text = re.sub(r"<[^>]+>", "", html)  # code blocks are split into highlighted spans
    assert f"sddlib figures --only {name}" in text  # every page says how to rerun it
    # the parameters once: the values it was computed with, not the notebook's defaults
    assert 'profile = "smoke"' in text and 'profile = "quick"' not in text


def test_reference_page_lists_every_key_and_column(built_book):
    book, _ = built_book
    html = (book / "_build" / "html" / "reference.html").read_text()
    text = re.sub(r"<[^>]+>", "", html)
    cells = set(re.findall(r"<td[^>]*>([^<]*)</td>", html))
    assert not [key for key, _, _ in help_table() if key not in cells]
    assert not [column for column in LEVEL_COLUMNS if column not in cells]
    assert "make bench" in text and "sddlib figures --only reference" in text
    # the dated record is shown from benchmarks/MEASUREMENTS.md, not typed into the page
    assert "Building the book" in text
    assert "Building the book" not in (ROOT / "notebooks" / "reference.py").read_text()


def test_toc_lists_every_notebook_and_the_pages():
    files = [name for chapters in PARTS.values() for name in chapters]
    assert [name for name in files if name in NOTEBOOKS] == NOTEBOOKS
    assert PARTS["Figures"] == FIGURE_PAGES
    assert "reference" in PARTS["Appendix"] and "bibliography" in PARTS["Appendix"]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_parameters_cell_defaults_are_the_quick_profile(name):
    defaults = figures.parameters_cell_defaults(ROOT / "notebooks" / f"{name}.py")
    quick = figures.notebook_parameters(SETTINGS, "quick", name)
    for key, value in quick.items():
        assert defaults.get(key) == value, f"{name}: parameter {key}"
    for profile in ("smoke", "paper"):
        extra = set(figures.notebook_parameters(SETTINGS, profile, name)) - set(defaults)
        assert not extra, f"{name}: profile {profile} sets unknown parameters {extra}"


def test_overrides_merge_into_dict_parameters():
    parsed = parse_assignments(["seeds=[0,1,2]", "experiment.noise=0.4"])
    merged = figures.merge({"experiment": {"noise": 0.2, "epochs": 3}, "seeds": [0]}, parsed)
    assert merged == {"experiment": {"noise": 0.4, "epochs": 3}, "seeds": [0, 1, 2]}
    with pytest.raises(ValueError, match="profile"):
        figures.notebook_parameters(SETTINGS, "huge", NOTEBOOKS[0])
    with pytest.raises(ValueError, match="^colour: not a parameter of notebook"):
        figures.notebook_parameters(SETTINGS, "quick", NOTEBOOKS[0], {"colour": "red"})
