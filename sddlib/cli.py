"""The ``sddlib`` command.

    sddlib run [CONFIG.yml] [--set key=value]... [--runs-dir DIR]   run or resume one experiment
               [--seeds 0 1 2] [--[no-]stack] [--workers N]          ... once per seed, stacked
                                                                     or side by side
    sddlib sweep GRID.yml [--workers N] [--ray ADDRESS]              compute a grid of runs, here
                                                                     or on a Ray cluster
    sddlib ls [--status S]... [--set key=value]... [--verify]       list runs and their status
                                                                     (damaged ones with why)
    sddlib clean [--unfinished] [--damaged] [--set key=value]...     list (--yes: remove) the
                 [--yes]                                             unfinished, damaged runs
    sddlib show RUN [--runs-dir DIR]                                 print a run's per-level table
    sddlib figures [--profile P] [--only NAME] [-p key=value]...     execute the book's notebooks
    sddlib figures --profile paper --rehearse [--into DIR]           the paper batch in miniature
                   [--device cuda]                                   on the CPU (or the GPU), in
                                                                     a scratch project
    sddlib keys                                                      every config key, its
                                                                     default, allowed values

Bad input (an unknown key, a wrong type, a value out of range) stops the command before
any work with one line naming the key and the allowed values, and the run store is not
touched.
"""
from __future__ import annotations

import argparse
import math
import subprocess
import sys
from pathlib import Path
from typing import Optional

import yaml

from sddlib.book.build import compute_figures, make_figures, plan_table
from sddlib.config.fields import ConfigError, ExperimentConfig, help_table, parse_assignments
from sddlib.config.project import load_settings
from sddlib.engine.experiment import reuse_stored, run_experiment
from sddlib.scheduling.executor import run_all
from sddlib.scheduling.grid import load_grid
from sddlib.scheduling.parallel import parse_workers
from sddlib.scheduling.sweep import run_many
from sddlib.storage.store import (
    STATUS_FILTERS,
    DamagedFileError,
    RunBusyError,
    RunStore,
    parse_config_filter,
    parse_status_filter,
    selected,
)


