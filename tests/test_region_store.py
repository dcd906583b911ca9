"""Region stores (captioning/data/regions.py): a folder of per-image region files, K regions an image (bottom-up
attention's cocobu_att / cocobu_fc / cocobu_box), packed into a feature store that round-trips the inputs and passes
the store checks; every bad input refused with one line naming the file and nothing left behind; a damaged packed
store refused; scripts/pack_region_features.py end to end.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from captioning.commands.pack_region_features import main as pack_main
from captioning.config import OptionError, check_options
from captioning.data import regions as packing
from captioning.data.features import FeatureStore
from captioning.data.records import CaptionRecord, DataError
from captioning.data.regions import caption_ids, pack_region_features, read_regions
from captioning.data.store_files import array_shapes, check_arrays, checksums, read_header, read_index, read_offsets
from tests.conftest import CONF, ROOT
from tests.hostile.probe import assert_refused, run_command, snapshot
from tests.test_options import shipped

WIDTH = 8
COUNTS = {"100": 7, "7": 1, "12": 3}  # image id -> regions; packed in numeric id order: 7, 12, 100
OFFSETS = [0, 1, 4, 11]


def make_inputs(root: Path, fmt: str = "npz", counts: dict[str, int] = COUNTS) -> dict[str, dict[str, np.ndarray]]:
    """root/att/{id}.npz (`feat`) or .npy regions (K, WIDTH), root/fc/{id}.npy pooled (WIDTH,), root/box/{id}.npy
    boxes (K, 4), as ruotianluo/ImageCaptioning.pytorch lays them out. -> {"att" | "fc" | "box": {id: array}}."""
    rng = np.random.default_rng(0)
    made: dict[str, dict[str, np.ndarray]] = {"att": {}, "fc": {}, "box": {}}
    for folder in made:
        (root / folder).mkdir(parents=True, exist_ok=True)
    for key, count in counts.items():
        made["att"][key] = rng.standard_normal((count, WIDTH)).astype(np.float32)
        made["fc"][key] = rng.standard_normal(WIDTH).astype(np.float32)
        made["box"][key] = (rng.random((count, 4)) * 500).astype(np.float32)
        save_regions(root / "att", key, made["att"][key], fmt)
        np.save(root / "fc" / f"{key}.npy", made["fc"][key])
        np.save(root / "box" / f"{key}.npy", made["box"][key])
    return made


def save_regions(folder: Path, key: str, array: np.ndarray, fmt: str = "npz") -> None:
    if fmt == "npz":
        np.savez_compressed(folder / f"{key}.npz", feat=array)
    else:
        np.save(folder / f"{key}.npy", array)


def every_path(root: Path) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*"))


@pytest.fixture
def packed(tmp_path) -> tuple[Path, dict]:
    made = make_inputs(tmp_path)
    return pack_region_features(tmp_path / "att", tmp_path / "store", pooled_dir=tmp_path / "fc",
                                boxes_dir=tmp_path / "box"), made


# ---------------------------------------------------------------- round trip


@pytest.mark.parametrize("fmt", ["npz", "npy"])
@pytest.mark.parametrize("pooled", [False, True])
@pytest.mark.parametrize("boxes", [False, True])
def test_a_variable_k_folder_round_trips(tmp_path, fmt, pooled, boxes):
    made = make_inputs(tmp_path, fmt)
    store = pack_region_features(tmp_path / "att", tmp_path / "out" / "store", pooled_dir=tmp_path / "fc" if pooled
                                 else None, boxes_dir=tmp_path / "box" if boxes else None)
    header = read_header(store)
    assert {key: header[key] for key in ("format", "encoder", "weights", "preprocess", "dim", "grid_size", "dtype",
                                         "count", "grid", "complete")} == {
        "format": 1, "encoder": "regions", "weights": "regions:att", "preprocess": None, "dim": WIDTH,
        "grid_size": None, "dtype": "float16", "count": 3, "grid": None, "complete": True}
    assert header["regions"] == {"width": WIDTH, "max": 7, "total": 11, "boxes": boxes}
    ids = read_index(store, 3)
    assert ids == ["7", "12", "100"]
    assert json.loads((store / "index.json").read_text())["paths"] == [str(tmp_path / "att" / f"{key}.{fmt}")
                                                                       for key in ids]
    check_arrays(store, header, tuple(array_shapes(header)))
    assert checksums(store, header, ids, verify=True) == header["checksums"]
    assert set(header["checksums"]) == {"index.json", "features.npy", "regions.npy", "offsets.npy",
                                        *(["boxes.npy"] if boxes else [])}

    regions, offsets = read_regions(store, header)
    assert offsets.tolist() == OFFSETS and regions.dtype == np.float16 and not regions.flags.writeable
    features = np.load(store / "features.npy")
    for row, key in enumerate(ids):
        np.testing.assert_array_equal(regions[offsets[row]:offsets[row + 1]], made["att"][key].astype(np.float16))
        expected = made["fc"][key] if pooled else made["att"][key].astype(np.float64).mean(axis=0)
        np.testing.assert_allclose(features[row], expected, rtol=1e-3, atol=1e-3)  # float16 rounding
        if boxes:
            np.testing.assert_array_equal(np.load(store / "boxes.npy")[offsets[row]:offsets[row + 1]], made["box"][key])
    assert (store / "boxes.npy").exists() == boxes
    assert np.load(store / "done.npy").all()
    assert sorted(path.name for path in store.parent.iterdir()) == ["store"]  # no staging folder left


def test_the_feature_store_opens_a_region_store(packed):
    """Training's reader verifies it like an extracted store and finds the pooled vectors by image id."""
    store, made = packed
    opened = FeatureStore(store)
    table = opened.table([CaptionRecord(12, Path("12.jpg"), "train"), CaptionRecord(100, Path("100.jpg"), "train")])
    np.testing.assert_allclose(table["pooled"].numpy(), [made["fc"]["12"], made["fc"]["100"]], rtol=1e-3, atol=1e-3)


