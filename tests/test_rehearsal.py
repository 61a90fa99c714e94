"""The paper profile rehearsed in miniature (sddlib.book.rehearsal): its shrinking keeps every
dataset, model, mode, criterion, noise kind and variant; the whole batch (compute-only,
papermill on every page, jupyter-book build) runs on 2 cores with every page executed and
every claim on the landing page; its schedule runs on local Ray; and it never touches the
user's store or book."""
import json
import os
import re
from pathlib import Path

import pytest
import yaml

from sddlib.book import build, figures, profiles, rehearsal
from sddlib.cli import main
from sddlib.config.fields import ExperimentConfig
from sddlib.config.project import load_settings
from sddlib.data import formats
from sddlib.storage.store import RunStore

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = load_settings(ROOT)
NOTEBOOKS = profiles.notebook_names(SETTINGS)
TOC = yaml.safe_load((ROOT / "book" / "_toc.yml").read_text())
APPENDIX = [chapter["file"] for part in TOC["parts"] if part["caption"] == "Appendix"
            for chapter in part["chapters"]]
FIGURE_PAGES = [name for name in NOTEBOOKS if name not in APPENDIX and name != profiles.LANDING]
UNDER_CI = os.environ.get("CI", "").lower() not in ("", "0", "false")


def configs_of(settings, profile="paper"):
    """Every run the pages of ``profile`` ask for, as ``sddlib figures --plan`` finds them."""
    plans = profiles.checked_parameters(settings, profile, NOTEBOOKS)
    return list(build.each_once(c for found in build.plan_runs(settings, plans).values()
                                  for c in found).values())


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return rehearsal.prepare(tmp_path_factory.mktemp("prepared") / "project", SETTINGS)


def test_the_shrunk_profile_keeps_what_the_pages_vary(prepared):
    """Same datasets, models, modes, criteria, noise kinds, noise rates, distillation and
    variants (labels) as the paper profile; every run small, on the CPU, in 1 epoch."""
    def signature(config: ExperimentConfig):
        return (config.dataset, config.model, config.retrain, config.criterion,
                config.noise_kind, config.noise, config.distill_from, config.depth,
                config.schedule, config.image_size, config.weight_decay,
                config.rewind_iteration > 0, bool(config.validation_size))

    paper, rehearsed = configs_of(SETTINGS), configs_of(load_settings(prepared))
    assert {signature(c) for c in rehearsed} == {signature(c) for c in paper}
    assert {"cifar10", "cifar100", "tinyimagenet", "mnist"} <= {c.dataset for c in paper}
    assert {"resnet18", "resnet101", "vgglike", "mlp"} <= {c.model for c in paper}
    for config in rehearsed:
        assert config.device == "cpu" and config.epochs == 1 and config.levels <= 2
        assert config.train_size == rehearsal.TRAIN_SIZE
        assert all(0 < m <= config.epochs for m in config.milestones)
        assert config.validation_size in (0, rehearsal.VALIDATION_SIZE)
        if config.model != "mlp":
            assert config.model_width <= 16
    assert len({c.seed for c in rehearsed}) == 2  # an interval still
    # every page's variants under the same labels
    for name in NOTEBOOKS:
        ours = profiles.notebook_parameters(load_settings(prepared), "paper", name)
        theirs = profiles.notebook_parameters(SETTINGS, "paper", name)
        assert set(ours) >= set(theirs), name
        for key in rehearsal.VARIANT_KEYS:
            if key in theirs:
                assert list(ours[key]) == list(theirs[key]), (name, key)
    # the scratch project's store and datasets are its own, and its profile a shrunk copy
    settings = load_settings(prepared)
    assert settings.runs_dir == prepared / "data" / "runs"
    assert settings.data_dir == prepared / "data" / "datasets"


def test_a_rehearsal_for_the_gpu_differs_only_in_its_device(prepared, tmp_path):
    """``--device cuda`` (prepared here, on a machine without one): every run of every
    page trains on cuda, and the runs are otherwise the CPU rehearsal's."""
    on_gpu = configs_of(load_settings(rehearsal.prepare(tmp_path / "gpu", SETTINGS,
                                                        device="cuda")))
    on_cpu = configs_of(load_settings(prepared))
    assert {config.device for config in on_gpu} == {"cuda"}

    def without_device(configs):
        return sorted(json.dumps({**c.to_dict(), "device": None}, sort_keys=True)
                      for c in configs)

    assert without_device(on_gpu) == without_device(on_cpu)


def test_the_theory_network_check_keeps_its_small_and_pruned_widths(prepared):
    """The network check trains the widths below the target directly and prunes the
    others: the shrunk widths and target split the same way."""
    from sddlib.analysis.network_check import prunable_weights, width_config

    def split(settings):
        network = profiles.notebook_parameters(settings, "paper", "theory")["network"]
        return [prunable_weights(width_config(network["experiment"], w)) <=
                network["target_weights"] for w in network["widths"]]

    assert split(load_settings(prepared)) == split(SETTINGS)


def test_every_dataset_file_is_read_by_its_real_loader(prepared):
    from sddlib.data.datasets import load_clean

    data_dir = load_settings(prepared).data_dir
    for name in formats.WRITERS:
        bundle = load_clean(name, data_dir)
        assert bundle.num_train >= rehearsal.TRAIN_SIZE and bundle.num_test >= \
            rehearsal.TEST_SIZE, name
    assert (data_dir / "tiny-imagenet-200" / "wnids.txt").read_text().count("\n") == 200
    assert load_clean("tinyimagenet", data_dir).x_train.shape[-1] == 32  # resized from 64


