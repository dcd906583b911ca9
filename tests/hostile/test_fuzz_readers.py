"""Property-based fuzzing (Hypothesis) of what reads user files: the COCO, Karpathy and Flickr readers through the
real load path, the vocabulary, and the image reader on mutated real PNG/JPEG bytes. Whatever a file holds,
reading it either succeeds or raises the project's own error (DataError; ImageReadError for images), never
another exception type. Deterministic (derandomized, no example database) and bounded: seconds, not minutes."""
from __future__ import annotations

import io
import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from PIL import Image

from captioning.data.images import MAX_IMAGE_PIXELS, ImageReadError, check_image, load_rgb
from captioning.data.loading import load_splits
from captioning.data.records import DataError
from captioning.vocab import SPECIALS, Vocabulary, check_vocabulary, tokenize
from tests.conftest import FLICKR

pytestmark = pytest.mark.slow  # Hypothesis at its full example count (the fast tier leaves it out)


def fuzz(examples: int):
    return settings(derandomize=True, database=None, deadline=None, max_examples=examples,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2, 2**70) | st.floats() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=8)
hostile_names = st.sampled_from(["../x.png", "/abs.png", "a/../../y.png", "", " ", "a\x00b.png", "..", ".", "\\x.png"])
names = st.sampled_from(["a.png", "b.png", "sub/c.png", "./d.png", "é f.png"])
captions = st.sampled_from(["a cat", " a dog ", "a cat", "\ufeffa bird", "é\r\nx", "x\u2028y"]) | st.text(max_size=12)
hostile = json_values | hostile_names | st.sampled_from(["", "   ", "tset", "a cat"])


def mostly(good: st.SearchStrategy, bad: st.SearchStrategy = hostile) -> st.SearchStrategy:
    """A well-formed value nine times in ten, a hostile one otherwise."""
    return st.integers(0, 9).flatmap(lambda k: bad if k == 0 else good)


def places(node) -> list[tuple]:
    """(container, key) of every value inside a JSON document, at any depth."""
    keys = list(node) if isinstance(node, dict) else range(len(node)) if isinstance(node, list) else []
    return [(node, key) for key in keys] + [place for key in keys for place in places(node[key])]


@st.composite
def perturbed(draw, well_formed: st.SearchStrategy):
    """A well-formed data file with a few hostile edits (any value in it replaced, or a key removed), or now
    and then any JSON value or bytes at all."""
    if draw(st.integers(0, 9)) == 0:
        return draw(json_values | st.binary(max_size=40))
    data = draw(well_formed)
    for _ in range(draw(st.integers(0, 2))):
        node, key = draw(st.sampled_from(places(data)))
        if isinstance(node, dict) and draw(st.integers(0, 4)) == 0:
            del node[key]
        else:
            node[key] = draw(hostile)
    return data


def written(path: Path, content) -> Path:
    """`content` as the file: bytes as they are, anything else as JSON."""
    path.write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
    return path


def load_or_refuse(data: dict, root: Path, verify: tuple[str, ...] = ()) -> dict | None:
    """The real load path without opening images; a DataError is an accepted outcome, nothing else is."""
    try:
        splits = load_splits({"verify_images": "none", **data}, verify=verify)
    except DataError:
        return None
    for records in splits.values():  # what was accepted is usable: clean captions, files inside the folder
        for record in records:
            assert record.captions and all(isinstance(c, str) and c == c.strip() and c for c in record.captions)
            assert isinstance(record.image_id, (int, str)) and not isinstance(record.image_id, bool)
            assert ".." not in Path(os.path.relpath(record.image_path, root)).parts
    return splits


@st.composite
def coco_files(draw) -> dict:
    count = draw(st.integers(1, 4))
    image_ids = draw(st.sampled_from([list(range(count)), [f"clip{i}" for i in range(count)]]))
    return {"images": [{"id": i, "file_name": draw(mostly(names.map(lambda n, i=i: f"{i}{n}")))} for i in image_ids],
            "annotations": [{"id": k, "image_id": draw(st.sampled_from(image_ids)), "caption": draw(captions)}
                            for k in range(draw(st.integers(0, 6)))]}