def test_float32_keeps_the_values_exactly(tmp_path):
    made = make_inputs(tmp_path, "npy")
    store = pack_region_features(tmp_path / "att", tmp_path / "store", dtype="float32")
    regions, offsets = read_regions(store, read_header(store))
    np.testing.assert_array_equal(regions[offsets[2]:offsets[3]], made["att"]["100"])
    np.testing.assert_array_equal(np.load(store / "features.npy")[0], made["att"]["7"][0])  # K = 1: the mean is itself


def test_the_captions_ids_choose_the_order(tmp_path):
    made = make_inputs(tmp_path)
    store = pack_region_features(tmp_path / "att", tmp_path / "store", ids=["100", "7", "12"])
    header = read_header(store)
    regions, offsets = read_regions(store, header)
    assert read_index(store, 3) == ["100", "7", "12"] and offsets.tolist() == [0, 7, 8, 11]
    np.testing.assert_array_equal(regions[8:11], made["att"]["12"].astype(np.float16))


def test_an_existing_empty_folder_is_filled(tmp_path):
    make_inputs(tmp_path)
    (tmp_path / "store").mkdir()
    pack_region_features(tmp_path / "att", tmp_path / "store")
    assert read_header(tmp_path / "store")["complete"]


def test_overwrite_replaces_a_region_store_only(tmp_path, packed):
    store, _ = packed
    (tmp_path / "att" / "100.npz").unlink()
    pack_region_features(tmp_path / "att", store, overwrite=True)
    assert read_index(store, 2) == ["7", "12"] and read_header(store)["regions"]["total"] == 4
    assert sorted(path.name for path in tmp_path.iterdir()) == ["att", "box", "fc", "store"]
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep")
    with pytest.raises(DataError, match="not empty"):
        pack_region_features(tmp_path / "att", other, overwrite=True)
    assert (other / "notes.txt").read_text() == "keep"


# ---------------------------------------------------------------- bad inputs: refused, named, nothing left behind


def rewrite(key: str, array: np.ndarray, fmt: str = "npz"):
    return lambda root: save_regions(root / "att", key, array, fmt)


def write_bytes(name: str, content):
    return lambda root: (root / name).write_bytes(content(root / name) if callable(content) else content)


def corrupt_middle(data: bytes) -> bytes:
    """8 bytes inverted halfway through: inside an .npz's compressed data."""
    middle = len(data) // 2
    return data[:middle] + bytes(b ^ 0xFF for b in data[middle:middle + 8]) + data[middle + 8:]


