"""Hostile outputs and run folders (issue 13): caption.py never writes over an input or a foreign file, a run folder
holding a run is refused (unless resumed or overwritten), one training process per folder (.lock), a killed run's
leftovers are cleaned, a full disk is reported first with the path, and bad checkpoints (NaN weights, another
task's, weights-only, a folder, empty, truncated) are refused by name before anything is written.

Tiny models are trained once per module and their checkpoints reused; refusals happen before any training.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from captioning.checkpoint import save_checkpoint
from captioning.inference.captioner import Caption, Captioner
from captioning.inference.paths import caption_paths
from captioning.tasks import caption, evaluate, train
from captioning.training.run_log import RunLog
from tests.conftest import CONF, compose_train, tiny_overrides
from tests.hostile.probe import assert_refused, changed_files, run_command, snapshot

# ---------------------------------------------------------------- helpers and the runs every case reuses


@contextmanager
def logged():
    """The messages the package logs (INFO and up) while the block runs."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = records.append
    logger = logging.getLogger("captioning")
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@contextmanager
def umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    return int(done.stdout)


def write_lock(run_dir: Path, pid: int, host: str | None = None) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / ".lock").write_text(json.dumps({"pid": pid, "host": host or socket.gethostname()}))


def steps_of(run_dir: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run_dir / "steps.jsonl").read_text().splitlines()]


def image(path: Path, colour: str = "red") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 32), colour).save(path)
    return path


def poisoned(source: Path, target: Path, value: float = float("nan"), prefix: str = "decoder", count: int = 1) -> Path:
    """A copy of checkpoint `source` whose first `count` floating tensors under `prefix` hold `value`."""
    payload = torch.load(source, weights_only=True)
    names = [name for name, tensor in payload["model"].items()
             if name.startswith(prefix) and tensor.is_floating_point()][:count]
    for name in names:
        payload["model"][name][(0,) * payload["model"][name].dim()] = value
    save_checkpoint(payload, target)
    return target


def compose_command(name: str, overrides: list[str]):
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        return compose(name, overrides=overrides)


class Killed(Exception):
    """Stands in for kill -9 in the middle of an epoch."""


@pytest.fixture(scope="module")
def base(synthetic_root) -> list[str]:
    """Three steps of the tiny model, validated once: best.pt and last.pt in seconds."""
    return tiny_overrides(synthetic_root) + ["train.epochs=1", "train.max_steps=3", "train.show_examples=0"]


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("hostile-outputs")


@pytest.fixture(scope="module")
def finished(work, base) -> Path:
    """A finished run's folder (not to be modified: cases copy it)."""
    train(compose_train(base, work / "finished"))
    return work / "finished"


@pytest.fixture(scope="module")
def killed(work, base) -> Path:
    """A fresh run (in a folder holding only Hydra's own files, under umask 022) killed after step 3, with
    last.pt written at step 2."""
    run_dir = work / "killed"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "config.yaml").write_text("seed: 0\n")
    (run_dir / "train.log").write_text("hydra's job log\n")
    hydra_files = snapshot(run_dir)
    original = RunLog.step

    def step_then_die(self, step, *args):
        original(self, step, *args)
        if step == 3:
            raise Killed(f"killed after step {step}")

    with pytest.MonkeyPatch.context() as patch, umask(0o022):
        patch.setattr(RunLog, "step", step_then_die)
        with pytest.raises(Killed):
            train(compose_train(base + ["train.checkpoint_every=2"], run_dir))
    assert changed_files(hydra_files, snapshot(run_dir)) == []
    return run_dir


@pytest.fixture(scope="module")
def resumed(work, base, killed) -> tuple[Path, list[str]]:
    """The killed run, continued in its own folder after a kill -9's leftovers: a torn step line, a stale lock (dead
    pid) and a temporary checkpoint file. -> (run folder, log messages)."""
    run_dir = work / "resumed"
    shutil.copytree(killed, run_dir)
    with open(run_dir / "steps.jsonl", "a") as steps:
        steps.write('{"step": 4, "epo')
    write_lock(run_dir, dead_pid())
    (run_dir / "checkpoints" / "last.pt.k2j4x9.tmp").write_bytes(b"half a checkpoint")
    cfg = compose_train(base + ["train.max_steps=4", f"train.resume={run_dir / 'checkpoints' / 'last.pt'}"], run_dir)
    with logged() as records:
        outcome = run_command(lambda: train(cfg))
    assert outcome.code == 0, outcome.message
    return run_dir, [record.getMessage() for record in records]