def main(argv: Optional[list[str]] = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit:  # --help, or a bad flag (one line, see _Parser.error)
        return exit.code if isinstance(exit.code, int) else 2
    if args.command is None:
        print("sddlib: error: give a command: run, sweep, ls, show, clean, figures or keys "
              "(see sddlib --help)", file=sys.stderr)
        return 2
    try:
        return args.handler(args)
    except yaml.YAMLError as error:  # a YAML file read without a name to give (see _settings)
        _error(args.command, f"YAML: {_yaml_problem(error)}")
        return 2
    except (ConfigError, KeyError, ValueError, OSError, RunBusyError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
        if isinstance(error, OSError) and error.filename:
            message = f"{error.filename}: {error.strerror}"
        if isinstance(error, DamagedFileError) and args.command != "clean":
            message += " (sddlib clean --damaged removes the run)"
        _error(args.command, message)
        return 2
    except RuntimeError as error:
        _error(args.command, str(error))
        return 1


def _error(command: str, message: str) -> None:
    """Bad input: one line on stderr, whatever the message held."""
    message = "; ".join(line.strip() for line in str(message).splitlines() if line.strip())
    print(f"sddlib {command}: error: {message}", file=sys.stderr)


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line (no usage block) and exit code 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not allowed; allowed: integers >= 0")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not allowed; allowed: a number of "
                                         "seconds >= 0")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sddlib", description="Sparse double descent "
                     "experiments: run, list and show stored runs.")
    commands = parser.add_subparsers(dest="command")

    run = commands.add_parser("run", help="run or resume one experiment",
                              epilog="keys for --set: see `sddlib keys`")
    run.add_argument("config", nargs="?", type=Path, help="YAML file of key: value pairs")
    _sets_option(run, "override one config key (repeatable)")
    _store_option(run)
    run.add_argument("--data-dir", type=Path, help="dataset cache (default: from _config.yml)")
    run.add_argument("--download", action="store_true",
                     help="download torchvision datasets that are missing")
    run.add_argument("--checkpoint-every", type=_seconds, default=60.0, metavar="SECONDS",
                     help="save a mid-level checkpoint at the first epoch end after this "
                          "many seconds (default 60)")
    run.add_argument("--seeds", type=_seed, nargs="+", metavar="SEED",
                     help="run the config once per seed (replaces its seed); the runs train "
                          "together as one stacked ensemble where they can (models without "
                          "BatchNorm, no rewinding); prints each run's folder")
    stacking = run.add_mutually_exclusive_group()
    stacking.add_argument("--stack", dest="stack", action="store_const", const=True,
                          default="auto", help="with --seeds: train the runs as one stacked "
                          "ensemble (default: only on CUDA, where it pays)")
    stacking.add_argument("--no-stack", dest="stack", action="store_const", const=False,
                          help="with --seeds: train the runs one by one")
    run.add_argument("--workers", default="auto", metavar="N",
                     help="with --seeds: processes training runs at once (default auto: one "
                          "per core on the cpu for runs worth a process, 1 on a gpu)")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.set_defaults(handler=_run)

    sweep = commands.add_parser(
        "sweep", help="compute a grid of runs (finished ones are skipped), in local worker "
        "processes or on a Ray cluster", epilog="GRID.yml: base: (config keys) and grid: "
        "(key: list of values; the runs are their cartesian product); see sddlib.scheduling.grid")
    sweep.add_argument("grid", type=Path, help="grid file (YAML)")
    sweep.add_argument("--workers", default="auto", metavar="N",
                       help="runs at once (default auto: one process per GPU, or one per "
                            "core for runs worth a process; with --ray: no cap)")
    sweep.add_argument("--ray", metavar="ADDRESS", help="run each run as a Ray task: auto "
                       "(the running cluster), local (start Ray here) or host:port; needs "
                       "pip install 'sddlib[ray]'")
    sweep.add_argument("--retries", type=_count, default=2, metavar="N",
                       help="start a run again this many times if its worker is lost "
                            "(default 2)")
    _store_option(sweep)
    sweep.add_argument("--data-dir", type=Path, help="dataset cache (default: from "
                       "_config.yml)")
    sweep.add_argument("--download", action="store_true",
                       help="download torchvision datasets that are missing")
    sweep.add_argument("--checkpoint-every", type=_seconds, default=60.0, metavar="SECONDS",
                       help="mid-level checkpoint period (default 60)")
    sweep.add_argument("--quiet", action="store_true", help="no progress bar")
    sweep.set_defaults(handler=_sweep)

    listing = commands.add_parser(
        "ls", help="list runs with their status: finished, partial, new, running or damaged "
        "(with the damaged file and why)")
    _filter_options(listing)
    listing.add_argument("--verify", action="store_true",
                         help="also hash every checkpoint against checksums.json (reads every "
                              "byte; without it, sizes and zip directories are checked)")
    _store_option(listing)
    listing.set_defaults(handler=_ls)

    clean = commands.add_parser(
        "clean", help="remove unfinished and damaged runs (a dry run unless --yes)",
        description="List, or with --yes remove, the unfinished and damaged runs.",
        epilog="finished and running runs are never removed; a run whose only damage is its "
        "mid-level checkpoint (progress.pt) loses just that file")
    clean.add_argument("--unfinished", action="store_true",
                       help="the unfinished runs (new or partial); with neither flag, the "
                            "unfinished and the damaged ones")
    clean.add_argument("--damaged", action="store_true",
                       help="the damaged runs (as sddlib ls lists them)")
    _sets_option(clean, "only runs whose config has this value (repeatable)")
    clean.add_argument("--yes", action="store_true", help="remove them (without it: list "
                       "what would be removed)")
    _store_option(clean)
    clean.set_defaults(handler=_clean)

    show = commands.add_parser("show", help="print a run's per-level table")
    show.add_argument("run", help="run folder name, a unique prefix of it, or its hash")
    _store_option(show)
    show.set_defaults(handler=_show)

    figures = commands.add_parser(
        "figures", help="execute the book's notebooks into book/ (then: jupyter-book build book/)")
    figures.add_argument("--profile", default="quick", help="smoke, quick or paper "
                         "(profiles in the root _config.yml; default quick)")
    figures.add_argument("--only", action="append", metavar="NAME",
                         help="only this notebook (repeatable)")
    figures.add_argument("-p", dest="parameters", action="append", default=[],
                         metavar="KEY=VALUE", help="override a notebook parameter (in "
                         "every notebook run that has it; all are checked before the first "
                         "runs); YAML values, "
                         "dotted keys into dicts: -p seeds=[0,1,2] -p experiment.noise=0.4")
    _store_option(figures)
    figures.add_argument("--compute-only", action="store_true",
                         help="compute every run the pages need, in one schedule (one pool, "
                              "dependencies first, biggest first), and execute no page")
    figures.add_argument("--plan", action="store_true",
                         help="print what the pages would train (runs and epochs per dataset "
                              "and model) and compute nothing")
    figures.add_argument("--ray", metavar="ADDRESS",
                         help="with --compute-only: run the schedule on a Ray cluster (auto, "
                              "local, or host:port; needs pip install sddlib[ray])")
    figures.add_argument("--force", action="store_true",
                         help="execute every page again, even those up to date (same "
                              "source, parameters, code and inputs)")
    figures.add_argument("--build", action="store_true",
                         help="run jupyter-book build book/ afterwards")
    figures.add_argument("--rehearse", action="store_true",
                         help="rehearse the profile's GPU-box batch on the CPU in minutes: "
                              "every experiment shrunk (a few dozen samples, 1 epoch, 2 "
                              "levels, narrow models), small dataset files in their real "
                              "format, then compute-only, papermill on every page and "
                              "jupyter-book build, all in a scratch project (--into); with "
                              "--compute-only: only its schedule (--ray as above)")
    figures.add_argument("--into", type=Path, metavar="DIR",
                         help="with --rehearse: the scratch project (default: a new "
                              "temporary folder); an earlier rehearsal's keeps its runs")
    figures.add_argument("--device", metavar="DEVICE",
                         help="with --rehearse: where its runs train (default cpu; cuda on "
                              "a GPU box runs the miniature through the CUDA paths)")
    figures.set_defaults(handler=_figures)

    keys = commands.add_parser("keys", help="every config key with its default and allowed "
                               "values")
    keys.set_defaults(handler=_keys)
    return parser


