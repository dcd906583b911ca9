"""Epoch sampling: length bucketing keeps every item once and cuts the padding the LSTM runs over."""
import random
from itertools import pairwise

import pytest

from captioning.data.sampler import EpochSampler


def lengths_of(counts: list[int], seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randint(4, 40) for _ in range(count)] for count in counts]


def padded_tokens(items: list[tuple[int, int]], lengths: list[list[int]], batch_size: int) -> int:
    batches = [items[i:i + batch_size] for i in range(0, len(items), batch_size)]
    return sum(len(batch) * max(lengths[r][c] for r, c in batch) for batch in batches)


def test_bucketing_keeps_every_pair_once_and_cuts_padding():
    counts = [5] * 203
    lengths = lengths_of(counts)
    plain = EpochSampler(counts, "pairs", seed=1, batch_size=16)
    bucketed = EpochSampler(counts, "pairs", seed=1, batch_size=16, lengths=lengths, bucket=8)
    items = list(bucketed)
    assert sorted(items) == sorted(plain) and len(set(items)) == len(items) == sum(counts) == len(bucketed)
    real = sum(map(sum, lengths))
    assert padded_tokens(items, lengths, 16) < 1.2 * real < padded_tokens(list(plain), lengths, 16)
    # Every whole batch comes from one sorted pool: its lengths are close together.
    for start in range(0, len(items) - len(items) % 16, 16):
        batch = [lengths[r][c] for r, c in items[start:start + 16]]
        assert max(batch) - min(batch) <= 8


def test_bucketed_order_is_deterministic_per_epoch_and_keeps_the_short_batch_last():
    counts = [1] * 50  # 50 items in batches of 8: the last batch holds 2
    lengths = lengths_of(counts, seed=2)
    make = lambda: EpochSampler(counts, "random_caption", seed=4, batch_size=8, lengths=lengths, bucket=3)  # noqa: E731
    a, b = make(), make()
    assert list(a) == list(b)
    b.set_epoch(1)
    assert list(b) != list(a)
    first_batches = {tuple(sorted(list(a)[i:i + 8])) for i in range(0, 48, 8)}
    b.set_epoch(0)
    assert {tuple(sorted(list(b)[i:i + 8])) for i in range(0, 48, 8)} == first_batches
    # Pools of 24 cut the shuffled order into 24 + 24 + 2: those last 2 items form the short batch, and it stays last.
    plain = list(EpochSampler(counts, "random_caption", seed=4, batch_size=8))
    assert set(list(a)[-2:]) == set(plain[-2:])
    b.set_epoch(0, skip=10)  # resuming mid-epoch continues the same order
    assert list(b) == list(a)[10:]


def test_bucketing_settings_are_checked():
    with pytest.raises(ValueError, match="train.bucket_pool"):
        EpochSampler([1, 1], bucket=-1)
    with pytest.raises(ValueError, match="lengths"):
        EpochSampler([1, 1], bucket=2)


def test_grouped_sampling_keeps_every_pair_once_with_an_images_captions_together():
    counts = [5, 3, 5, 1, 4] * 20
    grouped = EpochSampler(counts, "grouped", seed=3, batch_size=16)
    items = list(grouped)
    assert sorted(items) == sorted(EpochSampler(counts, "pairs", seed=3)) and len(grouped) == sum(counts)
    images = [record for record, _ in items]
    runs = [images[0]] + [b for a, b in pairwise(images) if a != b]  # each image once, its captions in a row
    assert sorted(runs) == list(range(len(counts)))
    assert images[:len(images) // 2] != sorted(images[:len(images) // 2])  # images shuffled
    assert any([c for r, c in items if r == image] != list(range(counts[image])) for image in runs)  # captions too
    again = EpochSampler(counts, "grouped", seed=3, batch_size=16)
    assert list(again) == items
    again.set_epoch(1)
    assert list(again) != items
    again.set_epoch(0, skip=10)
    assert list(again) == items[10:]


def test_grouped_sampling_refuses_length_bucketing():
    with pytest.raises(ValueError, match="bucket_pool.*grouped"):
        EpochSampler([5] * 10, "grouped", batch_size=8, lengths=lengths_of([5] * 10), bucket=2)
