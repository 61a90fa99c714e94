"""The set-up files agree with each other and CI runs the README's own test command."""
import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~ \[]", requirement.strip(), maxsplit=1)[0].lower()


def test_environment_yml_lists_the_same_dependencies_as_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = set(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        wanted |= set(extra)
    environment = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in environment["dependencies"] if isinstance(d, dict))
    listed = {p for p in pip if not p.startswith("-e")}
    assert {r.replace(" ", "") for r in listed} == {r.replace(" ", "") for r in wanted}
    python = [d for d in environment["dependencies"] if isinstance(d, str) and
              d.startswith("python")]
    assert python == ["python=3.11"]


def test_ci_runs_the_readmes_test_command():
    readme = (ROOT / "README.md").read_text()
    commands = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()
                if line.strip() and not line.strip().startswith(("#", "set ", "cd "))]
    assert commands[-1] == "make test"  # the README's test command, after the browser
    assert all("chromium" in line or line.startswith("export CI=") for line in commands[:-1])
    assert "make test" in readme


def test_generated_output_is_ignored_by_git():
    ignored = (ROOT / ".gitignore").read_text().splitlines()
    for path in (".venv/", "data/*", "book/_build/", "build/"):  # build/: a wheel built here
        assert path in ignored


def test_the_wheel_holds_every_package_of_the_library():
    """A plain (non-editable) install finds every concept package, not only the top one."""
    from setuptools import find_packages

    found = set(find_packages(str(ROOT), include=tomllib.loads(
        (ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
        ["find"]["include"]))
    packages = {".".join(path.parent.relative_to(ROOT).parts)
                for path in (ROOT / "sddlib").rglob("__init__.py")}
    assert packages == found and len(packages) > 5