@fuzz(200)
@given(train=perturbed(coco_files()), on_bad_caption=st.sampled_from(["error", "skip"]))
def test_coco_reader(folder, train, on_bad_caption):
    path = written(folder / "coco.json", train)
    load_or_refuse({"source": {"name": "coco", "train": {"annotations": str(path), "images": str(folder)}},
                    "on_bad_caption": on_bad_caption}, folder, verify=("train",))


@st.composite
def karpathy_files(draw) -> dict:
    images = []
    for i in range(draw(st.integers(1, 4))):
        image = {"filepath": draw(st.sampled_from(["", "val2014"])), "filename": f"{i}.jpg", "imgid": i,
                 "split": draw(st.sampled_from(["train", "val", "test", "restval"])),
                 "sentences": [{"raw": draw(captions), "tokens": ["a", "b"]} for _ in range(draw(st.integers(0, 3)))]}
        if draw(st.booleans()):
            image["cocoid"] = 100 + i
        images.append(image)
    return {"images": images, "dataset": "coco"}


@fuzz(200)
@given(dataset=perturbed(karpathy_files()), restval_as_train=st.booleans())
def test_karpathy_reader(folder, dataset, restval_as_train):
    path = written(folder / "karpathy.json", dataset)
    load_or_refuse({"source": {"name": "karpathy", "dataset_json": str(path), "image_root": str(folder),
                               "restval_as_train": restval_as_train}, "on_bad_caption": "skip"}, folder)


table_text = st.text(alphabet=st.sampled_from(list("ab.png,#0\t\n\r \"'\ufeff\x00\u2028é")) | st.characters(), max_size=60)


@st.composite
def flickr_files(draw) -> tuple[str | bytes, dict | list | bytes | None]:
    """(caption table, split file): a CSV or token table of mostly good rows, sometimes any text or bytes; a split
    file over its names with mostly good split names, or none, or any JSON value."""
    rows = draw(st.lists(st.tuples(mostly(names, hostile_names), captions), min_size=1, max_size=6))
    table = draw(st.sampled_from([
        "image,caption\n" + "".join(f"{name},{caption}\n" for name, caption in rows),
        "".join(f"{name}#{k}\t{caption}\n" for k, (name, caption) in enumerate(rows))]))
    table = draw(mostly(st.just(table), table_text | table_text.map(lambda text: "image,caption\n" + text)
                        | st.binary(max_size=40)))
    split = {name: draw(mostly(st.sampled_from(["train", "val", "test"]))) for name, _ in rows if draw(st.booleans())}
    return table, draw(mostly(st.just(split) | st.none(), json_values | st.binary(max_size=20)))


@fuzz(200)
@given(files=flickr_files())
def test_flickr_reader(folder, files):
    table, split = files
    captions_file = written(folder / "captions.txt", table.encode("utf-8", "surrogatepass") if isinstance(table, str)
                            else table)
    split_file = written(folder / "split.json", split) if split is not None else None
    load_or_refuse({"source": {"name": "flickr", "captions_file": str(captions_file), "image_dir": str(folder),
                               "split_file": str(split_file) if split_file else None},
                    "on_bad_caption": "skip"}, folder)


@fuzz(150)
@given(texts=st.lists(st.text(max_size=30), max_size=8), min_count=st.integers(1, 3), max_words=st.integers(0, 6))
def test_vocabulary_on_any_text(texts, min_count, max_words):
    vocab = Vocabulary.build(texts, min_count=min_count)
    assert vocab.itos[:len(SPECIALS)] == list(SPECIALS) and vocab.pad == 0
    try:
        check_vocabulary(vocab, min_count, "fuzz")
    except DataError:
        assert len(vocab) == len(SPECIALS)
    for text in texts:
        ids = vocab.encode(text, max_words)
        assert ids[0] == vocab.start and ids[-1] == vocab.end and len(ids) <= max_words + 2
        words = vocab.decode_tokens(ids)
        assert words == [word if word in vocab.stoi else "<unk>" for word in tokenize(text)[:max_words]]
    assert Vocabulary(vocab.to_json()).itos == vocab.itos