@pytest.mark.parametrize("arguments, key", [
    (["--rehearse", "--only", "theory"], "--only"),
    (["--rehearse", "-p", "seeds=[0]"], "-p"),
    (["--rehearse", "--runs-dir", "elsewhere"], "--runs-dir"),
    (["--rehearse", "--ray", "local"], "--ray"),
    (["--rehearse", "--profile", "huge"], "profile"),
    (["--rehearse", "--into", str(ROOT / "book" / "scratch")], "--into"),
    (["--rehearse", "--into", str(ROOT)], "--into"),
    (["--into", "/tmp/somewhere"], "--into"),
    (["--rehearse", "--device", "gpu"], "--device"),
    (["--device", "cuda"], "--device"),
])
def test_bad_rehearsal_flags_are_one_line(arguments, key, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(rehearsal, "prepare", lambda *a, **k: pytest.fail("it started"))
    assert main(["figures", *arguments]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and key in err[0] and "Traceback" not in err[0], err
    assert not (ROOT / "book" / "scratch").exists()


def snapshot(*folders: Path) -> dict:
    return {str(path): path.stat().st_mtime_ns for folder in folders if folder.exists()
            for path in folder.rglob("*")}


@pytest.mark.skipif(not UNDER_CI and not os.environ.get("SDDLIB_REHEARSE"),
                    reason="the whole rehearsal (~3 min on 2 cores) runs under CI "
                           "(CI=true, .ci/run) or with SDDLIB_REHEARSE=1")
def test_the_whole_rehearsal_executes_every_page_and_lists_every_claim(tmp_path, capsys):
    """``sddlib figures --profile paper --rehearse``: every page executed on the paper
    profile without an error output, every figure page with its images, the landing page
    with every claim of the book (judged, or cannot be judged here), the user's store and
    book untouched."""
    before = snapshot(SETTINGS.runs_dir, ROOT / "book")
    code = main(["figures", "--profile", "paper", "--rehearse", "--into", str(tmp_path)])
    captured = capsys.readouterr()
    assert code == 0, captured.err[-4000:]
    assert "wall time" in captured.err and str(tmp_path) in captured.out
    book = tmp_path / "book"
    html = book / "_build" / "html"
    for name in NOTEBOOKS:
        page = json.loads((book / f"{name}.ipynb").read_text())
        errors = [output for cell in page["cells"] for output in cell.get("outputs", [])
                  if output.get("output_type") == "error"]
        assert not errors, (name, errors[:1])
        assert build.executed_profile(book / f"{name}.ipynb") == "paper", name
        assert (html / f"{name}.html").is_file(), name
    for name in FIGURE_PAGES:
        text = (html / f"{name}.html").read_text()
        images = re.findall(r"<img [^>]*src=\"([^\"]+\.png)\"", text)
        assert images and all((html / image).is_file() for image in images), name
        assert "profile: paper" in re.sub(r"<[^>]+>", "", text), name
    claims = figures.book_claims(book, NOTEBOOKS)
    recorded = sum(1 for name in NOTEBOOKS for cell in json.loads(
        (book / f"{name}.ipynb").read_text())["cells"]
        if "figures.claim(" in "".join(cell["source"]))
    assert len(claims) >= recorded >= 10
    assert set(claims.judged) <= {"holds", "does not hold here", "inconclusive here",
                                  "cannot be judged here"}
    landing = (html / "intro.html").read_text()
    for row in claims.itertuples():
        assert row.claim in landing and f'href="{row.page}.html"' in landing, row.claim
    # the runs are the scratch project's, and nothing of the user's changed
    assert RunStore(tmp_path / "data" / "runs").runs()
    assert snapshot(SETTINGS.runs_dir, ROOT / "book") == before


def test_the_rehearsal_schedule_runs_on_local_ray(tmp_path):
    """``sddlib figures --compute-only --profile paper --ray local`` in the scratch
    project, for the pages that read every dataset and model and a run that needs another
    (reinit after its lottery run): every planned run finished, as Ray tasks."""
    pytest.importorskip("ray")
    project = rehearsal.prepare(tmp_path / "project", SETTINGS)
    only = ["sdd-datasets", "lottery-vs-reinit"]
    # Ray's object store capped (runs come back through the shared store, not as objects)
    env = {"RAY_DEFAULT_OBJECT_STORE_MEMORY_PROPORTION": "0.01"}
    done = rehearsal.compute(project, ray="local", only=only, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    settings = load_settings(project)
    plans = profiles.checked_parameters(settings, "paper", only)
    planned = [c for found in build.plan_runs(settings, plans).values() for c in found]
    store = RunStore(settings.runs_dir)
    assert {c.dataset for c in planned} >= {"mnist", "cifar10", "cifar100", "tinyimagenet"}
    assert any(c.retrain == "reinit" for c in planned)
    assert all(store.find(c) is not None and store.find(c).is_finished() for c in planned)
    computed = re.search(r"(\d+) runs computed", done.stderr)
    assert computed and int(computed.group(1)) >= len(build.each_once(planned))


def test_a_project_is_planned_with_its_own_profiles_from_anywhere(tmp_path, monkeypatch):
    """plan_runs executes a page's code in the project's root, as its kernel runs: from a
    folder without a _config.yml (``jupyter-book build /elsewhere/book``), or one with
    other profiles, the page reads the project's own (it read the current folder's)."""
    monkeypatch.chdir(tmp_path)
    plans = profiles.checked_parameters(SETTINGS, "smoke", ["lottery-vs-reinit"])
    planned = build.plan_runs(SETTINGS, plans)["lottery-vs-reinit"]
    smoke = SETTINGS.profiles["smoke"]["common"]["experiment"]
    assert planned and all(c.train_size == smoke["train_size"] and c.width == smoke["width"]
                           for c in planned)
    assert Path.cwd() == tmp_path