@pytest.fixture(scope="module")
def overwritten(work, base, finished) -> tuple[Path, list[str], dict]:
    """A finished run's folder trained into again with train.overwrite=true. -> (folder, log messages, old files)."""
    run_dir = work / "overwritten"
    shutil.copytree(finished, run_dir)
    before = snapshot(run_dir)
    cfg = compose_train(base + ["train.max_steps=2", "train.overwrite=true"], run_dir)
    with logged() as records:
        outcome = run_command(lambda: train(cfg))
    assert outcome.code == 0, outcome.message
    return run_dir, [record.getMessage() for record in records], before


@pytest.fixture(scope="module")
def activity_checkpoint(work, tmp_path_factory) -> Path:
    """best.pt of a very small activity run (clip task): another task's checkpoint."""
    root = tmp_path_factory.mktemp("clips")
    run_dir = work / "activity"
    train(compose_train(["task=activity", f"data.source.root={root}", "data.source.num_train=32",
                         "data.source.num_val=8", "data.source.num_test=4", "data.source.frames=4", "data.frames=4",
                         "train.batch_size=16", "train.epochs=1", "train.max_steps=1", "train.show_examples=0"],
                        run_dir))
    return run_dir / "checkpoints" / "best.pt"


# ---------------------------------------------------------------- caption.py: output never clobbers


def caption_command(checkpoint: Path, images, output: Path, *extra: str):
    spec = images if isinstance(images, str) else str(images)
    return lambda: caption(compose_command("caption", [f"checkpoint={checkpoint}", f"images={spec}",
                                                       f"output={output}", "device=cpu", *extra]))


def photos(folder: Path) -> list[Path]:
    return [image(folder / "a.png", "red"), image(folder / "b.png", "blue")]


def output_is_the_input(tmp: Path):
    return image(tmp / "in.png"), tmp / "in.png", "in.png"


def output_is_an_image_of_the_input_folder(tmp: Path):
    photos(tmp / "photos")
    return tmp / "photos", tmp / "photos" / "b.png", "b.png"


def output_is_an_input_of_a_glob(tmp: Path):
    photos(tmp / "photos")
    return f"{tmp / 'photos'}/*.png", tmp / "photos" / "a.png", "a.png"


def output_is_an_input_of_a_list(tmp: Path):
    a, b = photos(tmp / "photos")
    return f"[{a},{b}]", b, "b.png"


def output_is_a_symlink_to_an_input(tmp: Path):
    a, _ = photos(tmp / "photos")
    (tmp / "link.png").symlink_to(a)
    return tmp / "photos", tmp / "link.png", "link.png"


def output_is_a_hard_link_to_an_input(tmp: Path):
    a, _ = photos(tmp / "photos")
    os.link(a, tmp / "same.png")
    return tmp / "photos", tmp / "same.png", "same.png"


def output_is_an_unrelated_text_file(tmp: Path):
    photos(tmp / "photos")
    (tmp / "notes.txt").write_text("my notes\n")
    return tmp / "photos", tmp / "notes.txt", "notes.txt"


def output_is_an_unrelated_json_object(tmp: Path):
    photos(tmp / "photos")
    (tmp / "captions_train.json").write_text(json.dumps({"images": [], "annotations": []}))
    return tmp / "photos", tmp / "captions_train.json", "captions_train.json"


def output_is_a_json_list_of_other_rows(tmp: Path):
    photos(tmp / "photos")
    (tmp / "scores.json").write_text(json.dumps([{"image_id": 1, "score": 0.5}]))
    return tmp / "photos", tmp / "scores.json", "scores.json"


