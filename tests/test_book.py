"""The book builds on the smoke profile from `jupyter-book build book/` alone: every page
holds its image and its glued numbers, the landing page lists every claim, the reference
appendix lists every config key and levels.csv column, the build warns about nothing (no
missing reference, no missing glue key), and a reader in Chromium sees no raw TeX, no
broken image and no table wider than the page."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from sddlib.book import build, pages, profiles
from sddlib.book import extension as book_extension
from sddlib.book import figures
from sddlib.config.fields import help_table, parse_assignments
from sddlib.config.project import load_settings
from sddlib.storage.store import LEVEL_COLUMNS

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = load_settings(ROOT)
NOTEBOOKS = profiles.notebook_names(SETTINGS)
TOC = yaml.safe_load((ROOT / "book" / "_toc.yml").read_text())
PARTS = {part["caption"]: [chapter["file"] for chapter in part["chapters"]]
         for part in TOC["parts"]}
FIGURE_PAGES = [name for name in NOTEBOOKS
                if name not in PARTS["Appendix"] and name != profiles.LANDING]
TOC_FILES = [TOC["root"]] + [name for chapters in PARTS.values() for name in chapters]
JUPYTER_BOOK = Path(sys.executable).with_name("jupyter-book")
sys.path.insert(0, str(ROOT / "scripts"))
import check_book  # noqa: E402  (scripts/ is not a package)


def fresh_copy(scratch: Path) -> Path:
    """What a fresh clone holds for the book: the project's settings, the notebooks, the
    book's sources (no executed page), the reference tables and benchmark records."""
    project = scratch / "project"
    ignore = shutil.ignore_patterns("_build", "__pycache__", ".ipynb_checkpoints")
    shutil.copytree(ROOT / "book", project / "book",
                    ignore=shutil.ignore_patterns("_build", "*.ipynb"))
    shutil.copytree(ROOT / "notebooks", project / "notebooks", ignore=ignore)
    shutil.copytree(ROOT / "data" / "reference", project / "data" / "reference")
    shutil.copytree(ROOT / "benchmarks", project / "benchmarks", ignore=ignore)
    shutil.copy(ROOT / "_config.yml", project / "_config.yml")
    return project


@pytest.fixture(scope="module")
def built_book(tmp_path_factory):
    """`SDDLIB_PROFILE=smoke jupyter-book build book/` in a fresh copy, and nothing else."""
    project = fresh_copy(tmp_path_factory.mktemp("book"))
    env = {**os.environ, "SDDLIB_PROFILE": "smoke",
           "SDDLIB_RUNS_DIR": str(project / "data" / "runs")}
    result = subprocess.run([str(JUPYTER_BOOK), "build", "book/"], capture_output=True,
                            text=True, cwd=project, env=env)
    return project / "book", result


def test_the_book_builds_without_warnings(built_book):
    book, result = built_book
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-3000:]
    warnings = [line for line in log.splitlines() if "WARNING" in line or "ERROR" in line]
    assert warnings == []
    assert (book / "_build" / "html" / "index.html").exists()
    for name in NOTEBOOKS:  # every page, executed by the build itself
        assert (book / f"{name}.ipynb").is_file() and \
            (book / "_build" / "html" / f"{name}.html").is_file(), name


def test_the_math_renders_offline(built_book):
    """MathJax is served from the built book itself, never from a CDN."""
    book, _ = built_book
    html = book / "_build" / "html"
    scripts = re.findall(r'<script[^>]*src="([^"]*mathjax[^"]*)"',
                         (html / "learning-distance.html").read_text(), re.I)
    assert scripts == ["_static/mathjax/tex-chtml.js"]
    for page in html.glob("*.html"):  # no page loads anything from outside the book
        assert not re.findall(r'<script[^>]*src="(?:https?:)?//', page.read_text()), page.name
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
    # the parameters once: every value the page was computed with, not the defaults
    assert text.count("every value this page was computed with") == 1
    assert "profile: smoke" in text and 'profile = "quick"' not in text
    declared = profiles.parameters_cell_defaults(ROOT / "notebooks" / f"{name}.py")
    assert not [key for key in declared if f"{key}:" not in text]  # all of them, set or not
    assert "# Parameters" not in text  # papermill's injected cell is hidden


def test_the_landing_page_lists_every_claim_with_its_verdict_and_page(built_book):
    book, _ = built_book
    html = (book / "_build" / "html" / "intro.html").read_text()
    assert re.search(r"<img [^>]*src=\"[^\"]+\.png\"", html), "no headline figure"
    claims = figures.book_claims(book, NOTEBOOKS)
    recorded = sum(1 for name in NOTEBOOKS for cell in json.loads(
        (book / f"{name}.ipynb").read_text())["cells"] if "figures.claim(" in
        "".join(cell["source"]))
    assert len(claims) >= recorded >= 10  # (a loop records several claims in one call)
    assert set(claims.judged) <= {"holds", "does not hold here", "inconclusive here",
                                  "cannot be judged here"}
    assert "interval]" in html  # each claim's estimate and interval over seeds
    for row in claims.itertuples():
        assert row.claim in html and f'href="{row.page}.html"' in html


