"""The offline ImageNet EfficientNet-Lite0 really is pretrained: it recognises dogs in real photographs."""
import csv
from collections import defaultdict

import pytest
import torch

from captioning.data.images import load_rgb
from captioning.data.transforms import build_transform
from captioning.models.encoders import _timm_preprocess, efficientnet_lite0_imagenet
from tests.conftest import FLICKR

DOG_CLASSES = range(151, 269)  # ImageNet-1k classes 151..268 are dog breeds


@pytest.mark.skipif(not (FLICKR / "captions.txt").is_file(), reason="../shared/data/flickr8k-1k is absent")
def test_efficientnet_lite0_recognises_dogs_in_flickr_photos():
    captions = defaultdict(list)
    with open(FLICKR / "captions.txt", newline="") as handle:
        for row in csv.DictReader(handle):
            captions[row["image"]].append(row["caption"].lower())
    dog_photos = [name for name, texts in sorted(captions.items()) if all("dog" in t for t in texts)][:8]
    model = efficientnet_lite0_imagenet(pretrained=True).eval()
    transform = build_transform(_timm_preprocess(model))
    with torch.no_grad():
        images = torch.stack([transform(load_rgb(FLICKR / "images" / name)) for name in dog_photos])
        top1 = model(images).argmax(-1).tolist()
    hits = sum(label in DOG_CLASSES for label in top1)
    assert hits >= 6, f"only {hits}/8 dog photos classified as a dog breed: {top1}"
    # the same network without the packaged weights does not (guards against a silent no-op load)
    torch.manual_seed(0)
    with torch.no_grad():
        untrained = efficientnet_lite0_imagenet(pretrained=False).eval()(images).argmax(-1).tolist()
    assert sum(label in DOG_CLASSES for label in untrained) < hits or len(set(untrained)) == 1
