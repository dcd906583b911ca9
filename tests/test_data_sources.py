"""Every caption source reads into the same records; the synthetic set is deterministic and faithful."""
import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from PIL import Image

from captioning.data.sources import SOURCES, read_source
from captioning.data.sources.coco import coco_splits
from captioning.data.sources.drawing import COLOURS, SLOTS, draw_example
from captioning.data.sources.flickr import flickr_splits
from captioning.data.sources.karpathy import karpathy_splits
from captioning.data.sources.synthetic import describe_shapes, synthetic_splits
from captioning.registry import SpecError


def write_images(folder, names, size=(40, 30)):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in names:
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(folder / name)


def write_coco(path, images, captions_by_id):
    """A caption file in the full official layout: info, licenses, images, annotations."""
    dataset = {
        "info": {"description": "test", "version": "1.0", "year": 2014, "contributor": "tests", "date_created": "2014-01-01"},
        "licenses": [{"url": "http://example.org", "id": 1, "name": "test licence"}],
        "images": [{"license": 1, "file_name": name, "coco_url": "", "height": 30, "width": 40,
                    "date_captured": "2014-01-01 00:00:00", "flickr_url": "", "id": image_id}
                   for image_id, name in images.items()],
        "annotations": [{"image_id": image_id, "id": 100 * image_id + k, "caption": caption}
                        for image_id, captions in captions_by_id.items() for k, caption in enumerate(captions)],
    }
    path.write_text(json.dumps(dataset))
    return path


def test_coco_official_layout(tmp_path):
    write_images(tmp_path / "train2014", ["COCO_train2014_000000000009.jpg", "COCO_train2014_000000000025.jpg"])
    write_images(tmp_path / "val2014", ["COCO_val2014_000000000042.jpg"])
    train = write_coco(tmp_path / "captions_train2014.json",
                       {9: "COCO_train2014_000000000009.jpg", 25: "COCO_train2014_000000000025.jpg"},
                       {9: ["A plate of food.", "Food on a table."], 25: ["A giraffe eating leaves."]})
    val = write_coco(tmp_path / "captions_val2014.json", {42: "COCO_val2014_000000000042.jpg"}, {42: ["A dog."]})
    splits = coco_splits(train={"annotations": train, "images": tmp_path / "train2014"},
                         val={"annotations": val, "images": tmp_path / "val2014"})
    assert [r.image_id for r in splits["train"]] == [9, 25]
    assert splits["train"][0].captions == ["A plate of food.", "Food on a table."]
    assert splits["train"][0].image_path == tmp_path / "train2014" / "COCO_train2014_000000000009.jpg"
    assert splits["val"][0].split == "val" and "test" not in splits


def test_karpathy_split_file(tmp_path):
    dataset = {"dataset": "coco", "images": [
        {"filepath": "val2014", "filename": "a.jpg", "split": "test", "cocoid": 1, "sentences": [{"raw": "A cat."}]},
        {"filepath": "train2014", "filename": "b.jpg", "split": "train", "cocoid": 2, "sentences": [{"raw": "A dog."}]},
        {"filepath": "val2014", "filename": "c.jpg", "split": "restval", "cocoid": 3, "sentences": [{"raw": "A cow."}]},
        {"filepath": "val2014", "filename": "d.jpg", "split": "val", "cocoid": 4, "sentences": [{"raw": "A hen."}]},
    ]}
    path = tmp_path / "dataset_coco.json"
    path.write_text(json.dumps(dataset))
    splits = karpathy_splits(path, tmp_path)
    assert [r.image_id for r in splits["train"]] == [2, 3]  # restval joins train
    assert splits["test"][0].image_path == tmp_path / "val2014" / "a.jpg"
    assert "restval" in karpathy_splits(path, tmp_path, restval_as_train=False)


def test_flickr_csv_and_token_forms_agree(tmp_path):
    names = [f"{i:03d}.jpg" for i in range(20)]
    rows = [(name, f"caption {k} of {name}, with a comma") for name in names for k in range(5)]
    with open(tmp_path / "captions.txt", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "caption"])
        writer.writerows(rows)
    (tmp_path / "Flickr8k.token.txt").write_text(
        "\n".join(f"{name}#{k % 5}\t{caption}" for k, (name, caption) in enumerate(rows)) + "\n")
    from_csv = flickr_splits(tmp_path / "captions.txt", tmp_path / "images")
    from_tokens = flickr_splits(tmp_path / "Flickr8k.token.txt", tmp_path / "images")
    assert {s: [(r.image_id, r.captions) for r in rs] for s, rs in from_csv.items()} == \
           {s: [(r.image_id, r.captions) for r in rs] for s, rs in from_tokens.items()}
    assert from_csv["train"][0].captions[0] == "caption 0 of 002.jpg, with a comma"  # commas inside captions survive
    assert [len(from_csv[s]) for s in ("train", "val", "test")] == [16, 2, 2]  # default split: i%10==0 test, ==1 val

    (tmp_path / "split.json").write_text(json.dumps({name: "train" if i < 18 else "val" for i, name in enumerate(names)}))
    with_split = flickr_splits(tmp_path / "captions.txt", tmp_path / "images", tmp_path / "split.json")
    assert len(with_split["train"]) == 18 and len(with_split["val"]) == 2 and "test" not in with_split