def test_a_second_pass_executes_nothing(built_book):
    """Every page is up to date: same source, parameters, code and inputs."""
    book, _ = built_book
    lines = []
    build.make_figures("smoke", settings=load_settings(book.parent), book_dir=book,
                         log=lines.append)
    assert lines and all("up to date" in line for line in lines), lines


def test_the_plan_names_the_runs_each_page_read(built_book, monkeypatch):
    """`sddlib figures --compute-only` asks each page for its runs without executing it:
    every run planned is one the built pages used (finished in their store), and every
    page that trains runs plans some."""
    from sddlib.storage.store import RunStore

    book, _ = built_book
    project = book.parent
    monkeypatch.setenv("SDDLIB_RUNS_DIR", str(project / "data" / "runs"))
    settings = load_settings(project)
    planned = build.plan_runs(settings, profiles.checked_parameters(settings, "smoke",
                                                                     NOTEBOOKS))
    store = RunStore(project / "data" / "runs")
    assert not [name for name in NOTEBOOKS if name != "reference" and not planned[name]]
    assert all(store.find(config).is_finished() for found in planned.values()
               for config in found)
    assert build.schedule([c for found in planned.values() for c in found], store,
                            settings.data_dir, workers=1, progress=False) == 0


def need_browser():
    """Skip without Chromium on a developer's machine; under CI (``CI`` set, where
    ``.ci/run`` installs it) a missing browser is a failure, so the check always runs."""
    if check_book.browser() is None:
        if os.environ.get("CI", "").lower() not in ("", "0", "false"):
            pytest.fail("no Chromium under CI: .ci/run installs it (apt-get install chromium)")
        pytest.skip("no Chromium (apt-get install chromium)")


def test_a_reader_sees_every_page_whole(built_book):
    """Headless Chromium: no raw TeX, no image that did not load, no table wider than the
    page (skipped where Chromium is not installed, failed under CI)."""
    need_browser()
    book, _ = built_book
    assert check_book.main([str(book / "_build" / "html")]) == 0


def test_the_reader_check_finds_what_a_reader_would(tmp_path):
    need_browser()
    page = tmp_path / "bad.html"
    page.write_text("<html><body><article style='width:400px'><p>the norm \\(\\|w\\|\\) "
                    "unrendered</p><img src='missing.png'><table style='width:900px'><tr>"
                    "<th>wide</th></tr></table></article></body></html>")
    problems = check_book.check_page(check_book.browser(), page)
    assert any("raw TeX" in p for p in problems), problems
    assert any("image did not load: missing.png" in p for p in problems), problems
    assert any("table 1 (wide)" in p for p in problems), problems
    good = tmp_path / "good.html"
    good.write_text("<html><body><article><p>plain text</p></article></body></html>")
    assert check_book.check_page(check_book.browser(), good) == []


def test_a_missing_page_fails_the_build(tmp_path):
    """The extension refuses to let Jupyter Book exit 0 without every page of the toc."""
    from sphinx.errors import ExtensionError

    project = fresh_copy(tmp_path)
    book = project / "book"
    for name in NOTEBOOKS:  # every notebook page "executed" already
        (book / f"{name}.ipynb").write_text('{"cells": [], "metadata": {}}')
    toc = yaml.safe_load((book / "_toc.yml").read_text())
    toc["parts"][0]["chapters"].append({"file": "no-such-page"})
    (book / "_toc.yml").write_text(yaml.safe_dump(toc))
    with pytest.raises(ExtensionError, match="no-such-page"):
        book_extension.execute_missing(SimpleNamespace(srcdir=str(book)), None)


def test_pages_to_execute_follow_the_profile(tmp_path):
    page = tmp_path / "sdd-datasets.ipynb"
    page.write_text(json.dumps({"cells": [], "metadata": {"sddlib": {"profile": "quick"}}}))
    names = ["intro", "sdd-datasets", "theory"]
    # missing pages, and the landing page with them
    assert book_extension.pages_to_execute(tmp_path, names, "quick", False) == \
        ["intro", "theory"]
    (tmp_path / "theory.ipynb").write_text(page.read_text())
    (tmp_path / "intro.ipynb").write_text(page.read_text())
    assert book_extension.pages_to_execute(tmp_path, names, "quick", False) == []
    # SDDLIB_PROFILE named: pages computed on another profile are executed again
    assert book_extension.pages_to_execute(tmp_path, names, "smoke", True) == names
    assert book_extension.pages_to_execute(tmp_path, names, "smoke", False) == []