def _filter_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--status", action="append", default=[], metavar="STATUS",
                        help=f"only runs with this status: {', '.join(STATUS_FILTERS)} "
                             "(unfinished: new or partial; repeatable, or comma-separated)")
    _sets_option(parser, "only runs whose config has this value, e.g. --set noise=0.2 "
                         "(repeatable; keys and values as for sddlib run)")


def _sets_option(parser: argparse.ArgumentParser, help: str) -> None:
    """``--set KEY=VALUE``, repeatable, into ``args.sets`` (the one override grammar)."""
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help=help)


def _store_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs-dir", type=Path,
                        help="run store (default: runs_dir in the root _config.yml)")


def _store(args):
    settings = _settings()
    _check_folder(args.runs_dir, "--runs-dir")
    return RunStore(args.runs_dir or settings.runs_dir), settings


def _check_folder(path: Optional[Path], flag: str) -> None:
    if path is not None and path.exists() and not path.is_dir():
        raise ConfigError(f"{flag}: {path} is not a folder")


def _settings():
    """The project settings; a broken ``_config.yml`` is one line naming it."""
    try:
        return load_settings()
    except yaml.YAMLError as error:
        here = Path.cwd().resolve()
        for folder in (here, *here.parents):
            candidate = folder / "_config.yml"
            if candidate.is_file():
                try:
                    yaml.safe_load(candidate.read_text())
                except yaml.YAMLError as found:
                    raise ConfigError(f"_config.yml: {candidate}: {_yaml_problem(found)}") \
                        from None
        raise ConfigError(f"_config.yml: {_yaml_problem(error)}") from None
    except (AttributeError, TypeError) as error:
        raise ConfigError(f"_config.yml: its sddlib and profiles sections must hold key: value "
                          f"pairs ({error})") from None


def _yaml_problem(error: yaml.YAMLError) -> str:
    """``line L, column C: problem`` of a YAML error, in one line."""
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    problem = getattr(error, "problem", None) or getattr(error, "context", None) or str(error)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return f"invalid YAML at {where}{problem}" if where else f"invalid YAML: {problem}"


def config_from(path: Optional[Path], sets: list[str]) -> ExperimentConfig:
    values = {}
    if path is not None:
        if not path.is_file():
            raise ConfigError(f"config: no file {path}" + (" (a folder)" if path.is_dir() else ""))
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError(f"config: cannot read {path}: "
                              f"{getattr(error, 'strerror', None) or error.reason}") from None
        try:
            values = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise ConfigError(f"config: {path}: {_yaml_problem(error)}") from None
        if values is None:
            values = {}
        if not isinstance(values, dict):
            raise ConfigError(f"config: {path} must hold key: value pairs (a YAML mapping), "
                              f"not a {type(values).__name__}")
    return ExperimentConfig.from_dict(values).with_sets(sets)


