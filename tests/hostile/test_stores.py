"""Hostile feature stores: files truncated, extended, replaced or garbled, headers naming code, NaN rows, another
encoder, a full disk. Opening the store (FeatureStore, what training does) and re-running extraction on it
(`captioning.tasks.extract`, what scripts/extract_features.py runs) refuse with exit status 1 and one line naming
the file (and rows or ids), and leave every existing file as it was (tests/hostile/probe.py).
"""
from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from captioning.data import store_files
from captioning.data.features import FeatureStore
from captioning.models import caption_model, encoders
from captioning.tasks import extract
from tests.conftest import CONF
from tests.hostile.probe import assert_refused, run_command, snapshot

COUNT = 8  # images in the made store (4 train, 2 val, 2 test)


def extract_config(output: Path, cache: Path, *overrides: str):
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        return compose("extract_features", overrides=[
            f"output={output}", f"data.source.root={cache}", "data.source.num_train=4", "data.source.num_val=2",
            "data.source.num_test=2", "data.source.image_size=32", "batch_size=8", "device=cpu", *overrides])


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> tuple[Path, Path]:
    """(a finished store made by the real entry point: EfficientNet-Lite0 over 8 synthetic images, the data cache)."""
    root = tmp_path_factory.mktemp("made")
    extract(extract_config(root / "store", root / "cache"))
    return root / "store", root / "cache"


@pytest.fixture(scope="module")
def lite0():
    return encoders.efficientnet_lite0(pretrained=True)


@pytest.fixture(autouse=True)
def one_encoder(monkeypatch, lite0):
    """Every extraction here gets the same EfficientNet-Lite0, built once (1.4 s a build): what extract() would build."""
    def build(spec: dict, pretrained: bool):
        assert spec["name"] == "efficientnet_lite0" and pretrained
        return lite0

    monkeypatch.setattr(caption_model, "build_encoder", build)


@pytest.fixture
def store(made, tmp_path) -> Path:
    shutil.copytree(made[0], tmp_path / "store")
    return tmp_path / "store"


# ---------------------------------------------------------------- ways to damage a store


def truncate(name: str, size: int = 100):
    return lambda store: (store / name).write_bytes((store / name).read_bytes()[:-size])


def extend(name: str):
    return lambda store: (store / name).write_bytes((store / name).read_bytes() + bytes(64))


def remove(name: str):
    return lambda store: (store / name).unlink()


def garble(name: str, content: bytes = b"\x93NUMPY garbage"):
    return lambda store: (store / name).write_bytes(content)


def rewrite(name: str, change):
    """Save the array again, changed by `change` (a valid .npy of another dtype or shape)."""
    return lambda store: np.save(store / name, change(np.load(store / name)))


def edit_json(name: str, change):
    def damage(store: Path) -> None:
        data = json.loads((store / name).read_text())
        change(data)
        (store / name).write_text(json.dumps(data))
    return damage


def set_rows(rows: list[int], value: float):
    def damage(store: Path) -> None:
        features = np.load(store / "features.npy", mmap_mode="r+")
        features[rows, 0] = value
        features.flush()
    return damage


def bump_row(row: int):
    def damage(store: Path) -> None:
        features = np.load(store / "features.npy", mmap_mode="r+")
        features[row, 5] += 1
        features.flush()
    return damage


