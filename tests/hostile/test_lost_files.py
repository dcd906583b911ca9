"""No user file is lost: attention maps never replace an input image, a resumed run never trains into another
run's folder, and a refused training command leaves the run folder's `.hydra/` record as it was. Each refusal:
exit status 1, one line naming the culprit, no pre-existing file changed."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from captioning.inference.attention_maps import map_writer
from captioning.inference.captioner import Caption
from captioning.inference.paths import caption_paths
from captioning.tasks import train
from tests.conftest import ROOT, compose_train, tiny_overrides
from tests.hostile.probe import assert_refused, run_command, snapshot


def image(path: Path, colour: str = "red") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 16), colour).save(path)
    return path


class AttendingCaptioner:
    """What `map_writer` asks of a captioner before any captioning: whether its decoder attends."""
    preprocess: dict = {}

    def has_attention(self) -> bool:
        return True


def maps_command(inputs: list[Path], folder: Path | str, overwrite: bool):
    return lambda: map_writer(AttendingCaptioner(), inputs, str(folder), overwrite)


# ---------------------------------------------------------------- attention maps over the input images

@pytest.mark.parametrize("overwrite", [False, True])
def test_maps_written_into_the_images_folder_never_replace_an_image(tmp_path, overwrite):
    """`a.png`'s map is `a.png` itself; `b.jpg`'s map is `b.png`, another input: both are refused, overwrite or not."""
    inputs = [image(tmp_path / "photos" / "a.png"), image(tmp_path / "photos" / "c.jpg")]
    before = snapshot(tmp_path)
    outcome = run_command(maps_command(inputs, tmp_path / "photos", overwrite))
    assert_refused(outcome, f"would be written over {inputs[0]}", before, snapshot(tmp_path))
    assert "one of the inputs" in outcome.message

    other = [image(tmp_path / "more" / "b.jpg", "blue"), image(tmp_path / "more" / "b.png", "green")]
    before = snapshot(tmp_path)
    outcome = run_command(maps_command(other, tmp_path / "more", overwrite))
    assert_refused(outcome, f"the map of {other[0]} would be written over {other[1]}", before, snapshot(tmp_path))


def test_maps_folder_reaching_the_images_through_a_link_is_refused(tmp_path):
    inputs = [image(tmp_path / "photos" / "a.png")]
    (tmp_path / "linked").symlink_to(tmp_path / "photos", target_is_directory=True)
    before = snapshot(tmp_path / "photos")
    outcome = run_command(maps_command(inputs, tmp_path / "linked", True))
    assert_refused(outcome, str(inputs[0]), before, snapshot(tmp_path / "photos"))


def test_maps_folder_that_is_an_input_is_refused(tmp_path):
    inputs = [image(tmp_path / "a.png")]
    before = snapshot(tmp_path)
    outcome = run_command(maps_command(inputs, inputs[0], True))
    assert_refused(outcome, f"that is {inputs[0]}, one of the inputs", before, snapshot(tmp_path))


def test_maps_beside_the_images_and_earlier_maps_are_still_written(tmp_path):
    """A folder of images with another folder for maps works; an earlier map (no input) is replaced on request."""
    inputs = [image(tmp_path / "photos" / "a.jpg")]
    image(tmp_path / "maps" / "a.png", "blue")  # an earlier map
    assert run_command(maps_command(inputs, tmp_path / "maps", False)).code == 1
    assert run_command(maps_command(inputs, tmp_path / "maps", True)).code == 0
    assert run_command(maps_command(inputs, tmp_path / "photos", False)).code == 0  # a.jpg's map a.png is no input


# ---------------------------------------------------------------- caption.py's output: known by its mark, not its shape

def caption_into(inputs: list[Path], output: Path, overwrite: bool = False):
    return lambda: caption_paths(inputs, lambda path: path, lambda batch: [Caption("a red square", -1.0) for _ in batch],
                                 batch_size=4, output=str(output), overwrite=overwrite)


ROWS = [{"image": "mine.png", "caption": "my own careful caption"}]


@pytest.mark.parametrize("content", [ROWS, [], {"written_by": "someone-else", "captions": ROWS}],
                         ids=["rows_without_the_mark", "empty_list", "another_programs_mark"])
def test_json_shaped_like_our_output_is_kept_without_overwrite(tmp_path, content):
    inputs = [image(tmp_path / "photos" / "a.png")]
    output = tmp_path / "captions.json"
    output.write_text(json.dumps(content))
    before = snapshot(tmp_path)
    outcome = run_command(caption_into(inputs, output))
    assert_refused(outcome, f"output={str(output)!r}", before, snapshot(tmp_path))
    if isinstance(content, list):  # the shape of an older caption.py output: the message says why it is kept
        assert "without the mark caption.py writes" in outcome.message and "older caption.py output" in outcome.message
    replaced = run_command(caption_into(inputs, output, overwrite=True))
    assert replaced.code == 0 and json.loads(output.read_text())["captions"] == replaced.value


def test_our_marked_output_is_replaced_and_reads_easily(tmp_path):
    inputs = [image(tmp_path / "photos" / "a.png"), image(tmp_path / "photos" / "b.png", "blue")]
    output = tmp_path / "captions.json"
    first = run_command(caption_into(inputs[:1], output))
    written = json.loads(output.read_text())
    assert first.code == 0 and written == {"written_by": "captioning-caption", "captions": first.value}
    assert output.read_text().startswith('{\n  "written_by": "captioning-caption"')  # the mark heads the file
    second = run_command(caption_into(inputs, output))
    assert second.code == 0 and [row["image"] for row in json.loads(output.read_text())["captions"]] == [
        str(path) for path in inputs]


# ---------------------------------------------------------------- resuming into another run's folder

@pytest.fixture(scope="module")
def runs(tmp_path_factory, synthetic_root) -> tuple[Path, list[str]]:
    """Two finished three-step runs, `first` and `second`, in one folder. -> (that folder, the overrides)."""
    root = tmp_path_factory.mktemp("two-runs")
    base = tiny_overrides(synthetic_root) + ["train.epochs=1", "train.max_steps=3", "train.show_examples=0"]
    train(compose_train(base + ["train.max_steps=2"], root / "first"))
    train(compose_train(base, root / "second"))
    return root, base


def test_resume_into_another_runs_folder_is_refused(runs, tmp_path):
    root, base = runs
    first, second = shutil.copytree(root / "first", tmp_path / "first"), shutil.copytree(root / "second", tmp_path / "second")
    checkpoint = first / "checkpoints" / "last.pt"
    before = snapshot(tmp_path)
    outcome = run_command(lambda: train(compose_train(base + ["train.max_steps=4", f"train.resume={checkpoint}"],
                                                      second)))
    assert_refused(outcome, f"the run folder {second} holds another run", before, snapshot(tmp_path))
    assert f"train.resume={checkpoint}" in outcome.message and f"({first})" in outcome.message
    # The same folder named through a link is the checkpoint's own: it resumes there.
    (tmp_path / "alias").symlink_to(first, target_is_directory=True)
    resumed = run_command(lambda: train(compose_train(base + ["train.max_steps=3", f"train.resume={checkpoint}"],
                                                      tmp_path / "alias")))
    assert resumed.code == 0, resumed.message


def test_resume_branching_into_a_new_folder_still_works(runs, tmp_path):
    root, base = runs
    checkpoint = shutil.copytree(root / "first", tmp_path / "first") / "checkpoints" / "last.pt"
    outcome = run_command(lambda: train(compose_train(base + ["train.max_steps=3", f"train.resume={checkpoint}"],
                                                      tmp_path / "branch")))
    assert outcome.code == 0, outcome.message
    assert (tmp_path / "branch" / "checkpoints" / "last.pt").is_file()


# ---------------------------------------------------------------- Hydra's record of a run, after a refused command

RECORD = {"config.yaml": "seed: 7\n# the earlier run's own config\n", "overrides.yaml": "- seed=7\n",
          "hydra.yaml": "hydra:\n  job:\n    name: train\n"}


@pytest.mark.slow  # the point is Hydra's own writing of .hydra/: a real script run
@pytest.mark.parametrize("case", ["run_folder_holds_a_run", "resume_from_another_run", "bad_option", "folder_in_use"])
def test_refused_training_command_leaves_the_hydra_record(runs, tmp_path, case):
    root, base = runs
    run_dir = shutil.copytree(root / "second", tmp_path / "second")
    (run_dir / ".hydra").mkdir(exist_ok=True)
    for name, content in RECORD.items():
        (run_dir / ".hydra" / name).write_text(content)
    extra = {"run_folder_holds_a_run": [],
             "resume_from_another_run": [f"train.resume={root / 'first' / 'checkpoints' / 'last.pt'}"],
             "bad_option": [f"train.resume={run_dir / 'checkpoints' / 'last.pt'}", "train.grad_clip=-1"],
             "folder_in_use": [f"train.resume={run_dir / 'checkpoints' / 'last.pt'}"]}[case]
    culprit = {"run_folder_holds_a_run": "already holds a run", "resume_from_another_run": "holds another run",
               "bad_option": "train.grad_clip=-1", "folder_in_use": f"(pid {os.getpid()}) is using"}[case]
    if case == "folder_in_use":  # a live training process (this one stands in for it) holds the folder
        (run_dir / ".lock").write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
    before = snapshot(run_dir)
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "train.py"), *base, *extra, "train.device=cpu",
                           f"hydra.run.dir={run_dir}"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 1, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and culprit in last, done.stderr[-2000:]
    after = snapshot(run_dir)
    assert {name: after.get(name) for name in before if not name.endswith(".log")} == {
        name: digest for name, digest in before.items() if not name.endswith(".log")}
    for name, content in RECORD.items():
        assert (run_dir / ".hydra" / name).read_text() == content
