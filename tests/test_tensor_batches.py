"""Tensor-indexed batches equal what DataLoader + collate give for the same sampler."""
import torch
from torch.utils.data import DataLoader

from captioning.data.datasets import CaptionDataset, collate
from captioning.data.loading import make_loader
from captioning.data.records import CaptionRecord
from captioning.data.sampler import EpochSampler
from captioning.data.tensor_batches import TensorBatches
from captioning.vocab import Vocabulary


def test_same_batches_as_the_dataloader(tmp_path):
    captions = ["a red circle", "two blue squares and a cat", "a dog", "one very long caption with many words in it"]
    records = [CaptionRecord(i, tmp_path / f"{i}.png", "train", [captions[(i + k) % 4] for k in range(i % 3 + 1)])
               for i in range(11)]
    vocab = Vocabulary.build(captions, min_count=1)
    features = torch.randn(11, 6)
    dataset = CaptionDataset(records, vocab, 5, features.__getitem__)
    for mode in ("pairs", "random_caption"):
        sampler = EpochSampler([len(r.captions) for r in records], mode, seed=3)
        sampler.set_epoch(2, skip=4)  # resuming mid-epoch skips the same items in both
        expected = list(DataLoader(dataset, batch_size=4, sampler=sampler, collate_fn=collate))
        got = list(TensorBatches(features, dataset.tokens, sampler, 4, torch.device("cpu")))
        assert len(got) == len(expected) == len(TensorBatches(features, dataset.tokens, sampler, 4, torch.device("cpu")))
        for a, b in zip(got, expected, strict=True):
            for key in ("input", "tokens", "lengths", "index"):
                assert torch.equal(a[key], b[key]), (mode, key)


def test_make_loader_gives_the_same_batches_and_leaves_the_global_rng_alone(tmp_path):
    """Resumes are exact only if building and iterating a loader draws nothing from torch's global RNG."""
    records = [CaptionRecord(i, tmp_path / f"{i}.png", "train", ["a dog", "a red circle"][: i % 2 + 1]) for i in range(7)]
    dataset = CaptionDataset(records, Vocabulary.build(["a dog", "a red circle"], min_count=1), 5, torch.randn(7, 3).__getitem__)
    sampler = EpochSampler([len(r.captions) for r in records], "pairs", seed=1)
    torch.manual_seed(0)
    state = torch.get_rng_state()
    loader = make_loader(dataset, sampler, 3, {"num_workers": 0, "pin_memory": "auto"}, torch.device("cpu"))
    got = list(loader)
    assert torch.equal(torch.get_rng_state(), state)
    assert not loader.pin_memory  # auto: pinned only when training on CUDA
    expected = list(DataLoader(dataset, batch_size=3, sampler=sampler, collate_fn=collate))
    assert len(got) == len(expected) and all(torch.equal(a["tokens"], b["tokens"])
                                             for a, b in zip(got, expected, strict=True))