# (case id, damage, what the message names: the file first, then more)
DAMAGE = [
    ("features truncated", truncate("features.npy"), ("features.npy", "truncated")),
    ("features extended", extend("features.npy"), ("features.npy", "extended")),
    ("features missing", remove("features.npy"), ("features.npy", "missing")),
    ("features garbled", garble("features.npy"), ("features.npy", "not a readable .npy")),
    ("features float32", rewrite("features.npy", lambda a: a.astype(np.float32)), ("features.npy", "float32")),
    ("features a row short", rewrite("features.npy", lambda a: a[:-1]), ("features.npy", "(7, 1280)")),
    ("features Fortran order", rewrite("features.npy", np.asfortranarray), ("features.npy", "Fortran order")),
    ("header not JSON", garble("header.json", b'{"format": 1,'), ("header.json", "unreadable")),
    ("header a list", garble("header.json", b"[1, 2]"), ("header.json", "not a JSON object")),
    ("header names code", edit_json("header.json", lambda h: h.update(preprocess={"_target_": "os.system"})),
     ("header.json", "_target_")),
    ("header count a string", edit_json("header.json", lambda h: h.update(count="8")), ("header.json", "'count'")),
    ("header dtype int8", edit_json("header.json", lambda h: h.update(dtype="int8")), ("header.json", "int8")),
    ("header grid garbled", edit_json("header.json", lambda h: h.update(grid="7x7")), ("header.json", "grid")),
    ("header empty", garble("header.json", b""), ("header.json", "unreadable")),
    ("index not JSON", garble("index.json", b'{"ids": ["1", '), ("index.json", "unreadable")),
    ("index without ids", edit_json("index.json", lambda i: i.pop("ids")), ("index.json", "'ids'")),
    ("index a row short", edit_json("index.json", lambda i: (i["ids"].pop(), i["paths"].pop())), ("index.json", "7 ids")),
    ("index ids repeated", edit_json("index.json", lambda i: i["ids"].__setitem__(1, i["ids"][0])), ("index.json", "distinct")),
    ("index ids numbers", edit_json("index.json", lambda i: i.update(ids=list(range(COUNT)))), ("index.json", "strings")),
]
OPEN_ONLY = [  # a complete store is verified in full when opened for training
    ("header count too big", edit_json("header.json", lambda h: h.update(count=9)), ("index.json", "9 rows")),
    ("NaN row", set_rows([3], np.nan), ("features.npy", "non-finite", "rows 3")),
    ("Inf rows", set_rows([1, 6], np.inf), ("features.npy", "non-finite", "rows 1, 6")),
    ("a value changed", bump_row(5), ("features.npy", "rows 0-7 do not match their checksum")),
    ("ids reordered", edit_json("index.json", lambda i: (i["ids"].reverse(), i["paths"].reverse())),
     ("index.json", "checksum")),
    ("checksum list short", edit_json("header.json", lambda h: h["checksums"]["features.npy"]["sha256"].clear()),
     ("features.npy", "checksum")),
    ("checksums garbled", edit_json("header.json", lambda h: h["checksums"].update({"features.npy": "abc"})),
     ("header.json", "checksums of features.npy")),
    ("not finished", edit_json("header.json", lambda h: h.update(complete=False)), ("store", "did not finish")),
    ("no header", remove("header.json"), ("store", "not a feature store")),
]
EXTRACT_ONLY = [  # re-running extraction must not resume into a store that does not match its header
    ("header count too big", edit_json("header.json", lambda h: h.update(count=9)), ("index.json", "rows of header.json")),
    ("no header", remove("header.json"), ("features.npy", "no header.json")),
    ("done truncated", truncate("done.npy", 3), ("done.npy", "truncated")),
    ("done missing", remove("done.npy"), ("done.npy", "missing")),
    ("done says unfinished", rewrite("done.npy", lambda a: np.zeros_like(a)), ("header.json", "says complete")),
    ("a value changed", bump_row(5), ("features.npy", "do not match their checksum")),
    ("NaN row", set_rows([2], np.nan), ("features.npy", "rows 2")),
]
CASES = ([("open", *case) for case in DAMAGE + OPEN_ONLY] + [("extract", *case) for case in DAMAGE + EXTRACT_ONLY])


def command(entry: str, store: Path, cache: Path, *overrides: str):
    if entry == "open":
        return lambda: FeatureStore(store)
    cfg = extract_config(store, cache, *overrides)
    return lambda: extract(cfg)