def _run(args) -> int:
    config = config_from(args.config, args.sets)  # fails before anything is touched
    args.workers = parse_workers(args.workers, "--workers")
    _check_folder(args.data_dir, "--data-dir")
    if args.seeds:
        return _run_seeds(args, [config.replace(seed=seed)
                                 for seed in dict.fromkeys(args.seeds)])
    store, settings = _store(args)
    existing = store.find(config)
    reused = existing is not None and existing.is_finished()
    run = run_experiment(config, store, progress=not args.quiet,
                         checkpoint_seconds=args.checkpoint_every,
                         data_dir=args.data_dir or settings.data_dir, download=args.download)
    if reused:  # said after run_experiment checked that it was trained on this data
        print(f"found finished run {existing.name}; reused it", file=sys.stderr)
    print(_format_table(run.levels(), config.levels), file=sys.stderr)
    print(run.path)
    return 0


def _run_seeds(args, configs: list[ExperimentConfig]) -> int:
    """``sddlib run --seeds``: every seed's run, stacked on CUDA or with ``--stack``."""
    store, settings = _store(args)
    reused = [found.name for config in configs
              if (found := store.find(config)) is not None and found.is_finished()]
    run_many(configs, store, progress=not args.quiet, stack=args.stack, workers=args.workers,
             checkpoint_seconds=args.checkpoint_every,
             data_dir=args.data_dir or settings.data_dir, download=args.download)
    for name in reused:
        print(f"found finished run {name}; reused it", file=sys.stderr)
    for config in configs:
        run = store.find(config)
        print(f"{run.name}:", file=sys.stderr)
        print(_format_table(run.levels(), config.levels), file=sys.stderr)
        print(run.path)
    return 0


def _sweep(args) -> int:
    """``sddlib sweep``: every run of a grid file; exit 1 if any failed."""
    configs = load_grid(args.grid)  # every run checked before anything is touched
    workers = parse_workers(args.workers, "--workers")
    _check_folder(args.data_dir, "--data-dir")
    if args.ray is not None:
        from sddlib.scheduling.distributed import import_ray

        import_ray()
    store, settings = _store(args)
    summary = run_all(configs, store, workers=workers, ray=args.ray,
                      progress=not args.quiet, retries=args.retries,
                      checkpoint_seconds=args.checkpoint_every,
                      data_dir=args.data_dir or settings.data_dir, download=args.download)
    print(summary.report(), file=sys.stderr)
    return 0 if summary.ok else 1


_count = _seed  # a count of retries: an integer >= 0, as a seed


def _ls(args) -> int:
    """``sddlib ls``: the runs, filtered; a damaged run is listed with its problem (the one
    line naming the file), never an error."""
    statuses, where = parse_status_filter(args.status), parse_config_filter(args.sets)
    store, _ = _store(args)
    listed = store.listing(verify=args.verify)
    if not listed:
        print(f"no runs in {store.root}")
        return 0
    shown = [entry for entry in listed if selected(entry, statuses, where)]
    if not shown:
        print(f"no run in {store.root} matches ({len(listed)} runs in all)")
        return 0
    width = max(len(entry.name) for entry in shown)
    print(f"{'run':<{width}}  {'status':<8}  levels")
    for entry in shown:
        problem = f"  {entry.problem}" if entry.problem is not None else ""
        print(f"{entry.name:<{width}}  {entry.status:<8}  {entry.levels()}{problem}")
    return 0


def _clean(args) -> int:
    """``sddlib clean``: list, or with ``--yes`` remove, the unfinished and damaged runs
    that match; finished and running runs are never touched."""
    statuses = parse_status_filter((["unfinished"] if args.unfinished else []) +
                                   (["damaged"] if args.damaged else []) or
                                   ["unfinished", "damaged"])
    where = parse_config_filter(args.sets)
    store, _ = _store(args)
    chosen = [entry for entry in store.listing() if selected(entry, statuses, where)]
    for entry in chosen:
        if not args.yes:
            why = f": {entry.problem}" if entry.problem is not None else ""
            print(f"would remove {entry.name} ({entry.status}, levels {entry.levels()}){why}")
            continue
        try:
            print(store.remove(entry, statuses))
        except RunBusyError as error:
            print(f"kept {entry.name}: {error}")
    if args.yes:
        for leftover in store.tidy():
            print(f"removed {leftover.name} (left by a killed process)")
    elif chosen:
        print(f"{len(chosen)} runs; run again with --yes to remove them")
    else:
        print(f"nothing to remove in {store.root}")
    return 0