def test_synthetic_is_deterministic_and_read_through_coco(tmp_path):
    first = synthetic_splits(tmp_path / "a", num_train=12, num_val=4, num_test=4, image_size=32, seed=3)
    second = synthetic_splits(tmp_path / "b", num_train=12, num_val=4, num_test=4, image_size=32, seed=3)
    assert [r.captions for r in first["train"]] == [r.captions for r in second["train"]]
    image_a = np.asarray(Image.open(first["val"][0].image_path))
    image_b = np.asarray(Image.open(second["val"][0].image_path))
    assert (image_a == image_b).all()
    assert all(len(r.captions) == 5 for rs in first.values() for r in rs)
    other_seed = synthetic_splits(tmp_path / "c", num_train=12, num_val=4, num_test=4, image_size=32, seed=4)
    assert [r.captions for r in other_seed["train"]] != [r.captions for r in first["train"]]


def test_synthetic_captions_follow_the_picture():
    rng = np.random.default_rng(0)
    for _ in range(20):
        image, objects = draw_example(rng, 60)
        pixels = np.asarray(image).astype(int)
        # which slots hold a shape of which colour, read back from the pixels alone
        seen = []
        for slot in range(SLOTS):
            columns = pixels[:, slot * 20:(slot + 1) * 20]
            counts = {name: int((np.abs(columns - rgb).sum(-1) < 90).sum()) for name, rgb in COLOURS.items()}
            best = max(counts, key=counts.get)
            if counts[best] > 40:
                seen.append(best)
        assert seen == [colour for colour, _ in objects]  # captions list shapes left to right
        captions = describe_shapes(objects)
        assert len(set(captions)) == 5 and all(all(c in caption for c, _ in objects) for caption in captions)
    assert describe_shapes([("red", "circle"), ("blue", "square")])[2] == "a red circle to the left of a blue square"
    assert describe_shapes([("red", "circle"), ("blue", "square")])[3] == "a blue square to the right of a red circle"


def test_read_source_by_name_resolves_the_config(tmp_path):
    """`data.source` names a registered source; interpolations are resolved before it is read."""
    names = [f"{i:02d}.jpg" for i in range(10)]
    (tmp_path / "captions.txt").write_text("image,caption\n" + "".join(f"{n},A thing {n}.\n" for n in names))
    data = OmegaConf.create({"data": {"captions_file": str(tmp_path / "captions.txt"), "source": {
        "name": "flickr", "captions_file": "${data.captions_file}", "image_dir": str(tmp_path)}}}).data
    by_name = read_source(data.source)
    direct = flickr_splits(tmp_path / "captions.txt", tmp_path)
    assert {s: [(r.image_id, r.image_path, r.captions) for r in rs] for s, rs in by_name.items()} == \
           {s: [(r.image_id, r.image_path, r.captions) for r in rs] for s, rs in direct.items()}


@pytest.mark.parametrize("spec, key", [
    ({"name": "flickr", "_target_": "builtins.open"}, "data.source._target_"),
    ({"name": "no_such_source", "root": "x"}, "data.source.name"),
    ({"name": "flickr", "captions_file": "c.txt", "image_dir": ".", "command": "rm -rf /"}, "data.source.command"),
    ({"name": "coco", "train": {"annotations": {"_target_": "os.system", "_args_": ["id"]}, "images": "."}},
     "data.source.train.annotations._target_"),
    ({"name": "flickr", "captions_file": Path("c.txt"), "image_dir": "."}, "data.source.captions_file"),
    ({"name": "synthetic", "root": ".", "seed": object()}, "data.source.seed"),
    ("coco", "data.source"),
])
def test_a_source_spec_names_only_registered_code(spec, key):
    """Specs also come from files (saved configs, checkpoints): nothing in one may choose the code that runs."""
    with pytest.raises(SpecError, match=re.escape(key)):
        read_source(spec)


def test_every_data_config_names_a_registered_source():
    for path in sorted((Path(__file__).resolve().parents[1] / "conf" / "data").glob("*.yaml")):
        data = OmegaConf.create({"data": OmegaConf.load(path)}).data
        spec = {}
        for key in data.source:  # resolved where the file gives the value; a mandatory `???` stays a string
            try:
                value = data.source[key]
                spec[key] = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
            except OmegaConfBaseException:
                spec[key] = OmegaConf.to_container(data.source, resolve=False)[key]
        name, arguments = SOURCES.check(spec, f"{path.name}: source")
        assert name == path.stem and arguments, path  # each file reads the source it is named after
