"""Bad input gets a clear error naming the file or id, found at load time; odd image modes are converted."""
import io
import json

import numpy as np
import pytest
from PIL import Image

from captioning.data.images import ImageReadError, check_image, load_rgb
from captioning.data.loading import load_splits
from captioning.data.records import CaptionRecord, DataError, check_inputs, clean_captions
from captioning.data.sources.coco import coco_splits, read_json
from captioning.data.sources.flickr import flickr_splits
from captioning.vocab import Vocabulary, tokenize
from tests.conftest import compose_train
from tests.test_data_sources import write_coco, write_images


def test_missing_image_names_the_file(tmp_path):
    with pytest.raises(ImageReadError, match="nowhere.jpg"):
        load_rgb(tmp_path / "nowhere.jpg")


def test_text_file_posing_as_image(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("not an image")
    with pytest.raises(ImageReadError, match="notes.jpg"):
        load_rgb(path)


def test_truncated_jpeg_fails_on_load_not_later(tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer, "JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(ImageReadError, match="cut.jpg"):
        load_rgb(path)


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "I;16", "I", "F", "1"])
def test_odd_modes_become_rgb(tmp_path, mode):
    base = Image.fromarray(np.tile(np.arange(0, 256, 8, dtype=np.uint8), (8, 1)))  # (8, 32) gradient
    if mode == "I;16":
        image = Image.fromarray((np.asarray(base).astype(np.uint16) * 257))  # full 16-bit range
        assert image.mode == "I;16"
    else:
        image = base.convert(mode)
    extension = {"CMYK": "jpg", "I": "tif", "F": "tif"}.get(mode, "png")
    path = tmp_path / f"img_{mode.replace(';', '')}.{extension}"
    image.save(path)
    rgb = load_rgb(path)
    assert rgb.mode == "RGB" and rgb.size == (32, 8)
    if mode in ("L", "I;16", "I", "LA", "RGBA", "P"):
        # the gradient survives conversion (16-bit is rescaled, not clipped to white)
        row = np.asarray(rgb)[0, :, 0].astype(int)
        assert row[0] < 20 and row[-1] > 200 and (np.diff(row) >= 0).all()


def test_transparent_pixels_composite_on_white(tmp_path):
    image = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    image.save(tmp_path / "clear.png")
    assert np.asarray(load_rgb(tmp_path / "clear.png")).min() == 255


def test_exif_rotation_is_applied(tmp_path):
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to view"
    image.save(tmp_path / "rotated.jpg", exif=exif.tobytes())
    assert load_rgb(tmp_path / "rotated.jpg").size == (20, 40)


def test_check_inputs_on_images_error_or_skip(tmp_path):
    write_images(tmp_path, ["good.jpg"])
    (tmp_path / "bad.jpg").write_text("garbage")
    records = [CaptionRecord(1, tmp_path / "good.jpg", "train", ["a"]), CaptionRecord(2, tmp_path / "bad.jpg", "train", ["b"]),
               CaptionRecord(3, tmp_path / "gone.jpg", "train", ["c"])]
    with pytest.raises(DataError, match="bad.jpg.*gone.jpg"):
        check_inputs(records, check_image, "error")
    assert [r.image_id for r in check_inputs(records, check_image, "skip")] == [1]
    with pytest.raises(DataError, match="on_bad_image"):
        check_inputs(records, check_image, "maybe")


def test_empty_captions(tmp_path):
    records = [CaptionRecord(7, tmp_path / "a.jpg", "train", ["A cat.", "   "]), CaptionRecord(8, tmp_path / "b.jpg", "train", [""])]
    with pytest.raises(DataError, match="7, 8"):
        clean_captions(records, "captions.json")
    kept = clean_captions(records, "captions.json", on_bad_caption="skip")
    assert [(r.image_id, r.captions) for r in kept] == [(7, ["A cat."])]


