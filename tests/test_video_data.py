"""Clips: uniform frame sampling with masks, frame folders and video files, sources, bad clips, the synthetic set."""
import json

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from captioning.data.clips import ClipReadError, check_clip, load_clip, read_frames, sample_indices
from captioning.data.loading import load_splits
from captioning.data.records import DataError, check_inputs
from captioning.data.sources.clips import check_labels, clip_splits, read_labels
from captioning.data.sources.drawing import DIRECTIONS, draw_clip
from captioning.data.sources.synthetic import synthetic_clip_splits
from tests.conftest import compose_train


def write_frames(folder, values, size=16, names=None):
    """A frame folder whose frame k is a flat grey image of brightness values[k]."""
    folder.mkdir(parents=True, exist_ok=True)
    for k, value in enumerate(values):
        name = names[k] if names else f"frame_{k:03d}.png"
        Image.new("RGB", (size, size), (value,) * 3).save(folder / name)
    return folder


def write_video(path, values, size=32):
    """An mp4 (MPEG-4 part 2) whose frame k is flat grey of brightness values[k]; skips when PyAV cannot encode."""
    av = pytest.importorskip("av")
    if "mpeg4" not in av.codecs_available:
        pytest.skip("PyAV has no mpeg4 encoder here")
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = size, size, "yuv420p"
        for value in values:
            frame = av.VideoFrame.from_ndarray(np.full((size, size, 3), value, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def brightness(frames: torch.Tensor) -> list[int]:
    return [round(float(frame.mean()) * 255) for frame in frames]


def test_uniform_sampling_spreads_over_the_clip():
    assert sample_indices(16, 4) == [2, 6, 10, 14]  # the centre of each quarter
    assert sample_indices(8, 8) == list(range(8))
    assert sample_indices(3, 8) == [0, 1, 2]  # short clips keep every frame
    assert sample_indices(100, 5) == [10, 30, 50, 70, 90]


def test_short_clip_is_padded_and_masked(tmp_path):
    folder = write_frames(tmp_path / "clip", [10, 20, 30])
    frames, mask = load_clip(folder, 8, T.ToTensor())
    assert frames.shape == (8, 3, 16, 16)
    assert mask.tolist() == [True] * 3 + [False] * 5
    assert brightness(frames[:3]) == [10, 20, 30] and frames[3:].abs().sum() == 0


def test_frames_are_in_natural_name_order(tmp_path):
    names = [f"f{k}.png" for k in range(12)]  # f10 sorts before f2 as text
    folder = write_frames(tmp_path / "clip", [10 * k for k in range(12)], names=names)
    frames, _ = load_clip(folder, 12, T.ToTensor())
    assert brightness(frames) == [10 * k for k in range(12)]


def test_video_file_round_trip(tmp_path):
    values = [20 * k for k in range(12)]
    path = write_video(tmp_path / "clip.mp4", values)
    frames, mask = load_clip(path, 4, T.ToTensor())
    assert mask.all() and frames.shape == (4, 3, 32, 32)
    expected = [values[i] for i in sample_indices(12, 4)]
    assert np.allclose(brightness(frames), expected, atol=6)  # lossy codec: close, in the right order


def garbage_video(folder):
    (folder / "garbage.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")
    return folder / "garbage.mp4"


def empty_folder(folder):
    (folder / "empty").mkdir()
    return folder / "empty"


def broken_frame(folder):
    clip = write_frames(folder / "broken", [1, 2])
    (clip / "frame_001.png").write_bytes(b"png?")
    return clip


@pytest.mark.parametrize("make, message", [
    (garbage_video, "garbage.mp4: not a readable video"),
    (empty_folder, "empty: clip folder has no frames"),
    (lambda folder: folder / "nowhere", "nowhere: clip not found"),
    (broken_frame, "clip .*broken.*frame_001.png"),
])
def test_bad_clips_are_named(tmp_path, make, message):
    with pytest.raises(ClipReadError, match=message):
        read_frames(make(tmp_path), 8)


def test_check_inputs_on_clips_error_or_skip(tmp_path):
    write_frames(tmp_path / "clips" / "good", [1, 2, 3])
    (tmp_path / "clips" / "empty").mkdir()
    (tmp_path / "clips" / "bad.mp4").write_bytes(b"nonsense")
    (tmp_path / "labels.csv").write_text("clip,label\ngood,walk\nempty,run\nbad.mp4,run\nmissing,walk\n")
    records = clip_splits(train={"clips": tmp_path / "clips", "labels": tmp_path / "labels.csv"})["train"]
    with pytest.raises(DataError, match="3 unreadable clips.*bad.mp4.*empty.*missing"):
        check_inputs(records, check_clip, "error", what="clips")
    assert [r.clip_id for r in check_inputs(records, check_clip, "skip", what="clips")] == ["good"]
    assert [r.clip_id for r in check_inputs(records, check_clip, "skip", full=False, what="clips")] == ["bad.mp4", "good"]  # header: exists, has frames


def test_bad_clip_found_before_training_with_the_image_policy(tmp_path):
    for split in ("train", "val"):
        for k in range(3):
            write_frames(tmp_path / split / f"c{k}", [k, k + 1])
        (tmp_path / split / "labels.csv").write_text("clip,label\n" + "".join(f"c{k},{'ab'[k % 2]}\n" for k in range(3)))
    (tmp_path / "train" / "c1" / "frame_000.png").write_bytes(b"truncated")
    overrides = ["task=activity", "data=clips"] + [f"data.{s}.{key}={tmp_path / s / value}" for s in ("train", "val")
                                                   for key, value in (("clips", ""), ("labels", "labels.csv"))]
    with pytest.raises(DataError, match="c1.*frame_000.png"):
        load_splits(compose_train(overrides).data, captions=False)
    splits = load_splits(compose_train(overrides + ["data.on_bad_image=skip"]).data, captions=False)
    assert [r.clip_id for r in splits["train"]] == ["c0", "c2"]



@pytest.mark.parametrize("option, message", [
    ({"augment": {"hflip": True}}, "data.augment is not supported for clips"),
    ({"features": "store.pt"}, "data.features .* not supported for clips"),
])
def test_clips_refuse_image_only_options(tmp_path, option, message):
    splits = {}
    for split, clip in (("train", "c0"), ("val", "c1")):  # one clip per split: no clip may be in two splits
        write_frames(tmp_path / clip, [1, 2])
        (tmp_path / f"{split}.csv").write_text(f"clip,label\n{clip},a\n")
        splits[split] = {"clips": str(tmp_path), "labels": str(tmp_path / f"{split}.csv")}
    data = {"source": {"name": "clips", **splits}, "verify_images": "header", **option}
    with pytest.raises(DataError, match=message):
        load_splits(data, captions=False)
    assert [r.clip_id for r in load_splits({**data, **{key: None for key in option}}, captions=False)["val"]] == ["c1"]


@pytest.mark.parametrize("text, message", [
    ("video,class\na,b\n", "expected the header 'clip,label'"),
    ("clip,label\na,\n", "line 2 needs a clip name and a label"),
    ("clip,label\na,run\na,walk\n", "clip 'a' has two labels"),
    ("clip,label\n", "no labelled clips"),
])
def test_label_csv_problems(tmp_path, text, message):
    (tmp_path / "labels.csv").write_text(text)
    with pytest.raises(DataError, match=message):
        read_labels(tmp_path / "labels.csv")


def coco_like(path, clips: dict, captions: dict):
    path.write_text(json.dumps({"images": [{"id": i, "file_name": name} for i, name in clips.items()],
                                "annotations": [{"id": f"{i}-{k}", "image_id": i, "caption": c}
                                                for i, cs in captions.items() for k, c in enumerate(cs)]}))
    return path


def test_labels_and_captions_must_name_the_same_clips(tmp_path):
    (tmp_path / "labels.csv").write_text("clip,label\na.mp4,run\nb.mp4,walk\n")
    coco_like(tmp_path / "captions.json", {1: "a.mp4", 3: "c.mp4"}, {1: ["a man runs"], 3: ["a man sits"]})
    with pytest.raises(DataError, match=r"1 without a label \(c.mp4\), 1 without captions \(b.mp4\)"):
        clip_splits(train={"clips": tmp_path, "labels": tmp_path / "labels.csv", "annotations": tmp_path / "captions.json"})


def test_captions_for_unknown_clip_ids(tmp_path):
    coco_like(tmp_path / "captions.json", {1: "a.mp4"}, {1: ["a man runs"], 7: ["a ghost"]})
    with pytest.raises(DataError, match="unknown image ids 7"):
        clip_splits(train={"clips": tmp_path, "annotations": tmp_path / "captions.json"})
    (tmp_path / "captions.json").write_text(json.dumps({"images": [{"id": 1, "file_name": "a.mp4"}],
                                                        "annotations": [{"image_id": 1, "caption": "a man runs"}]}))
    with pytest.raises(DataError, match=r"annotations\[0\]: missing key\(s\) \['id'\]"):
        clip_splits(train={"clips": tmp_path, "annotations": tmp_path / "captions.json"})


def test_labels_unseen_in_train_or_missing(tmp_path):
    (tmp_path / "train.csv").write_text("clip,label\na,run\n")
    (tmp_path / "val.csv").write_text("clip,label\nb,swim\n")
    splits = clip_splits(train={"clips": tmp_path, "labels": tmp_path / "train.csv"},
                         val={"clips": tmp_path, "labels": tmp_path / "val.csv"})
    with pytest.raises(DataError, match="val labels .* swim"):
        check_labels(splits)
    coco_like(tmp_path / "captions.json", {"b": "b"}, {"b": ["a swim"]})
    splits["val"] = clip_splits(val={"clips": tmp_path, "annotations": tmp_path / "captions.json"})["val"]
    with pytest.raises(DataError, match="1 val clips have no activity label"):
        check_labels(splits)


def test_no_single_frame_tells_the_direction():
    """Across many clips, the shape's position in any one frame is spread the same way for every direction."""
    rng = np.random.default_rng(0)
    positions = {direction: [] for direction in DIRECTIONS}
    for _ in range(400):
        frames, _, _, direction = draw_clip(rng, 32, 8)
        for t in (0, 7):
            pixels = np.asarray(frames[t]).astype(int)
            ys, xs = np.nonzero(pixels.max(2) - pixels.min(2) > 60)
            positions[direction].append((t, np.median(xs), np.median(ys)))
    for t in (0, 7):
        means = [np.mean([(x, y) for s, x, y in rows if s == t], axis=0) for rows in positions.values()]
        assert np.abs(np.array(means) - 16).max() < 3.5, (t, means)  # uniform over the image: mean near the centre


def test_synthetic_clips_are_deterministic_and_labelled(tmp_path):
    first = synthetic_clip_splits(tmp_path / "a", num_train=6, num_val=3, num_test=2, frames=4)
    second = synthetic_clip_splits(tmp_path / "b", num_train=6, num_val=3, num_test=2, frames=4)
    assert [len(first[s]) for s in ("train", "val", "test")] == [6, 3, 2]
    for a, b in zip(first["train"], second["train"], strict=True):
        assert (a.label, a.captions) == (b.label, b.captions)
        assert a.label in DIRECTIONS and len(a.captions) == 5 and a.captions[0].endswith(f"moves {a.label}")
        assert (a.path / "frame_03.png").read_bytes() == (b.path / "frame_03.png").read_bytes()
    assert not list(tmp_path.glob("*.tmp-*"))  # written atomically: no staging folder left behind
