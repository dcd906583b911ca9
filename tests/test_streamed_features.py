"""Features streamed from a store's memory maps: the same batches and losses as the table in memory, the choice
between the two (data.features_in_memory), and the background reader."""
import json
import logging

import numpy as np
import pytest
import torch

from captioning.data import feature_rows
from captioning.data.feature_rows import StoreRows, placement, prefetched
from captioning.data.features import FeatureStore, create_store, encoder_identity
from captioning.data.records import CaptionRecord, DataError
from captioning.data.sampler import EpochSampler
from captioning.data.sources.synthetic import synthetic_splits
from captioning.data.store_files import checksums, write_json
from captioning.data.tensor_batches import TensorBatches
from captioning.models import encoders
from captioning.tasks import train
from captioning.vocab import Vocabulary
from tests.conftest import compose_train, tiny_overrides

GRID = [5, 6]  # regions, channels of the test stores


def write_store(path, identity: dict, ids: list[str], grid: list[int] | None, seed: int = 0):
    """A complete store of random features under `identity` (what an extraction would have written)."""
    rng = np.random.default_rng(seed)
    header = create_store(path, {"format": 1, **identity, "dtype": "float16", "count": len(ids), "grid": grid,
                                 "complete": False}, ids, [f"{i}.png" for i in ids])
    np.load(path / "features.npy", mmap_mode="r+")[:] = rng.standard_normal((len(ids), identity["dim"]))
    if grid:
        np.load(path / "grid.npy", mmap_mode="r+")[:] = rng.standard_normal((len(ids), *grid))
    np.load(path / "done.npy", mmap_mode="r+")[:] = True
    write_json(path / "header.json", {**header, "complete": True, "checksums": checksums(path, header, ids, False)})
    return path


def records_of(count: int, tmp_path) -> list[CaptionRecord]:
    words = ["a red circle", "two blue squares", "a green triangle on the left", "one small star"]
    return [CaptionRecord(str(i), tmp_path / f"{i}.png", "train", [words[(i + k) % 4] for k in range(1 + i % 3)])
            for i in range(count)]


@pytest.mark.parametrize("grid", [None, GRID])
def test_streamed_batches_equal_the_table_in_memory_bit_for_bit(tmp_path, grid):
    records = records_of(13, tmp_path)
    identity = {"encoder": "test", "weights": "w", "preprocess": None, "dim": 4, "grid_size": None}
    store = FeatureStore(write_store(tmp_path / "store", identity, [str(i) for i in reversed(range(15))], grid))
    vocab = Vocabulary.build([c for r in records for c in r.captions], min_count=1)
    tokens = [[torch.tensor(vocab.encode(c, 8)) for c in r.captions] for r in records]
    table = store.table(records, grid=grid is not None)
    in_memory = table["pooled"] if grid is None else feature_rows.Features(table["pooled"], table["grid"])
    for mode in ("pairs", "random_caption"):
        sampler = EpochSampler([len(r.captions) for r in records], mode, seed=5, batch_size=4)
        sampler.set_epoch(1, skip=3)
        expected = list(TensorBatches(in_memory, tokens, sampler, 4, torch.device("cpu")))
        for prefetch in (0, 2):
            streamed = TensorBatches(store.reader(records, grid=grid is not None), tokens, sampler, 4,
                                     torch.device("cpu"), prefetch=prefetch)
            got = list(streamed)
            assert len(got) == len(expected) == len(streamed) > 1
            for a, b in zip(got, expected, strict=True):
                for key in ("tokens", "lengths", "index"):
                    assert torch.equal(a[key], b[key])
                if grid is None:
                    assert a["input"].dtype == torch.float32 and torch.equal(a["input"], b["input"])
                else:
                    assert a["input"].grid.dtype == torch.float16 and a["input"].mask is None
                    assert torch.equal(a["input"].pooled, b["input"].pooled)
                    assert torch.equal(a["input"].grid, b["input"].grid)


def test_variable_regions_are_padded_per_batch_with_a_mask_and_in_memory_reads_the_same():
    rng = np.random.default_rng(1)
    counts = np.array([3, 1, 4, 2])
    offsets = np.concatenate([[0], np.cumsum(counts)])
    regions = rng.standard_normal((counts.sum(), 6)).astype(np.float16)
    pooled = rng.standard_normal((4, 6)).astype(np.float16)
    rows = StoreRows(pooled, np.array([2, 0, 3]), regions, offsets)  # records 0, 1, 2 are store rows 2, 0, 3
    batch = rows.read(torch.tensor([1, 0]))
    assert batch.grid.shape == (2, 4, 6) and batch.mask.tolist() == [[True] * 3 + [False], [True] * 4]
    assert np.array_equal(batch.grid[0, :3].numpy(), regions[0:3])
    assert np.array_equal(batch.grid[1].numpy(), regions[4:8])
    assert float(batch.grid[0, 3].abs().sum()) == 0.0
    assert torch.equal(batch.pooled, torch.from_numpy(pooled[[0, 2]].astype(np.float32)))
    item = rows.item(2)
    assert item.grid.shape == (2, 6) and np.array_equal(item.grid.numpy(), regions[8:10])
    copy = rows.in_memory()
    assert rows.nbytes() == copy.nbytes() == 3 * 6 * 4 + (4 + 3 + 2) * 6 * 2
    for records in ([0, 1, 2], [2], [1, 2]):
        a, b = rows.read(torch.tensor(records)), copy.read(torch.tensor(records))
        assert all(torch.equal(x, y) for x, y in ((a.pooled, b.pooled), (a.grid, b.grid), (a.mask, b.mask)))