def _show(args) -> int:
    store, settings = _store(args)
    run = store.get(args.run.strip())
    run.check()  # a damaged run: one line naming the file, exit 2
    reuse_stored(run, settings.data_dir, progress=True)  # its measures brought up to date
    print(run.path)
    print(_format_table(run.levels(), run.config.levels))
    return 0


def _figures(args) -> int:
    settings = _settings()
    _check_folder(args.runs_dir, "--runs-dir")
    if args.rehearse:
        return _rehearse(args, settings)
    if args.into is not None:
        raise ValueError("--into: only with --rehearse (the scratch project of a rehearsal)")
    if args.device is not None:
        raise ValueError("--device: only with --rehearse (a page's runs take their device "
                         "from -p experiment.device=cuda)")
    overrides = parse_assignments(args.parameters)
    if args.plan:
        table = plan_table(args.profile, args.only, overrides, settings)
        print(table.to_string(index=False) if not table.empty else "no runs")
        print(f"total: {int(table.runs.sum())} runs, {int(table.epochs.sum()):,} epochs")
        return 0
    if args.compute_only:
        compute_figures(args.profile, args.only, overrides, settings, runs_dir=args.runs_dir,
                        log=lambda text: print(text, file=sys.stderr), ray=args.ray)
        return 0
    if args.ray:
        raise ValueError("--ray: only with --compute-only (the pages then only read)")
    make_figures(args.profile, args.only, overrides, settings, runs_dir=args.runs_dir,
                 log=lambda text: print(text, file=sys.stderr), force=args.force)
    if args.build:
        book = settings.root / "book"
        return subprocess.run([str(Path(sys.executable).with_name("jupyter-book")), "build",
                               str(book)]).returncode
    return 0


def _rehearse(args, settings) -> int:
    """``sddlib figures --rehearse``: the profile's batch in miniature (sddlib.book.rehearsal)."""
    from sddlib.book.profiles import profile_section
    from sddlib.book.rehearsal import check_device, check_scratch, rehearse

    given = [flag for flag, value in (("--only", args.only), ("-p", args.parameters),
                                      ("--runs-dir", args.runs_dir), ("--plan", args.plan),
                                      ("--force", args.force), ("--build", args.build))
             if value]
    if given:
        raise ValueError(f"{given[0]}: not with --rehearse, which runs every page of the "
                         "profile in a scratch project of its own; allowed with it: "
                         "--profile, --into, --device, --compute-only, --ray")
    if args.ray and not args.compute_only:
        raise ValueError("--ray: only with --compute-only (the pages then only read)")
    profile_section(settings, args.profile)  # an unknown profile: one line, before anything
    device = check_device(args.device or "cpu")
    if args.into is not None:
        check_scratch(args.into, settings)
    result = rehearse(args.into, args.profile, ray=args.ray, compute_only=args.compute_only,
                      settings=settings, log=lambda text: print(text, file=sys.stderr),
                      device=device)
    print(result.report(), file=sys.stderr)
    print(result.project)
    return 0 if result.ok else 1


def _keys(args) -> int:
    rows = help_table()
    width = max(len(k) for k, _, _ in rows)
    dwidth = max(len(d) for _, d, _ in rows)
    for key, default, text in rows:
        print(f"{key:<{width}}  {default:<{dwidth}}  {text}")
    return 0


def _format_table(table, levels: int) -> str:
    if table.empty:
        return "no finished level yet"
    columns = ["level", "sparsity", "train_acc", "train_acc_clean", "train_acc_corrupted",
               "test_acc", "test_loss", "learning_distance", "activation_entropy", "seconds"]
    shown = table[[c for c in columns if c in table.columns]]
    return shown.to_string(index=False, float_format=lambda v: f"{v:.4f}")


if __name__ == "__main__":
    sys.exit(main())