def output_is_an_existing_folder(tmp: Path):
    photos(tmp / "photos")
    (tmp / "out").mkdir()
    (tmp / "out" / "kept.txt").write_text("kept")
    return tmp / "photos", tmp / "out", "out"


def output_under_a_file(tmp: Path):
    photos(tmp / "photos")
    (tmp / "notes.txt").write_text("my notes\n")
    return tmp / "photos", tmp / "notes.txt" / "captions.json", "notes.txt"


def output_is_the_input_even_with_overwrite(tmp: Path):
    return (*output_is_the_input(tmp), "overwrite=true")


CAPTION_REFUSALS = [output_is_the_input, output_is_an_image_of_the_input_folder, output_is_an_input_of_a_glob,
                    output_is_an_input_of_a_list, output_is_a_symlink_to_an_input, output_is_a_hard_link_to_an_input,
                    output_is_an_unrelated_text_file, output_is_an_unrelated_json_object,
                    output_is_a_json_list_of_other_rows, output_is_an_existing_folder, output_under_a_file]


@pytest.mark.parametrize("case", CAPTION_REFUSALS, ids=lambda case: case.__name__)
def test_caption_output_that_would_clobber_is_refused_before_captioning(case, tmp_path, finished, capsys):
    images, output, culprit, *extra = case(tmp_path)
    before = snapshot(tmp_path)
    outcome = run_command(caption_command(finished / "checkpoints" / "best.pt", images, output, *extra))
    assert_refused(outcome, culprit, before, snapshot(tmp_path))
    assert "\t" not in capsys.readouterr().out  # refused before any image was captioned


def test_caption_output_that_is_the_checkpoint_is_refused(tmp_path, finished, capsys):
    checkpoint = shutil.copy(finished / "checkpoints" / "best.pt", tmp_path / "model.pt")
    photos(tmp_path / "photos")
    before = snapshot(tmp_path)
    outcome = run_command(caption_command(checkpoint, tmp_path / "photos", checkpoint))
    assert_refused(outcome, "model.pt", before, snapshot(tmp_path))
    assert "\t" not in capsys.readouterr().out


def test_caption_output_inside_the_input_folder_is_handled(tmp_path, finished):
    """Captioning a folder into a JSON inside it, twice: the second run does not read its own earlier JSON as an
    image, replaces it, and leaves the images alone."""
    photos(tmp_path / "photos")
    output = tmp_path / "photos" / "captions.json"
    images = snapshot(tmp_path / "photos")
    first = run_command(caption_command(finished / "checkpoints" / "best.pt", tmp_path / "photos", output))
    second = run_command(caption_command(finished / "checkpoints" / "best.pt", tmp_path / "photos", output))
    assert first.code == second.code == 0
    rows = json.loads(output.read_text())["captions"]
    assert sorted(Path(row["image"]).name for row in rows) == ["a.png", "b.png"]
    assert changed_files(images, snapshot(tmp_path / "photos")) == []


def test_caption_output_written_by_caption_is_replaced(tmp_path, finished):
    photos(tmp_path / "photos")
    output = tmp_path / "captions.json"
    output.write_text(json.dumps({"written_by": "captioning-caption", "captions": [
        {"image": "old.png", "caption": "an old caption", "score": -1.0, "alternatives": []}]}))
    outcome = run_command(caption_command(finished / "checkpoints" / "best.pt", tmp_path / "photos", output))
    assert outcome.code == 0, outcome.message
    assert sorted(Path(row["image"]).name for row in json.loads(output.read_text())["captions"]) == ["a.png", "b.png"]


def fake_captioning(calls: list):
    """`caption_paths` callbacks that caption without a model, counting batches."""
    def caption_batch(batch):
        calls.append(len(batch))
        return [Caption("a shape", -1.0) for _ in batch]
    return (lambda path: path.read_bytes()), caption_batch