def test_papermill_runs_a_page_on_a_profile_from_the_repository_root(tmp_path):
    """`papermill notebooks/NAME.ipynb OUT.ipynb -p profile smoke`: the notebook loads the
    profile's parameters from _config.yml; -p/-y values override them. The runs the page
    computes in its kernel leave one line in the executed notebook, not a progress bar's
    every refresh."""
    out = tmp_path / "out.ipynb"
    env = {**{k: v for k, v in os.environ.items() if k != "SDDLIB_PROGRESS"},
           "SDDLIB_RUNS_DIR": str(tmp_path / "runs")}
    result = subprocess.run(
        [sys.executable, "-m", "papermill", "notebooks/label-noise.ipynb", str(out),
         "-p", "profile", "smoke", "-y", "experiment: {levels: 2}\nseeds: [1]", "-k", "python3",
         "--no-progress-bar"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    cells = json.loads(out.read_text())["cells"]
    box = next("".join(o["data"]["text/markdown"]) for c in cells for o in c.get("outputs", [])
               if "text/markdown" in o.get("data", {}))
    assert "profile: smoke" in box and "train_size: 300" in box  # the smoke profile's values
    assert "levels: 2" in box and "seeds: [1]" in box  # the -y overrides won
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert len(runs) == 5 and all("-n300-" in r and "-seed1-" in r for r in runs), runs
    streams = ["".join(o["text"]) for c in cells for o in c.get("outputs", [])
               if o["output_type"] == "stream"]
    assert len(streams) <= 3, streams[:5]
    assert any("computing 5 of 5 runs" in text for text in streams), streams
    assert not any("\r" in text or "it/s" in text for text in streams), streams


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_the_notebook_papermill_reads_is_its_jupytext_source(name):
    assert profiles.pair_problem(SETTINGS, name) is None


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
    assert TOC["root"] == profiles.LANDING
    assert [name for name in TOC_FILES if name in NOTEBOOKS] == NOTEBOOKS
    assert PARTS["Figures"] + PARTS["Antidotes"] == FIGURE_PAGES
    assert "reference" in PARTS["Appendix"] and "bibliography" in PARTS["Appendix"]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_parameters_cell_defaults_are_the_quick_profile(name):
    defaults = profiles.parameters_cell_defaults(ROOT / "notebooks" / f"{name}.py")
    quick = profiles.notebook_parameters(SETTINGS, "quick", name)
    for key, value in quick.items():
        assert defaults.get(key) == value, f"{name}: parameter {key}"
    for profile in ("smoke", "paper"):
        extra = set(profiles.notebook_parameters(SETTINGS, profile, name)) - set(defaults)
        assert not extra, f"{name}: profile {profile} sets unknown parameters {extra}"


def test_overrides_merge_into_dict_parameters():
    parsed = parse_assignments(["seeds=[0,1,2]", "experiment.noise=0.4"])
    merged = pages.merge({"experiment": {"noise": 0.2, "epochs": 3}, "seeds": [0]}, parsed)
    assert merged == {"experiment": {"noise": 0.4, "epochs": 3}, "seeds": [0, 1, 2]}
    with pytest.raises(ValueError, match="profile"):
        profiles.notebook_parameters(SETTINGS, "huge", NOTEBOOKS[0])
    with pytest.raises(ValueError, match="^colour: not a parameter of notebook"):
        profiles.notebook_parameters(SETTINGS, "quick", NOTEBOOKS[0], {"colour": "red"})


def test_compute_only_computes_a_pages_runs_in_one_schedule_and_executes_nothing(tmp_path):
    from sddlib import cli
    from sddlib.storage.store import RunStore

    runs = tmp_path / "runs"
    args = ["figures", "--compute-only", "--profile", "smoke", "--only", "pruning-criteria",
            "--runs-dir", str(runs)]
    assert cli.main(args) == 0
    stored = RunStore(runs).runs()
    assert sorted(run.config.criterion for run in stored) == ["gradient", "magnitude", "random"]
    assert all(run.is_finished() for run in stored)
    assert not (tmp_path / "book").exists()
    lines = []
    assert build.compute_figures("smoke", ["pruning-criteria"], settings=SETTINGS,
                                   runs_dir=runs, log=lines.append) == 0  # all reused
    table = build.plan_table("smoke", ["pruning-criteria"], settings=SETTINGS)
    assert table.runs.sum() == 3 and table.epochs.sum() == 3 * (3 + 1) * 1
    assert cli.main(["figures", "--ray", "auto", "--profile", "smoke"]) == 2
