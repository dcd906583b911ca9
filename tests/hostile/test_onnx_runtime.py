"""The torch-free ONNX runtime as a command (`python -m captioning.export.runtime EXPORT_DIR IMAGES...`): bad options,
a missing, damaged or mismatched export folder and unreadable images end in one line naming the culprit, exit
status 1; readable images are still captioned. One tiny export serves the module; `main` runs in-process."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from captioning.export.onnx_export import export_onnx
from captioning.export.runtime import main
from tests.conftest import ROOT, compose_train, tiny_overrides
from tests.hostile.probe import assert_refused, run_command, snapshot

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def export(tmp_path_factory, synthetic_root) -> Path:
    """An export of a 1-step training (the captions are nonsense; the mechanics are what is tested)."""
    from captioning.tasks import train

    run_dir = tmp_path_factory.mktemp("runtime-run")
    train(compose_train(tiny_overrides(synthetic_root) + ["train.epochs=1", "train.max_steps=1",
                                                         "train.show_examples=0"], run_dir))
    return export_onnx(run_dir / "checkpoints" / "best.pt", tmp_path_factory.mktemp("runtime-export"))


@pytest.fixture
def folder(export, tmp_path) -> Path:
    """A copy of the export, free to tamper with."""
    return Path(shutil.copytree(export, tmp_path / "export"))


def picture(path: Path, colour: str = "red") -> Path:
    Image.new("RGB", (40, 30), colour).save(path)
    return path


def runtime(*args) -> tuple:
    return run_command(lambda: main([str(a) for a in args]))


def test_good_images_are_captioned_and_bad_ones_skipped_one_line_each(folder, tmp_path, capsys):
    good = picture(tmp_path / "good.png")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    missing = tmp_path / "missing.jpg"
    huge = tmp_path / "huge.png"
    Image.new("1", (10_000, 9_000)).save(huge)  # 90 M pixels, a few KB: over MAX_IMAGE_PIXELS
    outcome = runtime(folder, empty, good, missing, huge)
    out, err = capsys.readouterr()
    assert outcome.code == 0, outcome.message
    assert [line.split("\t")[0] for line in out.splitlines()] == [str(good)]
    skipped = [line for line in err.splitlines() if line.startswith("skipped ")]
    assert len(skipped) == 3
    assert str(empty) in skipped[0] and str(missing) in skipped[1] and str(huge) in skipped[2]
    assert "over the limit" in skipped[2]
    assert "1 images captioned, 3 skipped" in err


def test_nothing_readable_is_exit_status_one(folder, tmp_path, capsys):
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    before = snapshot(tmp_path)
    outcome = runtime(folder, bad)
    assert_refused(outcome, "nothing could be captioned", before, snapshot(tmp_path))
    assert str(bad) in capsys.readouterr().err


@pytest.mark.parametrize("option, culprit", [
    (["--beam-size", "0"], "--beam-size"),
    (["--beam-size", "-2"], "--beam-size"),
    (["--beam-size", "abc"], "--beam-size"),
    (["--n-best", "0"], "--n-best"),
    (["--n-best", "4", "--beam-size", "2"], "--n-best"),
    (["--batch-size", "0"], "--batch-size"),
    (["--length-penalty", "long"], "--length-penalty"),
])
def test_bad_options_are_refused_in_one_line(folder, tmp_path, option, culprit):
    image = picture(tmp_path / "a.png")
    before = snapshot(tmp_path)
    assert_refused(runtime(folder, image, *option), culprit, before, snapshot(tmp_path))


def swap(folder: Path, name: str, other: str) -> None:
    shutil.copy(folder / other, folder / name)


@pytest.mark.parametrize("tamper, culprit", [
    (lambda f: (f / "step.onnx").unlink(), "step.onnx"),
    (lambda f: (f / "captioner.json").unlink(), "captioner.json"),
    (lambda f: (f / "captioner.json").write_text("{not json"), "captioner.json"),
    (lambda f: (f / "captioner.json").write_text("[1, 2]"), "captioner.json: expected a JSON object, found list"),
    (lambda f: (f / "captioner.json").write_bytes(b"\xff\xfe\x00"), "captioner.json"),
    (lambda f: (f / "init.onnx").write_bytes(b"garbage"), "init.onnx"),
    (lambda f: (f / "encoder.onnx").write_bytes(b""), "encoder.onnx"),
    (lambda f: swap(f, "step.onnx", "encoder.onnx"), "step.onnx"),
    (lambda f: swap(f, "encoder.onnx", "step.onnx"), "encoder.onnx"),
    (lambda f: swap(f, "init.onnx", "step.onnx"), "init.onnx"),
    (lambda f: shutil.rmtree(f), "export"),
], ids=["no-step", "no-json", "bad-json", "json-list", "json-bytes", "garbage-init", "empty-encoder",
        "step-is-encoder", "encoder-is-step", "init-is-step", "no-folder"])
def test_a_damaged_export_folder_is_named_in_one_line(folder, tmp_path, tamper, culprit):
    image = picture(tmp_path / "a.png")
    tamper(folder)
    before = snapshot(tmp_path)
    assert_refused(runtime(folder, image), culprit, before, snapshot(tmp_path))


def test_graphs_of_another_size_are_refused(folder, tmp_path):
    spec = json.loads((folder / "captioner.json").read_text())
    spec["preprocess"]["input_size"] += 8
    (folder / "captioner.json").write_text(json.dumps(spec))
    image = picture(tmp_path / "a.png")
    before = snapshot(tmp_path)
    assert_refused(runtime(folder, image), "encoder.onnx", before, snapshot(tmp_path))


@pytest.mark.slow
def test_the_command_exits_one_with_a_line_and_no_traceback(export, tmp_path):
    image = picture(tmp_path / "a.png")
    command = [sys.executable, "-m", "captioning.export.runtime", str(export), str(image)]
    done = subprocess.run(command + ["--beam-size", "0"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and done.stderr.startswith("error: ") and "--beam-size" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    missing = tmp_path / "missing.png"
    done = subprocess.run(command + [str(missing)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.startswith(f"{image}\t"), done.stderr
    assert f"skipped {missing}" in done.stderr and "Traceback" not in done.stderr