def test_overwrite_true_replaces_an_unrelated_file(tmp_path, capsys):
    inputs = photos(tmp_path / "photos")
    (tmp_path / "notes.txt").write_text("my notes\n")
    calls: list = []
    load, caption_batch = fake_captioning(calls)
    rows = caption_paths(inputs, load, caption_batch, batch_size=8, output=str(tmp_path / "notes.txt"), overwrite=True)
    assert json.loads((tmp_path / "notes.txt").read_text())["captions"] == rows and calls == [2]
    assert f"replacing {tmp_path / 'notes.txt'}" in capsys.readouterr().err


def test_overwrite_true_never_replaces_an_input(tmp_path):
    inputs = photos(tmp_path / "photos")
    before = snapshot(tmp_path)
    calls: list = []
    load, caption_batch = fake_captioning(calls)
    outcome = run_command(lambda: caption_paths(inputs, load, caption_batch, batch_size=8, output=str(inputs[0]),
                                                overwrite=True))
    assert_refused(outcome, "a.png", before, snapshot(tmp_path))
    assert calls == []


# ---------------------------------------------------------------- run folders: refused unless resumed or overwritten

MARKERS = ["checkpoints/best.pt", "steps.jsonl", "validation.jsonl", "metrics.json", "config.yaml"]


@pytest.mark.parametrize("marker", MARKERS + ["all"])
def test_run_folder_holding_a_run_is_refused(marker, tmp_path, finished, base):
    run_dir = tmp_path / "run"
    if marker == "all":
        shutil.copytree(finished, run_dir)
    else:
        (run_dir / marker).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(finished / marker, run_dir / marker)
    (run_dir / "train.log").write_text("hydra's job log\n")
    before = snapshot(run_dir)
    outcome = run_command(lambda: train(compose_train(base, run_dir)))
    assert_refused(outcome, str(run_dir), before, snapshot(run_dir))
    assert marker.split("/")[0] in outcome.message or marker == "all"
    assert "train.overwrite=true" in outcome.message and not (run_dir / ".lock").exists()


def test_killed_run_folder_is_refused_without_resume(killed, base):
    before = snapshot(killed)
    outcome = run_command(lambda: train(compose_train(base, killed)))
    assert_refused(outcome, str(killed), before, snapshot(killed))


def live_lock_of_this_process(run_dir: Path):
    write_lock(run_dir, os.getpid())
    return f"another training run (pid {os.getpid()}) is using {run_dir}"