@pytest.fixture(scope="module")
def lite0_store(tmp_path_factory, synthetic_root):
    """The tiny synthetic set's ids in a store that says it holds EfficientNet-Lite0 features (random values)."""
    folder = tmp_path_factory.mktemp("lite0-store")
    splits = synthetic_splits(synthetic_root / "shapes", num_train=24, num_val=6, num_test=2, image_size=64)
    ids = [str(r.image_id) for split in splits.values() for r in split]
    encoder = encoders.efficientnet_lite0(pretrained=True)
    return write_store(folder / "store", encoder_identity(encoder), ids, [49, 1280])


def overrides_for(synthetic_root, store, decoder: str) -> list[str]:
    tiny = [o for o in tiny_overrides(synthetic_root) if not o.startswith(("model.encoder.", "data.source.num"))]
    return tiny + ["model/encoder=efficientnet_lite0", f"model/decoder={decoder}", "model.decoder.attention_size=16",
                   f"data.source.root={synthetic_root / 'shapes'}", "data.source.num_train=24",
                   "data.source.num_val=6", "data.source.num_test=2",
                   "train.max_steps=3", "train.batch_size=8", "train.show_examples=0", f"data.features={store}"]


def step_losses(run_dir) -> list[float]:
    return [json.loads(line)["loss"] for line in (run_dir / "steps.jsonl").read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.parametrize("decoder", ["lstm", "updown"])
def test_streamed_and_in_memory_training_give_the_same_losses(tmp_path, synthetic_root, lite0_store, decoder, caplog):
    overrides = overrides_for(synthetic_root, lite0_store, decoder)
    if decoder == "lstm":
        overrides = [o for o in overrides if not o.startswith("model.decoder.attention_size")]
    caplog.set_level(logging.INFO)
    train(compose_train(overrides + ["data.features_in_memory=true"], tmp_path / "memory"))
    assert "features in memory: data.features_in_memory=true" in caplog.text
    train(compose_train(overrides + ["data.features_in_memory=false"], tmp_path / "streamed"))
    assert "features read from the store as batches need them: data.features_in_memory=false" in caplog.text
    losses = step_losses(tmp_path / "memory")
    assert len(losses) == 3 and losses == step_losses(tmp_path / "streamed")


@pytest.mark.slow
def test_a_store_above_the_memory_cap_streams_under_auto_and_is_refused_under_true(tmp_path, synthetic_root,
                                                                                   lite0_store, monkeypatch, caplog):
    overrides = overrides_for(synthetic_root, lite0_store, "updown")
    needed = 30 * (1280 * 4 + 49 * 1280 * 2)  # 30 train + val images: pooled float32, grid float16
    monkeypatch.setattr(feature_rows, "available_memory", lambda: needed + 1000)  # fits, but not within half
    caplog.set_level(logging.INFO)
    train(compose_train(overrides + ["train.max_steps=1"], tmp_path / "auto"))
    assert (f"features read from the store as batches need them: data.features_in_memory=auto: {lite0_store} needs "
            f"{feature_rows.gb(needed)}") in caplog.text and "more than 50% of the free memory" in caplog.text
    monkeypatch.setattr(feature_rows, "available_memory", lambda: needed - 1)
    with pytest.raises(DataError, match=r"features_in_memory=true: the features do not fit in memory \(.* needs "):
        train(compose_train(overrides + ["data.features_in_memory=true"], tmp_path / "refused"))
    assert not (tmp_path / "refused" / "steps.jsonl").read_text()  # refused before the first step
    monkeypatch.setattr(feature_rows, "available_memory", lambda: 3 * needed)
    caplog.clear()
    train(compose_train(overrides + ["train.max_steps=1"], tmp_path / "fits"))
    assert "features in memory: data.features_in_memory=auto" in caplog.text and "within 50%" in caplog.text


def test_placement_rules():
    cpu = torch.device("cpu")
    with pytest.raises(DataError, match="must be auto, true or false, got 'yes'"):
        placement("yes", 1, cpu, "s")
    free = feature_rows.available_memory()
    assert placement(False, 1, cpu, "s").in_memory is False
    assert placement(True, free // 2 + 1, cpu, "s").in_memory is True
    assert placement("auto", free // 2 + 1024, cpu, "s").in_memory is False
    assert placement("auto", 1024, cpu, "s").in_memory is True


def test_prefetching_keeps_order_raises_errors_and_stops_with_its_consumer():
    assert list(prefetched(iter(range(10)), depth=2)) == list(range(10))

    def broken():
        yield 1
        raise DataError("row 7 unreadable")
    with pytest.raises(DataError, match="row 7"):
        list(prefetched(broken()))
    produced = []

    def endless():
        while True:
            produced.append(len(produced))
            yield produced[-1]
    stream = prefetched(endless(), depth=2)
    assert [next(stream) for _ in range(3)] == [0, 1, 2]
    stream.close()  # the thread stops: it produced at most the depth beyond what was taken
    count = len(produced)
    assert count <= 3 + 2 + 1 and len(produced) == count


@pytest.fixture(scope="module")
def region_store(tmp_path_factory, synthetic_root):
    """Bottom-up-style region files (K from 2 to 9, 12 wide) for the tiny synthetic set, packed into a store."""
    from captioning.data.regions import pack_region_features

    folder = tmp_path_factory.mktemp("regions")
    (folder / "att").mkdir()
    splits = synthetic_splits(synthetic_root / "shapes", num_train=24, num_val=6, num_test=2, image_size=64)
    rng = np.random.default_rng(0)
    for record in [record for records in splits.values() for record in records]:
        np.savez(folder / "att" / f"{record.image_id}.npz",
                 feat=rng.standard_normal((int(rng.integers(2, 10)), 12)).astype(np.float32))
    return pack_region_features(folder / "att", folder / "store")


@pytest.mark.slow
def test_training_from_region_features_needs_no_encoder_and_evaluates_from_the_store(tmp_path, synthetic_root,
                                                                                     region_store, caplog):
    overrides = [o for o in overrides_for(synthetic_root, region_store, "soft_attention")
                 if o != "model/encoder=efficientnet_lite0"] + ["data.verify_images=none"]
    caplog.set_level(logging.INFO)
    train(compose_train(overrides + ["data.features_in_memory=true", "train.evaluate_test=true"], tmp_path / "memory"))
    assert f"model.encoder: the precomputed regions of {region_store} (12-wide regions" in caplog.text
    train(compose_train(overrides + ["data.features_in_memory=false"], tmp_path / "streamed"))
    losses = step_losses(tmp_path / "memory")
    assert len(losses) == 3 and losses == step_losses(tmp_path / "streamed")
    report = json.loads((tmp_path / "memory" / "test" / "metrics.json").read_text())
    assert report["data"]["images"] == 2 and "CIDEr" in report["metrics"]

    from captioning.inference.captioner import Captioner
    captioner = Captioner.from_checkpoint(tmp_path / "memory" / "checkpoints" / "best.pt", device="cpu")
    with pytest.raises(ValueError, match="reads precomputed region features and has no image encoder"):
        captioner.caption(str(synthetic_root / "missing.png"))


def test_each_process_reads_only_the_rows_of_its_own_shard(tmp_path):
    records = records_of(12, tmp_path)
    store = FeatureStore(write_store(tmp_path / "store", {"encoder": "test", "weights": "w", "preprocess": None,
                                                          "dim": 4, "grid_size": None}, [str(i) for i in range(12)],
                                     GRID))
    tokens = [[torch.tensor([1, 5, 2])] * len(r.captions) for r in records]
    read = {}
    for rank in (0, 1):
        rows = store.reader(records, grid=True)
        seen = read.setdefault(rank, [])
        original = rows.read
        rows.read = lambda index, seen=seen, original=original: seen.extend(index.tolist()) or original(index)
        sampler = EpochSampler([len(r.captions) for r in records], "random_caption", seed=1, batch_size=4, rank=rank,
                               world_size=2)
        batches = list(TensorBatches(rows, tokens, sampler, 2, torch.device("cpu")))
        assert sorted(seen) == sorted(i for batch in batches for i in batch["index"].tolist())
        assert seen == [index for index, _ in sampler]
    assert not set(read[0]) & set(read[1]) and sorted(read[0] + read[1]) == list(range(12))


@pytest.mark.slow
def test_self_critical_training_runs_from_a_streamed_store(tmp_path, synthetic_root, lite0_store):
    overrides = overrides_for(synthetic_root, lite0_store, "updown")
    train(compose_train(overrides + ["data.features_in_memory=true"], tmp_path / "xe"))
    scst = overrides + ["train.objective=scst", f"train.init_from={tmp_path / 'xe' / 'checkpoints' / 'best.pt'}",
                        "train.scst.samples=2", "train.max_steps=2"]
    train(compose_train(scst + ["data.features_in_memory=true"], tmp_path / "memory"))
    train(compose_train(scst + ["data.features_in_memory=false"], tmp_path / "streamed"))
    assert len(step_losses(tmp_path / "memory")) == 2
    assert step_losses(tmp_path / "memory") == step_losses(tmp_path / "streamed")
