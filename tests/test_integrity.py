"""The run store survives kills, damage, rivals and a full disk.

- kills: ``scripts/kill_trials.py`` kills a tiny run with SIGKILL at random moments,
  lists the store after each kill and resumes the run to its end (it must equal an
  uninterrupted run's table);
- damage: a truncated or corrupted file is named in one line, ``sddlib ls`` lists the run
  as damaged, ``show`` and ``run`` refuse it with exit 2;
- rivals: two processes started on one run at once: one computes it, the other refuses;
- a full disk: a write that fails half way changes nothing already stored;
- ``sddlib ls`` filters and ``sddlib clean``.
"""
import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from sddlib.base import files
from sddlib.cli import main
from sddlib.config.fields import ExperimentConfig
from sddlib.engine import checkpoints, experiment
from sddlib.storage.store import DamagedFileError, RunStore

ROOT = Path(__file__).resolve().parents[1]
TINY = ExperimentConfig(model="mlp", widths=[16, 16], train_size=300, test_size=100, epochs=2,
                        levels=2, batch_size=50, device="cpu")
SETS = ["--set", "model=mlp", "--set", "widths=16,16", "--set", "train_size=300", "--set",
        "test_size=100", "--set", "epochs=2", "--set", "levels=2", "--set", "batch_size=50",
        "--set", "device=cpu"]


def compute(config, root, data_dir):
    return experiment.run_experiment(config, RunStore(root), progress=False,
                                     checkpoint_seconds=0, data_dir=data_dir)


class Stop(Exception):
    pass


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """A finished run of TINY, and the same run stopped in level 1 with a mid-level
    checkpoint (its level 1 trained, then stopped before the level was stored)."""
    base = tmp_path_factory.mktemp("integrity")
    data_dir = tmp_path_factory.getbasetemp() / "datasets"  # conftest's shared data_dir
    finished = compute(TINY, base / "finished", data_dir)

    original = experiment.Experiment.finish_level

    def stop_at_level_1(self, level, model, spent):
        if level == 1:
            raise Stop
        return original(self, level, model, spent)
    experiment.Experiment.finish_level = stop_at_level_1
    try:
        with pytest.raises(Stop):
            compute(TINY, base / "partial", data_dir)
    finally:
        experiment.Experiment.finish_level = original
    partial = RunStore(base / "partial").find(TINY)
    assert partial.levels_done() == 1 and partial.file("progress.pt").exists()
    return finished, partial, data_dir


def copy_run(run, tmp_path, name=None):
    """A copy of ``run``'s folder in a store of its own (``name``: another folder name)."""
    target = tmp_path / "runs" / (name or run.name)
    shutil.copytree(run.path, target)
    return RunStore(tmp_path / "runs"), target