def live_lock_of_another_process(run_dir: Path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    write_lock(run_dir, sleeper.pid)
    return f"another training run (pid {sleeper.pid}) is using {run_dir}", sleeper


def lock_of_another_host(run_dir: Path):
    write_lock(run_dir, 12345, host="other-node-7")
    return "pid 12345 on host other-node-7"


def unreadable_lock(run_dir: Path):
    run_dir.mkdir()
    (run_dir / ".lock").write_text('{"pid": ')
    return str(run_dir / ".lock")


def lock_that_is_a_folder(run_dir: Path):
    (run_dir / ".lock").mkdir(parents=True)
    return str(run_dir / ".lock")


def run_folder_that_is_a_file(run_dir: Path):
    run_dir.write_text("not a folder")
    return str(run_dir)


@pytest.mark.parametrize("case", [live_lock_of_this_process, live_lock_of_another_process, lock_of_another_host,
                                  unreadable_lock, lock_that_is_a_folder, run_folder_that_is_a_file],
                         ids=lambda case: case.__name__)
@pytest.mark.slow
def test_run_folder_in_use_is_refused(case, tmp_path, base):
    run_dir = tmp_path / "run"
    made = case(run_dir)
    culprit, process = (made[0], made[1:]) if isinstance(made, tuple) else (made, ())
    try:
        before = snapshot(tmp_path)
        outcome = run_command(lambda: train(compose_train(base, run_dir)))
        assert_refused(outcome, culprit, before, snapshot(tmp_path))
    finally:
        for sleeper in process:
            sleeper.kill()
            sleeper.wait()


def test_resume_does_not_bypass_a_live_lock(tmp_path, finished, base):
    run_dir = tmp_path / "run"
    shutil.copytree(finished, run_dir)
    culprit = live_lock_of_this_process(run_dir)
    before = snapshot(run_dir)
    cfg = compose_train(base + ["train.max_steps=4", f"train.resume={run_dir / 'checkpoints' / 'last.pt'}"], run_dir)
    assert_refused(run_command(lambda: train(cfg)), culprit, before, snapshot(run_dir))


# ---------------------------------------------------------------- runs that go ahead: what they leave behind


def test_hydra_files_are_no_run_and_stay(killed):
    assert (killed / ".hydra" / "config.yaml").read_text() == "seed: 0\n"
    assert (killed / "train.log").read_text() == "hydra's job log\n"


def test_killed_run_keeps_every_step_line(killed):
    assert steps_of(killed) == [1, 2, 3]


def test_lock_is_released_when_the_run_fails(killed):
    assert not (killed / ".lock").exists()


def test_checkpoints_have_ordinary_permissions(killed):
    assert (killed / "checkpoints" / "last.pt").stat().st_mode & 0o777 == 0o644
    assert (killed / "steps.jsonl").stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_checkpoint_permissions_follow_the_umask(mask, tmp_path):
    with umask(mask):
        save_checkpoint({"model": {}}, tmp_path / "c.pt")
    assert (tmp_path / "c.pt").stat().st_mode & 0o777 == 0o666 & ~mask


@pytest.mark.slow
def test_resume_in_a_run_folder_is_allowed(resumed):
    run_dir, _ = resumed
    assert json.loads((run_dir / "metrics.json").read_text())["step"] == 4


@pytest.mark.slow
def test_resume_continues_the_step_log_without_repeats_or_torn_lines(resumed):
    assert steps_of(resumed[0]) == [1, 2, 3, 4]


@pytest.mark.slow
def test_stale_lock_of_a_dead_process_is_taken_over_with_a_warning(resumed):
    run_dir, messages = resumed
    assert any("stale lock" in message and str(run_dir / ".lock") in message for message in messages), messages
    assert not (run_dir / ".lock").exists()


@pytest.mark.slow
def test_stale_temporary_checkpoints_are_removed(resumed):
    run_dir, messages = resumed
    assert not list((run_dir / "checkpoints").glob("*.tmp"))
    assert any("last.pt.k2j4x9.tmp" in message for message in messages)


def test_overwrite_replaces_a_finished_run_and_says_so(overwritten):
    run_dir, messages, _ = overwritten
    warning = next(message for message in messages if "train.overwrite=true" in message)
    assert str(run_dir) in warning and "checkpoints" in warning and "steps.jsonl" in warning


def test_overwrite_removes_the_old_logs(overwritten):
    run_dir, _, _ = overwritten
    assert steps_of(run_dir) == [1, 2]
    assert len((run_dir / "validation.jsonl").read_text().splitlines()) == 1
    assert len(list((run_dir / "tensorboard").glob("events.out.tfevents.*"))) == 1


def test_overwrite_replaces_the_checkpoints(overwritten):
    run_dir, _, before = overwritten
    assert {"checkpoints/best.pt", "checkpoints/last.pt", "metrics.json"} <= set(changed_files(before, snapshot(run_dir)))
    assert torch.load(run_dir / "checkpoints" / "best.pt", weights_only=True)["step"] == 2


# ---------------------------------------------------------------- a full disk while checkpointing


def torch_save_raising(error: BaseException):
    def save(*args, **kwargs):
        raise error
    return save


def enforce_fail_from_enospc() -> BaseException:
    """What torch.save gives on a full disk: the OSError is the context of an inline_container RuntimeError."""
    try:
        try:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError:  # as torch raises it: the OSError is only the RuntimeError's context, not its cause
            raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 4544 vs 4432")  # noqa: B904
    except RuntimeError as error:
        return error


DISK_FULL = {
    "torch_save_enforce_fail": lambda: ("torch.save", torch_save_raising(enforce_fail_from_enospc())),
    "torch_save_enforce_fail_text": lambda: ("torch.save", torch_save_raising(RuntimeError(
        "[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed writing file data/3: "
        "file write failed (No space left on device)"))),
    "torch_save_oserror": lambda: ("torch.save", torch_save_raising(OSError(errno.ENOSPC, "No space left on device"))),
    "fsync": lambda: ("os.fsync", torch_save_raising(OSError(errno.ENOSPC, "No space left on device"))),
    "mkstemp": lambda: ("tempfile.mkstemp", torch_save_raising(OSError(errno.ENOSPC, "No space left on device"))),
    "quota": lambda: ("torch.save", torch_save_raising(OSError(errno.EDQUOT, "Disk quota exceeded"))),
}


@pytest.mark.parametrize("form", DISK_FULL)
def test_disk_full_while_checkpointing_is_reported_first_and_keeps_the_old_file(form, tmp_path):
    path = save_checkpoint({"model": {"w": torch.zeros(3)}, "step": 1}, tmp_path / "last.pt")
    before = snapshot(tmp_path)
    target, failing = DISK_FULL[form]()
    module, name = target.split(".")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr({"torch": torch, "os": os, "tempfile": tempfile}[module], name, failing)
        outcome = run_command(lambda: save_checkpoint({"model": {"w": torch.ones(3)}, "step": 2}, path))
    reason = "Disk quota exceeded" if form == "quota" else "No space left on device"
    assert outcome.message.startswith(f"error: {reason} while writing {path}")
    assert_refused(outcome, str(path), before, snapshot(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["last.pt"]  # no temporary file left


def test_disk_full_during_training_names_the_checkpoint_and_releases_the_lock(tmp_path, base):
    run_dir = tmp_path / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch, "save", torch_save_raising(enforce_fail_from_enospc()))
        outcome = run_command(lambda: train(compose_train(base, run_dir)))
    assert outcome.code == 1
    assert outcome.message.startswith(f"error: No space left on device while writing {run_dir / 'checkpoints'}")
    assert not (run_dir / ".lock").exists() and not list((run_dir / "checkpoints").iterdir())


# ---------------------------------------------------------------- checkpoints: NaN weights, another task, bad files


def nan_for_caption(tmp: Path, checkpoint: Path, base):
    photos(tmp / "photos")
    return caption_command(checkpoint, tmp / "photos", tmp / "out.json")


def nan_for_evaluate(tmp: Path, checkpoint: Path, base):
    return lambda: evaluate(compose_command("evaluate", [f"checkpoint={checkpoint}", f"output_dir={tmp / 'eval'}",
                                                         "java=none", "device=cpu", "split=val"]))


def nan_for_resume(tmp: Path, checkpoint: Path, base):
    return lambda: train(compose_train(base + ["train.max_steps=4", f"train.resume={checkpoint}"], checkpoint.parents[1]))


def nan_for_init_from(tmp: Path, checkpoint: Path, base):
    return lambda: train(compose_train(base + [f"train.init_from={checkpoint}"], tmp / "new-run"))


def nan_for_captioner(tmp: Path, checkpoint: Path, base):
    return lambda: Captioner.from_checkpoint(checkpoint, device="cpu")


NAN_COMMANDS = [nan_for_caption, nan_for_evaluate, nan_for_resume, nan_for_init_from, nan_for_captioner]


@pytest.mark.parametrize("command", NAN_COMMANDS, ids=lambda command: command.__name__)
def test_nan_weights_are_reported_as_such(command, tmp_path, finished, base):
    run_dir = shutil.copytree(finished, tmp_path / "run")
    checkpoint = poisoned(finished / "checkpoints" / "last.pt", run_dir / "checkpoints" / "last.pt")
    before = snapshot(tmp_path)
    outcome = run_command(command(tmp_path, checkpoint, base))
    assert_refused(outcome, str(checkpoint), before, snapshot(tmp_path))
    assert "non-finite weights (NaN or Inf) in decoder." in outcome.message


@pytest.mark.parametrize("value, prefix, count, named", [
    (float("inf"), "decoder", 1, "in decoder."), (float("-inf"), "encoder", 1, "in encoder."),
    (float("nan"), "encoder", 5, "and 2 more")])
def test_non_finite_weights_are_named(value, prefix, count, named, tmp_path, finished):
    checkpoint = poisoned(finished / "checkpoints" / "best.pt", tmp_path / "bad.pt", value, prefix, count)
    before = snapshot(tmp_path)
    outcome = run_command(lambda: Captioner.from_checkpoint(checkpoint, device="cpu"))
    assert_refused(outcome, "bad.pt", before, snapshot(tmp_path))
    assert named in outcome.message


def test_activity_checkpoint_given_to_an_image_task_resume_is_refused(tmp_path, base, activity_checkpoint):
    cfg = compose_train(base + [f"train.resume={activity_checkpoint}"], tmp_path / "run")
    before = snapshot(activity_checkpoint.parents[1])
    outcome = run_command(lambda: train(cfg))
    assert_refused(outcome, str(activity_checkpoint), before, snapshot(activity_checkpoint.parents[1]))
    assert "'activity' checkpoint" in outcome.message and not (tmp_path / "run").exists()


def test_activity_checkpoint_given_to_an_image_task_init_from_is_refused(tmp_path, base, activity_checkpoint):
    """Its frame encoder (tiny_cnn_frames) does not fit the image encoder: refused by name, nothing trained."""
    cfg = compose_train(base + [f"train.init_from={activity_checkpoint}"], tmp_path / "run")
    before = snapshot(activity_checkpoint.parents[1])
    outcome = run_command(lambda: train(cfg))
    assert_refused(outcome, str(activity_checkpoint), before, snapshot(activity_checkpoint.parents[1]))
    assert not (tmp_path / "run" / "checkpoints" / "best.pt").exists()


def test_weights_only_checkpoint_cannot_be_resumed(tmp_path, finished, base):
    run_dir = shutil.copytree(finished, tmp_path / "run")
    payload = torch.load(finished / "checkpoints" / "best.pt", weights_only=True)
    for key in ("optimizer", "rng", "scheduler", "scaler"):
        payload.pop(key)
    checkpoint = save_checkpoint(payload, run_dir / "weights.pt")
    before = snapshot(run_dir)
    outcome = run_command(lambda: train(compose_train(base + [f"train.resume={checkpoint}"], run_dir)))
    assert_refused(outcome, str(checkpoint), before, snapshot(run_dir))
    assert "train.init_from" in outcome.message


def folder(path: Path) -> None:
    path.mkdir()


def empty(path: Path) -> None:
    path.write_bytes(b"")


def truncated(path: Path, source: Path) -> None:
    data = source.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # cut mid-zip: no central directory


BAD_FILE_COMMANDS = {
    "caption": lambda tmp, checkpoint, base: caption_command(checkpoint, photos(tmp / "photos")[0], tmp / "out.json"),
    "resume": lambda tmp, checkpoint, base: lambda: train(compose_train(base + [f"train.resume={checkpoint}"],
                                                                        tmp / "run")),
    "init_from": lambda tmp, checkpoint, base: lambda: train(compose_train(base + [f"train.init_from={checkpoint}"],
                                                                           tmp / "run")),
    "Captioner": lambda tmp, checkpoint, base: lambda: Captioner.from_checkpoint(checkpoint, device="cpu"),
}


@pytest.mark.parametrize("command", BAD_FILE_COMMANDS)
@pytest.mark.parametrize("kind", ["folder", "empty", "truncated"])
def test_unreadable_checkpoint_file_is_refused_by_name(kind, command, tmp_path, finished, base):
    checkpoint = tmp_path / "model.pt"
    if kind == "truncated":
        truncated(checkpoint, finished / "checkpoints" / "best.pt")
    else:
        {"folder": folder, "empty": empty}[kind](checkpoint)
    work = BAD_FILE_COMMANDS[command](tmp_path, checkpoint, base)
    before = snapshot(tmp_path)
    outcome = run_command(work)
    assert_refused(outcome, str(checkpoint), before, snapshot(tmp_path))
    assert not (tmp_path / "run").exists() and not (tmp_path / "out.json").exists()