@fuzz(150)
@given(words=st.lists(st.text(max_size=4) | json_values, max_size=6), prefix=st.booleans())
def test_vocabulary_from_any_list(words, prefix):
    try:
        vocab = Vocabulary(list(SPECIALS) + words if prefix else words)
    except DataError:
        return
    assert len(set(vocab.itos)) == len(vocab) and all(vocab.stoi[word] == i for i, word in enumerate(vocab.itos))


def encoded(image: Image.Image, form: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, form, **options)
    return buffer.getvalue()


def sample_images() -> list[bytes]:
    """Small real encodings of every kind the reader handles, plus two real photos when the Flickr sample is here."""
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 255, (16, 24, 3), dtype=np.uint8))
    exif = rgb.getexif()
    exif[0x0112] = 6
    samples = [encoded(rgb, "PNG"), encoded(rgb, "JPEG", quality=80), encoded(rgb, "JPEG", exif=exif.tobytes()),
               encoded(rgb.convert("P"), "PNG", transparency=0), encoded(rgb.convert("CMYK"), "JPEG"),
               encoded(Image.fromarray(np.arange(384, dtype=np.uint16).reshape(16, 24) * 170), "PNG"),
               encoded(rgb, "JPEG", progressive=True), encoded(rgb.convert("LA"), "PNG")]
    photos = sorted((FLICKR / "images").glob("*.jpg"))[:2] if (FLICKR / "images").is_dir() else []
    return samples + [photo.read_bytes() for photo in photos]


SAMPLES = sample_images()


def declare_size(data: bytearray, width: int, height: int) -> None:
    """Make a PNG's or JPEG's header declare another size (what a decompression bomb does), body unchanged."""
    if data.startswith(b"\x89PNG"):
        data[16:24] = struct.pack(">II", width, height)
        data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    frame = max(data.find(b"\xff\xc0"), data.find(b"\xff\xc2"))  # JPEG start of frame: ... height, width
    if data.startswith(b"\xff\xd8") and frame > 0:
        data[frame + 5:frame + 9] = struct.pack(">HH", height & 0xFFFF, width & 0xFFFF)


@st.composite
def mutated_images(draw) -> bytes:
    """A real encoding with another declared size, bit flips, a truncation and/or a splice of another one's bytes."""
    data = bytearray(SAMPLES[draw(st.integers(0, len(SAMPLES) - 1))])
    if draw(st.integers(0, 3)) == 0:
        sizes = st.integers(0, 70_000) | st.integers(0, 2**32 - 1)
        declare_size(data, draw(sizes), draw(sizes))
    for position, bit in draw(st.lists(st.tuples(st.integers(0, 10**7), st.integers(0, 7)), max_size=6)):
        data[position % len(data)] ^= 1 << bit
    if draw(st.booleans()):
        other = SAMPLES[draw(st.integers(0, len(SAMPLES) - 1))]
        start, length, at = (draw(st.integers(0, 10**7)) for _ in range(3))
        piece = other[start % len(other):][:length % 200]
        at %= len(data)
        data[at:at + len(piece)] = piece
    if draw(st.booleans()):
        data = data[:draw(st.integers(0, 10**7)) % (len(data) + 1)]
    return bytes(data)


def test_samples_read_as_they_are(folder):
    """The fuzzing starts from images that really load (so a mutation, not a bad sample, is what it tests)."""
    for k, data in enumerate(SAMPLES):
        assert load_rgb(written(folder / f"sample{k}", data)).mode == "RGB"


@fuzz(300)
@given(data=mutated_images(), size=st.sampled_from([None, 8]), max_pixels=st.sampled_from([MAX_IMAGE_PIXELS, 200_000]),
       full=st.booleans())
def test_image_reader_on_mutated_bytes(folder, data, size, max_pixels, full):
    path = written(folder / "image", data)
    problem = check_image(path, full=full, max_pixels=max_pixels)
    assert problem is None or (isinstance(problem, str) and str(path) in problem)
    try:
        image = load_rgb(path, size=size, max_pixels=max_pixels)
    except ImageReadError as error:
        assert str(path) in str(error)
        return
    assert image.mode == "RGB" and image.width * image.height <= max_pixels
