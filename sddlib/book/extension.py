"""A Sphinx extension that makes ``jupyter-book build book/`` build the whole book.

Listed in ``book/_config.yml`` (``sphinx.extra_extensions: [sddlib.book.extension]``). Before
Sphinx reads a page, it executes the book's notebook pages that are not there yet, through
the same papermill path as ``sddlib figures`` (:func:`sddlib.book.build.make_figures`: one
process per notebook, parameters checked first), on the profile named by the environment
variable ``SDDLIB_PROFILE`` (``smoke``, ``quick`` or ``paper``; ``quick`` when unset) and
with the run store of ``SDDLIB_RUNS_DIR`` or ``_config.yml``. Pages already executed are
rendered as they are, unless ``SDDLIB_PROFILE`` names another profile than the one they
were computed on: then they are executed again on it (their runs are reused where
stored). The landing page, which lists the claims of the others, is executed again
whenever another page was.

The build fails (Sphinx's extension error, a non-zero exit) when a page cannot be executed
or a page of ``_toc.yml`` is still missing afterwards: Jupyter Book alone would only warn
and exit 0 with a book that lacks it.

Written here rather than taken from Jupyter Book: its own execution (``execute_notebooks:
auto``) runs the notebooks as they are, without the profile's parameters, and in one
process for all of them.
"""
from __future__ import annotations

import os
from pathlib import Path

import yaml

from sddlib.book import build, profiles
from sddlib.config.project import load_settings

PROFILE_VARIABLE = "SDDLIB_PROFILE"
DEFAULT_PROFILE = "quick"
SOURCE_SUFFIXES = (".ipynb", ".md", ".rst")


def pages_to_execute(book_dir: Path, names: list[str], profile: str,
                     profile_named: bool) -> list[str]:
    """The notebook pages of ``names`` to execute before the build: those missing from
    ``book_dir`` and, when the profile was named explicitly, those computed on another."""
    todo = []
    for name in names:
        page = book_dir / f"{name}.ipynb"
        if not page.is_file():
            todo.append(name)
        elif profile_named and build.executed_profile(page) != profile:
            todo.append(name)
    if todo and profiles.LANDING in names and profiles.LANDING not in todo:
        todo.append(profiles.LANDING)
    return todo


def toc_files(book_dir: Path) -> list[str]:
    """Every ``file:`` (and the root) of ``book_dir/_toc.yml``."""
    toc = yaml.safe_load((book_dir / "_toc.yml").read_text()) or {}
    found = [toc["root"]] if "root" in toc else []

    def walk(node):
        if isinstance(node, dict):
            if "file" in node:
                found.append(node["file"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk({key: value for key, value in toc.items() if key != "root"})
    return found


def missing_pages(book_dir: Path) -> list[str]:
    return [name for name in toc_files(book_dir)
            if not any((book_dir / f"{name}{suffix}").is_file() for suffix in SOURCE_SUFFIXES)]


def execute_missing(app, config) -> None:
    """Sphinx ``config-inited`` handler: execute the pages the build needs."""
    from sphinx.errors import ExtensionError
    from sphinx.util import logging

    logger = logging.getLogger(__name__)
    book_dir = Path(app.srcdir)
    named = os.environ.get(PROFILE_VARIABLE, "").strip()
    profile = named or DEFAULT_PROFILE
    settings = load_settings(book_dir)
    if settings.config_path is None:
        raise ExtensionError(f"sddlib.book.extension: no _config.yml with an sddlib section in "
                             f"{book_dir} or above")
    names = profiles.notebook_names(settings)
    todo = pages_to_execute(book_dir, names, profile, bool(named))
    if todo:
        logger.info(f"[sddlib] executing {len(todo)} page(s) on profile {profile!r}: "
                    f"{', '.join(todo)}")
        try:
            build.make_figures(profile, todo, settings=settings, book_dir=book_dir,
                                 log=lambda text: logger.info(text), force=True)
        except (ValueError, RuntimeError, FileNotFoundError) as error:
            raise ExtensionError(f"sddlib.book.extension: {str(error).splitlines()[0]}") from None
    for name in names:  # pages papermill executed directly show their parameters once too
        if (book_dir / f"{name}.ipynb").is_file():
            build.hide_parameter_cells(book_dir / f"{name}.ipynb")
    missing = missing_pages(book_dir)
    if missing:
        raise ExtensionError(f"sddlib.book.extension: page(s) {', '.join(missing)} of _toc.yml "
                             f"have no source in {book_dir}; allowed pages: the notebooks of "
                             f"_config.yml ({', '.join(names)}) or a .md file")


def setup(app):
    app.connect("config-inited", execute_missing)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