def test_non_ascii_captions_tokenize_and_round_trip():
    words = tokenize("Un café à Zürich — naïve crème brûlée!")
    assert words == ["un", "café", "à", "zürich", "naïve", "crème", "brûlée"]
    vocab = Vocabulary.build(["café à Zürich"] * 5, min_count=1)
    assert vocab.decode(vocab.encode("Café à Zürich", 10)) == "café à zürich"


def test_captions_referencing_unknown_image_ids(tmp_path):
    path = write_coco(tmp_path / "captions.json", {1: "a.jpg"}, {1: ["A cat."], 99: ["A ghost."]})
    with pytest.raises(DataError, match=r"captions.json.*unknown image ids 99"):
        coco_splits(train={"annotations": path, "images": tmp_path})


def test_malformed_json_names_the_file(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"images": [')
    with pytest.raises(DataError, match="broken.json: malformed JSON"):
        read_json(path)
    path.write_text(json.dumps({"images": [{"id": 1}], "annotations": []}))
    with pytest.raises(DataError, match=r"broken.json: images\[0\]: missing key\(s\) \['file_name'\]"):
        coco_splits(train={"annotations": path, "images": tmp_path})


def test_split_file_naming_unknown_images(tmp_path):
    (tmp_path / "captions.txt").write_text("image,caption\na.jpg,A cat.\n")
    (tmp_path / "split.json").write_text(json.dumps({"a.jpg": "train", "zz.jpg": "val"}))
    with pytest.raises(DataError, match="zz.jpg"):
        flickr_splits(tmp_path / "captions.txt", tmp_path, tmp_path / "split.json")
    (tmp_path / "split.json").write_text(json.dumps({"a.jpg": "training"}))
    with pytest.raises(DataError, match="training"):
        flickr_splits(tmp_path / "captions.txt", tmp_path, tmp_path / "split.json")


def test_bad_image_found_before_training_starts(tmp_path):
    """load_splits opens every train/val image up front: the error names the file, or skip counts it."""
    names = [f"{i}.jpg" for i in range(10)]
    write_images(tmp_path / "images", names)
    (tmp_path / "images" / "3.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (tmp_path / "captions.txt").write_text("image,caption\n" + "".join(f"{n},A thing number {n}.\n" for n in names))
    overrides = ["data=flickr", f"data.captions_file={tmp_path / 'captions.txt'}", f"data.image_dir={tmp_path / 'images'}"]
    with pytest.raises(DataError, match="3.jpg"):
        load_splits(compose_train(overrides).data)
    splits = load_splits(compose_train(overrides + ["data.on_bad_image=skip"]).data)
    assert "3.jpg" not in [r.image_id for r in splits["train"]] and len(splits["train"]) == 7


def test_load_splits_takes_a_plain_dict_and_checks_its_options(tmp_path):
    """A data config saved as plain JSON reads the same; a typo in an option stops the run instead of choosing for it."""
    names = [f"{i}.jpg" for i in range(10)]
    write_images(tmp_path / "images", names)
    (tmp_path / "captions.txt").write_text("image,caption\n" + "".join(f"{n},A thing number {n}.\n" for n in names))
    (tmp_path / "split.json").write_text(json.dumps({n: "val" if i < 2 else "train" for i, n in enumerate(names)}))
    data = {"source": {"name": "flickr", "captions_file": str(tmp_path / "captions.txt"),
                       "image_dir": str(tmp_path / "images"), "split_file": str(tmp_path / "split.json")},
            "on_bad_image": "error", "on_bad_caption": "error", "verify_images": "full"}
    splits = load_splits(data)
    assert [len(splits["train"]), len(splits["val"])] == [8, 2] and "test" not in splits
    with pytest.raises(DataError, match="no 'test' images"):
        load_splits(data, verify=("train", "test"))
    with pytest.raises(DataError, match="verify_images"):
        load_splits({**data, "verify_images": "headers"})
    with pytest.raises(DataError, match="on_bad_caption"):
        load_splits({**data, "on_bad_caption": "drop"})