def contents(root: Path) -> dict:
    """Every file under ``root`` (the lock file aside) and the sha256 of its bytes."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".lock" and
            not (p.name.startswith(".") and p.name.endswith(".tmp"))}


def one_line_error(capsys, command: str) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"sddlib {command}: error: "), err
    return err


# ---------------------------------------------------------------------------- kills
@pytest.mark.slow
def test_a_run_killed_at_random_moments_resumes_to_the_same_table(tmp_path, data_dir):
    counts_file = tmp_path / "counts.json"
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "kill_trials.py"),
                             "--trials", "20", "--kills", "2", "--seed", "0", "--jobs", "2",
                             "--data-dir", str(data_dir), "--json", str(counts_file)],
                            capture_output=True, text=True, timeout=300)
    print(result.stdout)  # the counts, for the record (pytest -s)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    counts = json.loads(counts_file.read_text())
    assert counts["trials"] == counts["identical"] == 20
    assert counts["kills"] >= 20 and counts["listings_clean"] == counts["kills"]
    assert counts["mid_level"] > 0  # some kills came while a level was half trained
    assert result.stdout.startswith("20 trials, 20 identical")


# ---------------------------------------------------------------------------- damage
def cut_mid_line(run):
    path = run.file("levels.csv")
    path.write_bytes(path.read_bytes()[:-7])
    return path


def drop_last_row(run):
    path = run.file("levels.csv")
    path.write_text("".join(path.read_text().splitlines(True)[:-1]))
    return path


def garble_a_number(run):
    path = run.file("levels.csv")
    lines = path.read_text().splitlines(True)
    fields = lines[2].split(",")
    fields[3] = "0.7x1"  # train_acc
    lines[2] = ",".join(fields)
    path.write_text("".join(lines))
    return path


def truncate(relative):
    def damage(run):
        path = run.file(*relative.split("/"))
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        return path
    damage.__name__ = f"truncate {relative}"
    return damage


def delete(relative):
    def damage(run):
        path = run.file(*relative.split("/"))
        path.unlink()
        return path
    return damage


def overwrite(relative, data: bytes):
    def damage(run):
        path = run.file(*relative.split("/"))
        path.write_bytes(data)
        return path
    return damage


DAMAGE = [
    pytest.param(cut_mid_line, "truncated", id="levels.csv-cut-mid-line"),
    pytest.param(drop_last_row, "truncated: 2 rows, checksums.json records 3",
                 id="levels.csv-last-row-gone"),
    pytest.param(garble_a_number, "train_acc '0.7x1' is not a number", id="levels.csv-garbled"),
    pytest.param(truncate("meta.json"), "not JSON", id="meta.json-truncated"),
    pytest.param(truncate("checksums.json"), "not JSON", id="checksums.json-truncated"),
    pytest.param(overwrite("checksums.json", b"[1, 2]"), "not a dict",
                 id="checksums.json-a-list"),
    pytest.param(truncate("checkpoints/level_01/final.pt"), "truncated",
                 id="final.pt-truncated"),
    pytest.param(truncate("checkpoints/init.pt"), "truncated", id="init.pt-truncated"),
    pytest.param(truncate("label_noise.npz"), "truncated", id="label_noise.npz-truncated"),
    pytest.param(delete("checkpoints/level_02/mask.pt"), "missing", id="mask.pt-missing"),
    pytest.param(overwrite("checkpoints/level_00/final.pt", b"\0" * 64), "bytes",
                 id="final.pt-zeroed"),
]


@pytest.mark.parametrize("damage, reason", DAMAGE)
def test_a_damaged_file_is_named_in_one_line_and_the_run_listed_as_damaged(
        damage, reason, stored, tmp_path, capsys):
    finished, _, data_dir = stored
    store, folder = copy_run(finished, tmp_path)
    path = damage(store.get(folder.name))
    (listed,) = store.listing()
    assert listed.status == "damaged" and listed.problem.path == path
    assert reason in str(listed.problem)

    before = contents(folder)
    assert main(["ls", "--runs-dir", str(store.root)]) == 0  # ls lists it, never fails
    out = capsys.readouterr().out
    assert f"{folder.name}  damaged" in out and str(path) in out
    assert main(["show", folder.name[:20], "--runs-dir", str(store.root)]) == 2
    assert str(path) in one_line_error(capsys, "show")
    assert main(["run", *SETS, "--runs-dir", str(store.root), "--data-dir", str(data_dir),
                 "--quiet"]) == 2
    assert str(path) in one_line_error(capsys, "run")
    with pytest.raises(DamagedFileError, match=reason.split(":")[0]):
        store.find(TINY)
    assert store.load().empty  # left out, with a warning naming the file
    assert str(path) in capsys.readouterr().err
    assert contents(folder) == before  # refused, not repaired


def test_an_unreadable_config_lists_the_folder_as_damaged(stored, tmp_path, capsys):
    finished, _, data_dir = stored
    store, folder = copy_run(finished, tmp_path)
    config = folder / "config.json"
    config.write_text(config.read_text()[:40])
    (listed,) = store.listing()
    assert listed.status == "damaged" and listed.problem.path == config
    assert listed.levels() == "3/?"  # its levels.csv is whole, its config is not
    assert main(["show", folder.name, "--runs-dir", str(store.root)]) == 2
    assert str(config) in one_line_error(capsys, "show")
    # a folder in a run's place without a config (a crash of older code) is no run either
    config.unlink()
    assert main(["run", *SETS, "--runs-dir", str(store.root), "--data-dir", str(data_dir),
                 "--quiet"]) == 2
    assert "config.json: missing" in one_line_error(capsys, "run")


def test_a_flipped_byte_is_found_by_verify_and_when_loaded(stored, tmp_path, capsys):
    finished, _, data_dir = stored
    store, folder = copy_run(finished, tmp_path)
    path = folder / "checkpoints" / "level_01" / "final.pt"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # inside a tensor: the size and zip directory hold
    path.write_bytes(bytes(data))
    (listed,) = store.listing()
    assert listed.status == "finished"  # the cheap checks read sizes, not bytes
    assert main(["ls", "--verify", "--runs-dir", str(store.root)]) == 0
    assert f"damaged   3/3  {path}: corrupted: its sha256" in capsys.readouterr().out
    run = store.find(TINY)
    with pytest.raises(DamagedFileError, match="CRC") as caught:
        checkpoints.evaluate_pruned(run, 1, data_dir=data_dir)  # loading checks the CRCs
    assert caught.value.path == path


def test_a_damaged_mid_level_checkpoint_is_discarded_and_the_level_redone(stored, tmp_path,
                                                                          capsys):
    finished, partial, data_dir = stored
    store, folder = copy_run(partial, tmp_path)
    progress = folder / "progress.pt"
    progress.write_bytes(progress.read_bytes()[:100])
    (listed,) = store.listing()
    assert listed.status == "damaged" and listed.problem.path == progress
    run = compute(TINY, store.root, data_dir)  # find() leaves it to the resume
    assert "discarding a damaged mid-level checkpoint" in capsys.readouterr().err
    pd.testing.assert_frame_equal(run.levels().drop(columns="seconds"),
                                  finished.levels().drop(columns="seconds"))
    assert [entry.status for entry in store.listing(verify=True)] == ["finished"]


def test_checksums_a_kill_left_out_are_recorded_when_the_run_is_next_locked(stored, tmp_path):
    finished, _, _ = stored
    store, folder = copy_run(finished, tmp_path)
    run = store.get(folder.name)
    whole = run.checksums()
    # killed between level 2's row and its checksums: levels.csv one row ahead is allowed
    behind = {"levels": 2, "files": {k: v for k, v in whole["files"].items()
                                     if "level_02" not in k}}
    (folder / "checksums.json").write_text(json.dumps(behind))
    assert [entry.status for entry in store.listing()] == ["finished"]
    with run.lock():
        pass
    assert run.checksums() == whole
    # a run stored before checksums.json existed is checked by its files alone, then
    # gets one the first time it is locked
    (folder / "checksums.json").unlink()
    assert [entry.status for entry in store.listing(verify=True)] == ["finished"]
    with run.lock():
        pass
    assert run.checksums() == whole


def test_a_run_killed_after_its_last_row_is_tidied_when_found(stored, tmp_path):
    """Killed after the last level's row: its checksums, a temporary file and the level's
    mid-level checkpoint are left; finding the run (as `sddlib run` does) tidies it."""
    finished, partial, _ = stored
    store, folder = copy_run(finished, tmp_path)
    whole = store.get(folder.name).checksums()
    (folder / "checksums.json").write_text(json.dumps({**whole, "levels": 2}))
    shutil.copy(partial.file("progress.pt"), folder / "progress.pt")
    (folder / ".checksums.json.x1y2z3.tmp").write_text("{")
    assert [entry.status for entry in store.listing(verify=True)] == ["finished"]
    run = store.find(TINY)
    assert run.checksums() == whole
    assert sorted(p.name for p in folder.iterdir() if p.is_file()) == [
        ".lock", "checksums.json", "config.json", "label_noise.npz", "levels.csv", "meta.json"]


# ---------------------------------------------------------------------------- rivals
@pytest.mark.slow
def test_two_processes_started_on_one_run_one_computes_the_other_refuses(tmp_path, data_dir):
    """Both start at once (both may create the folder; one rename wins); the one that
    does not get the lock exits 2 with one line. The other is then killed: the store is
    whole."""
    runs = tmp_path / "runs"
    command = [sys.executable, "-m", "sddlib", "run", "--runs-dir", str(runs), "--data-dir",
               str(data_dir), "--quiet", "--checkpoint-every", "0",
               *[s.replace("epochs=2", "epochs=400") for s in SETS]]
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for _ in range(2)]
    deadline = time.time() + 120
    while all(p.poll() is None for p in processes) and time.time() < deadline:
        time.sleep(0.05)
    refused = next((p for p in processes if p.poll() is not None), None)
    computing = next(p for p in processes if p is not refused)
    assert refused is not None, "neither process ended"
    err = refused.stderr.read().strip()
    assert refused.returncode == 2, err
    assert len(err.splitlines()) == 1 and "is being computed by another process (pid " \
        f"{computing.pid} on " in err, err
    assert computing.poll() is None
    (listed,) = RunStore(runs).listing()
    assert listed.status == "running"
    computing.send_signal(signal.SIGKILL)
    computing.wait()
    assert [entry.status for entry in RunStore(runs).listing(verify=True)] in (["partial"],
                                                                                 ["new"])
    assert not list(runs.glob(".*"))  # the loser's hidden staging folder is gone


# ---------------------------------------------------------------------------- disk full
@pytest.mark.parametrize("target", ["levels.csv", "checksums.json", "final.pt", "mask.pt",
                                    "progress.pt"])
def test_a_write_that_fails_half_way_changes_nothing_stored(target, stored, tmp_path,
                                                           monkeypatch, capsys):
    finished, partial, data_dir = stored
    store, folder = copy_run(partial, tmp_path)
    (folder / "progress.pt").unlink()  # level 1 restarts: every kind of write comes
    real_write = files._write_fully
    stored_then = {}

    def full_disk(handle, data):
        name = Path(os.readlink(f"/proc/self/fd/{handle}")).name
        if name.startswith(f".{target}.") and not stored_then:
            stored_then.update(contents(folder))  # what was stored before this write
            real_write(handle, data[: len(data) // 2])  # half of it reached the disk
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_write(handle, data)
    monkeypatch.setattr(files, "_write_fully", full_disk)
    assert main(["run", *SETS, "--runs-dir", str(store.root), "--data-dir", str(data_dir),
                 "--quiet", "--checkpoint-every", "0"]) == 2
    err = one_line_error(capsys, "run")
    assert stored_then and f"{target}: No space left on device" in err
    assert contents(folder) == stored_then  # nothing stored changed
    assert not [p for p in folder.rglob("*") if p.name.endswith(".tmp")]  # no partial file
    assert [entry.status for entry in store.listing(verify=True)] == ["partial"]

    monkeypatch.setattr(files, "_write_fully", real_write)  # space again: it resumes
    run = compute(TINY, store.root, data_dir)
    pd.testing.assert_frame_equal(run.levels().drop(columns="seconds"),
                                  finished.levels().drop(columns="seconds"))


# ---------------------------------------------------------------------------- ls and clean
@pytest.fixture
def mixed(stored, tmp_path):
    """A store with a finished run, a partial one (seed 1 in its config) and a damaged
    one."""
    finished, partial, _ = stored
    store, done = copy_run(finished, tmp_path)
    _, half = copy_run(partial, tmp_path, name="partial-seed1")
    config = json.loads((half / "config.json").read_text())
    (half / "config.json").write_text(json.dumps({**config, "seed": 1}))
    _, broken = copy_run(finished, tmp_path, name="damaged-copy")
    cut_mid_line(store.get(broken.name))
    return store, done.name, half.name, broken.name


@pytest.mark.parametrize("filters, shown", [
    ([], ["finished", "partial", "damaged"]),
    (["--status", "finished"], ["finished"]),
    (["--status", "unfinished"], ["partial"]),
    (["--status", "partial,damaged"], ["partial", "damaged"]),
    (["--status", "damaged", "--status", "finished"], ["finished", "damaged"]),
    (["--set", "seed=1"], ["partial"]),
    (["--set", "seed=0", "--set", "widths=16,16"], ["finished", "damaged"]),
    (["--set", "noise=0.2", "--status", "running"], []),
])
def test_ls_filters_by_status_and_config(filters, shown, mixed, capsys):
    store, *names = mixed
    assert main(["ls", *filters, "--runs-dir", str(store.root)]) == 0
    out = capsys.readouterr().out
    statuses = [line.split()[1] for line in out.splitlines()[1:]]
    assert sorted(statuses) == sorted(shown) or (not shown and "no run in" in out)


@pytest.mark.parametrize("arguments, named, allowed", [
    (["ls", "--status", "done"], "--status", "finished, running, damaged, unfinished"),
    (["ls", "--status", ","], None, None),  # nothing named: no filter, lists all
    (["ls", "--set", "sed=1"], "--set", "seed"),
    (["ls", "--set", "seed=abc"], "seed", "an integer"),
    (["ls", "--set", "criterion=size"], "criterion", "magnitude, gradient, random"),
    (["ls", "--set", "seed"], "--set", "key=value"),
    (["clean", "--set", "retrain=often", "--yes"], "retrain", "lottery"),
])
def test_bad_filters_are_one_line_errors_and_touch_nothing(arguments, named, allowed, mixed,
                                                          capsys):
    store, *_ = mixed
    before = contents(store.root)
    code = main([*arguments, "--runs-dir", str(store.root)])
    if named is None:
        assert code == 0
        return
    assert code == 2
    err = one_line_error(capsys, arguments[0])
    assert named in err and allowed in err
    assert contents(store.root) == before


def test_clean_lists_then_removes_unfinished_and_damaged_runs_only(mixed, capsys):
    store, done, half, broken = mixed
    before = contents(store.root)
    assert main(["clean", "--runs-dir", str(store.root)]) == 0  # a dry run by default
    out = capsys.readouterr().out
    assert f"would remove {half} (partial" in out and f"would remove {broken} (damaged" in out
    assert done not in out and "--yes" in out
    assert contents(store.root) == before

    assert main(["clean", "--damaged", "--yes", "--runs-dir", str(store.root)]) == 0
    assert f"removed {broken} (damaged)" in capsys.readouterr().out
    assert sorted(p.name for p in store.folders()) == sorted([done, half])

    with store.get(half).lock():  # a run being computed is never removed
        assert main(["clean", "--unfinished", "--yes", "--runs-dir", str(store.root)]) == 0
        assert half not in capsys.readouterr().out
    assert main(["clean", "--unfinished", "--yes", "--runs-dir", str(store.root)]) == 0
    assert f"removed {half} (partial)" in capsys.readouterr().out
    assert [p.name for p in store.folders()] == [done]
    assert [entry.status for entry in store.listing(verify=True)] == ["finished"]
    assert not list(store.root.glob(".*"))  # removed folders leave no hidden remains


def test_clean_removes_only_the_damaged_checkpoint_of_a_run_otherwise_whole(stored, tmp_path,
                                                                            capsys):
    _, partial, _ = stored
    store, folder = copy_run(partial, tmp_path)
    (folder / "progress.pt").write_bytes(b"PK\x03\x04 not a checkpoint")
    assert main(["clean", "--damaged", "--yes", "--runs-dir", str(store.root)]) == 0
    assert "damaged mid-level checkpoint; the run keeps its 1 levels" in \
        capsys.readouterr().out
    assert [entry.status for entry in store.listing()] == ["partial"]
    assert not (folder / "progress.pt").exists() and (folder / "levels.csv").exists()


def test_clean_removes_what_killed_processes_left_in_the_store(stored, tmp_path, capsys):
    finished, _, _ = stored
    store, folder = copy_run(finished, tmp_path)
    old = store.root / f".{folder.name}.0badf00d.creating"
    fresh = store.root / f".{folder.name}.1badf00d.creating"
    for leftover in (old, fresh):
        leftover.mkdir()
        (leftover / "meta.json").write_text("{}")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    assert main(["clean", "--yes", "--runs-dir", str(store.root)]) == 0
    assert f"removed {old.name}" in capsys.readouterr().out
    assert not old.exists() and fresh.exists()  # a young one may be a creation at work
    assert [entry.status for entry in store.listing()] == ["finished"]