NAN = np.ones((7, WIDTH), np.float32)
NAN[5, 3] = np.nan
BAD_INPUTS = {  # name: (damage, culprit named, {pack arguments}, also in the message)
    "wrong width": (rewrite("12", np.ones((3, 5), np.float32)), "att/12.npz", {}, "width 5"),
    "no regions": (rewrite("12", np.ones((0, WIDTH), np.float32)), "att/12.npz", {}, "no regions"),
    "NaN, found while writing": (rewrite("100", NAN), "att/100.npz", {}, "NaN or Inf values in rows 5"),
    "Inf in an .npy": (lambda root: ((root / "att" / "12.npz").unlink(), np.save(root / "att" / "12.npy", np.full(
        (3, WIDTH), np.inf, np.float32))), "att/12.npy", {}, "Inf"),
    "beyond float16": (rewrite("100", np.full((7, WIDTH), 1e6, np.float32)), "att/100.npz", {}, "dtype=float32"),
    "one dimension": (rewrite("12", np.ones(WIDTH, np.float32)), "att/12.npz", {}, "1-d"),
    "three dimensions": (rewrite("12", np.ones((1, 3, WIDTH), np.float32)), "att/12.npz", {}, "3-d"),
    "not a zip": (write_bytes("att/12.npz", b"garbage"), "att/12.npz", {}, "BadZipFile"),
    "truncated zip": (write_bytes("att/12.npz", lambda path: path.read_bytes()[:-30]), "att/12.npz", {}, "readable"),
    "corrupt compressed data": (write_bytes("att/100.npz", lambda path: corrupt_middle(path.read_bytes())),
                                "att/100.npz", {}, "readable"),
    "not an .npy": (write_bytes("att/5.npy", b"\x93NUMPY garbage"), "att/5.npy", {}, "readable"),
    "truncated .npy": (lambda root: (save_regions(root / "att", "5", np.ones((3, WIDTH), np.float32), "npy"),
                                     write_bytes("att/5.npy", lambda path: path.read_bytes()[:-10])(root)),
                       "att/5.npy", {}, "truncated"),
    "no feat array": (lambda root: np.savez(root / "att" / "12.npz", features=np.ones((3, WIDTH))), "att/12.npz", {},
                      "no array 'feat' (holds features)"),
    "objects": (lambda root: np.save(root / "att" / "5.npy", np.array([[1, "a"]], dtype=object), allow_pickle=True),
                "att/5.npy", {}, "object"),
    "two files for an id": (rewrite("12", np.ones((3, WIDTH), np.float32), "npy"), "att/12.npz", {}, "also 12.npy"),
    "pooled of another width": (lambda root: np.save(root / "fc" / "12.npy", np.ones(5, np.float32)), "fc/12.npy",
                                {"pooled": True}, "(8,)"),
    "pooled missing": (lambda root: (root / "fc" / "12.npy").unlink(), "fc/12.npy", {"pooled": True}, "missing"),
    "pooled NaN": (lambda root: np.save(root / "fc" / "100.npy", np.full(WIDTH, np.nan, np.float32)), "fc/100.npy",
                   {"pooled": True}, "NaN"),
    "boxes of another shape": (lambda root: np.save(root / "box" / "12.npy", np.ones((3, 5), np.float32)),
                               "box/12.npy", {"boxes": True}, "(3, 4)"),
    "boxes of another image": (lambda root: np.save(root / "box" / "12.npy", np.ones((2, 4), np.float32)),
                               "box/12.npy", {"boxes": True}, "(3, 4)"),
    "boxes NaN": (lambda root: np.save(root / "box" / "100.npy", np.full((7, 4), np.nan, np.float32)), "box/100.npy",
                  {"boxes": True}, "NaN"),
    "an id not in the captions": (lambda root: None, "att/100.npz", {"ids": ["7", "12"]}, "not in the captions"),
    "a caption id without a file": (lambda root: None, "att", {"ids": ["7", "12", "100", "55"]}, "55"),
    "no region files": (lambda root: [path.unlink() for path in (root / "att").iterdir()], "att", {}, "no region"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_a_bad_input_is_refused_naming_the_file_and_leaves_nothing(tmp_path, case):
    damage, culprit, options, words = BAD_INPUTS[case]
    make_inputs(tmp_path)
    damage(tmp_path)
    before, paths = snapshot(tmp_path), every_path(tmp_path)
    outcome = run_command(lambda: pack_region_features(
        tmp_path / "att", tmp_path / "out" / "store", ids=options.get("ids"),
        pooled_dir=tmp_path / "fc" if options.get("pooled") else None,
        boxes_dir=tmp_path / "box" if options.get("boxes") else None))
    assert_refused(outcome, str(tmp_path / culprit), before, snapshot(tmp_path))
    assert words in outcome.message
    assert every_path(tmp_path) == paths  # no output folder, no staging folder, no file


def test_an_interrupted_packing_leaves_nothing(tmp_path, monkeypatch):
    make_inputs(tmp_path)
    paths, load = every_path(tmp_path), packing.load_array

    def interrupted(path: Path, shape: tuple[int, ...]) -> np.ndarray:
        if path.stem == "100":  # the last image: the others' rows are written
            raise KeyboardInterrupt
        return load(path, shape)

    monkeypatch.setattr(packing, "load_array", interrupted)
    with pytest.raises(KeyboardInterrupt):
        pack_region_features(tmp_path / "att", tmp_path / "out" / "store")
    assert every_path(tmp_path) == paths


def test_float32_packs_what_float16_cannot_hold(tmp_path):
    make_inputs(tmp_path)
    BAD_INPUTS["beyond float16"][0](tmp_path)
    store = pack_region_features(tmp_path / "att", tmp_path / "store", dtype="float32")
    assert read_regions(store, read_header(store))[0].max() == 1e6


def test_an_existing_output_is_refused_and_untouched(tmp_path, packed):
    store, _ = packed
    before = snapshot(tmp_path)
    for output in (store, tmp_path / "att", store / "header.json"):  # a store, someone's folder, a file
        outcome = run_command(lambda output=output: pack_region_features(tmp_path / "att", output))
        assert_refused(outcome, str(output), before, snapshot(tmp_path))
    assert snapshot(tmp_path) == before


# ---------------------------------------------------------------- a damaged packed store


def test_a_changed_byte_in_regions_is_refused(packed):
    store, _ = packed
    header = read_header(store)
    data = bytearray((store / "regions.npy").read_bytes())
    data[-2] ^= 1  # the low byte of the last float16: still finite, another value
    (store / "regions.npy").write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"regions\.npy: rows 0-10 do not match their checksum"):
        checksums(store, header, read_index(store, 3), verify=True)


def test_nan_rows_of_regions_name_their_image(packed):
    store, _ = packed
    header = read_header(store)
    regions = np.load(store / "regions.npy", mmap_mode="r+")
    regions[2, 0] = np.nan  # row 2 is the second region of image 12 (offsets 0, 1, 4, 11)
    regions.flush()
    del regions
    with pytest.raises(DataError, match=r"regions\.npy: non-finite .* rows 2 \(image ids 12\)"):
        checksums(store, header, read_index(store, 3), verify=True)


@pytest.mark.parametrize("offsets, words", [
    ([1, 2, 4, 11], "starts at 1, not 0"),
    ([0, 1, 4, 10], "ends at 10, not at header.json's 11 regions"),
    ([0, 4, 4, 11], r"not strictly increasing at entries 2 \(every image has at least one region\)"),
    ([0, 5, 3, 11], "not strictly increasing at entries 2"),
    ([0, 1, 5, 11], "an image of 6 regions where header.json's max is 7"),
])
def test_bad_offsets_are_refused(packed, offsets, words):
    store, _ = packed
    header = read_header(store)
    np.save(store / "offsets.npy", np.array(offsets, np.int64))
    for check in (lambda: read_regions(store, header), lambda: read_offsets(store, header),
                  lambda: checksums(store, header, read_index(store, 3), verify=True)):
        with pytest.raises(DataError, match=rf"offsets\.npy: {words}"):
            check()


def test_offsets_of_another_dtype_are_refused(packed):
    store, _ = packed
    np.save(store / "offsets.npy", np.array(OFFSETS, np.int32))
    with pytest.raises(DataError, match=r"offsets\.npy: holds a \(4,\) int32 array"):
        read_regions(store, read_header(store))


@pytest.mark.parametrize("regions", [
    {"width": 8, "max": 12, "total": 11, "boxes": True}, {"width": 8, "max": 7, "total": 11, "boxes": "yes"},
    {"width": 0, "max": 7, "total": 11, "boxes": True}, {"width": True, "max": 7, "total": 11, "boxes": True},
    {"width": 8, "max": 7, "boxes": True}, {"width": 8, "max": 7.0, "total": 11, "boxes": True}, [8, 7, 11, True],
    {"width": 4, "max": 7, "total": 11, "boxes": True},  # not the pooled features' dim
])
def test_a_malformed_regions_header_is_refused(packed, regions):
    store, _ = packed
    header = json.loads((store / "header.json").read_text())
    (store / "header.json").write_text(json.dumps({**header, "regions": regions}))
    with pytest.raises(DataError, match=r"header\.json: regions") as refused:
        read_header(store)
    assert "\n" not in str(refused.value)


def test_an_image_store_is_not_a_region_store(packed):
    store, _ = packed
    header = {key: value for key, value in read_header(store).items() if key != "regions"}
    assert set(array_shapes(header)) == {"features.npy", "done.npy"}
    with pytest.raises(DataError, match="not a region store"):
        read_regions(store, header)


# ---------------------------------------------------------------- the config, its options, the captions' ids


def compose_pack(*overrides: str):
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        return compose("pack_region_features", overrides=list(overrides))


def test_every_composition_passes_and_every_key_is_typed(tmp_path):
    """What tests/test_options.py checks of the other commands' configs, for conf/pack_region_features.yaml (a key
    its schema does not declare is refused by the check itself)."""
    for cfg in shipped("pack_region_features", tmp_path).values():
        check_options(cfg, "pack_regions")
    with pytest.raises(OptionError, match=r"^dtype='float64': expected one of float16 \| float32$"):
        check_options(compose_pack("input=a", "output=b", "dtype=float64"), "pack_regions")
    with pytest.raises(OptionError, match="Missing mandatory value: input"):
        check_options(compose_pack("output=b"), "pack_regions")


def test_a_karpathy_file_gives_the_ids(tmp_path):
    """data=karpathy: the cocoids of dataset_coco.json must match the files (the images themselves are not opened)."""
    made = make_inputs(tmp_path)
    images = [{"cocoid": int(key), "filepath": "val2014", "filename": f"{key}.jpg", "split": "test",
               "sentences": [{"raw": "a cat"}]} for key in ("12", "100", "7")]
    (tmp_path / "dataset_coco.json").write_text(json.dumps({"images": images}))
    cfg = compose_pack("data=karpathy", f"data.dataset_json={tmp_path / 'dataset_coco.json'}",
                       f"data.image_root={tmp_path / 'nowhere'}", f"input={tmp_path / 'att'}", "output=unused")
    check_options(cfg, "pack_regions")
    assert caption_ids(cfg.data) == ["12", "100", "7"] and caption_ids(None) is None
    store = pack_region_features(tmp_path / "att", tmp_path / "store", ids=caption_ids(cfg.data))
    regions, offsets = read_regions(store, read_header(store))
    np.testing.assert_array_equal(regions[offsets[1]:offsets[2]], made["att"]["100"].astype(np.float16))
    (tmp_path / "dataset_coco.json").write_text(json.dumps({"images": images[:2]}))
    with pytest.raises(DataError, match=r"att/7\.npz: image id 7 is not in the captions"):
        pack_region_features(tmp_path / "att", tmp_path / "other", ids=caption_ids(cfg.data))


# ---------------------------------------------------------------- the script


def run_script(*overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "pack_region_features.py"), *overrides], check=False,
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"})


@pytest.mark.slow
def test_the_script_packs_and_refuses_a_bad_file(tmp_path):
    make_inputs(tmp_path)
    done = run_script(f"input={tmp_path / 'att'}", f"output={tmp_path / 'store'}", f"pooled={tmp_path / 'fc'}",
                      f"boxes={tmp_path / 'box'}")
    assert done.returncode == 0, done.stderr
    header = read_header(tmp_path / "store")
    assert header["complete"] and header["regions"] == {"width": WIDTH, "max": 7, "total": 11, "boxes": True}
    checksums(tmp_path / "store", header, read_index(tmp_path / "store", 3), verify=True)

    (tmp_path / "att" / "12.npz").write_bytes(b"garbage")
    # The refusal through the script's own `main` in this process (a new interpreter costs seconds).
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose("pack_region_features", overrides=[f"input={tmp_path / 'att'}", f"output={tmp_path / 'other'}"])
    refused = run_command(lambda: pack_main(cfg))
    assert refused.code == 1
    assert refused.message.strip().splitlines() == [refused.message.strip()] and refused.message.startswith("error: ")
    assert str(tmp_path / "att" / "12.npz") in refused.message
    assert not (tmp_path / "other").exists()