@pytest.mark.parametrize("entry, damage, named", [(c[0], *c[2:]) for c in CASES], ids=[f"{c[0]}:{c[1]}" for c in CASES])
def test_a_damaged_store_is_refused_naming_the_file(made, store, entry, damage, named):
    damage(store)
    work = command(entry, store, made[1])
    before = snapshot(store.parent)
    outcome = run_command(work)
    assert_refused(outcome, named[0], before, snapshot(store.parent))
    for part in named[1:]:
        assert part in outcome.message, outcome.message


def test_non_finite_rows_name_their_image_ids(made, store):
    set_rows([4], -np.inf)(store)
    ids = json.loads((store / "index.json").read_text())["ids"]
    outcome = run_command(lambda: FeatureStore(store))
    assert outcome.code == 1 and f"(image ids {ids[4]})" in outcome.message and "learning rate" not in outcome.message


@pytest.mark.parametrize("overrides, named", [(["dtype=float32"], "another encoder"),
                                              (["store_grid=true"], "without a feature grid")],
                         ids=["other dtype", "grid wanted"])
def test_extraction_into_a_store_made_otherwise_is_refused(made, store, overrides, named):
    cfg = extract_config(store, made[1], *overrides)
    before = snapshot(store.parent)
    assert_refused(run_command(lambda: extract(cfg)), named, before, snapshot(store.parent))


def test_a_store_of_another_encoder_is_refused_for_training(made, store):
    other = encoders.tiny_cnn(image_size=32)
    other.weights = "tiny:fixed"
    outcome = run_command(lambda: FeatureStore(store).check_encoder(other))
    assert outcome.code == 1 and "different encoder" in outcome.message and "encoder: store has" in outcome.message


def test_a_full_disk_fails_at_creation_naming_the_file(made, tmp_path, monkeypatch):
    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store_files.os, "posix_fallocate", full, raising=False)
    (tmp_path / "keep.txt").write_text("a file of the user's")
    cfg = extract_config(tmp_path / "new", made[1])
    before = snapshot(tmp_path)
    outcome = run_command(lambda: extract(cfg))
    assert_refused(outcome, "features.npy", before, snapshot(tmp_path))
    assert outcome.message.startswith("error: No space left on device")
    assert not any((tmp_path / "new").iterdir())  # the half-made store is gone, so no run can take it for one


def test_a_file_system_that_cannot_reserve_space_still_extracts(made, tmp_path, monkeypatch):
    def unsupported(fd, offset, length):
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")

    monkeypatch.setattr(store_files.os, "posix_fallocate", unsupported, raising=False)
    assert run_command(lambda: extract(extract_config(tmp_path / "new", made[1]))).code == 0
    assert np.array_equal(np.load(tmp_path / "new" / "features.npy"), np.load(made[0] / "features.npy"))


def test_a_store_without_checksums_gets_them_from_a_rerun_without_encoding(made, store, monkeypatch):
    edit_json("header.json", lambda h: h.pop("checksums"))(store)
    outcome = run_command(lambda: FeatureStore(store))
    assert outcome.code == 1 and "no checksums" in outcome.message and "header.json" in outcome.message
    monkeypatch.setattr(encoders.ImageEncoder, "forward", lambda self, images: pytest.fail("encoded again"))
    assert run_command(lambda: extract(extract_config(store, made[1]))).code == 0
    FeatureStore(store)  # opens: verified against the new checksums
    assert json.loads((store / "header.json").read_text())["checksums"] == json.loads(
        (made[0] / "header.json").read_text())["checksums"]


def test_checksums_cover_every_chunk_of_rows(made, store, monkeypatch):
    monkeypatch.setattr(store_files, "CHUNK_ROWS", 3)  # 8 rows: chunks 0-2, 3-5, 6-7
    edit_json("header.json", lambda h: h.pop("checksums"))(store)
    extract(extract_config(store, made[1]))
    assert len(json.loads((store / "header.json").read_text())["checksums"]["features.npy"]["sha256"]) == 3
    bump_row(7)(store)
    outcome = run_command(lambda: FeatureStore(store))
    assert outcome.code == 1 and "rows 6-7 do not match" in outcome.message
