"""Every registered encoder and both decoder image-input modes: shapes, gradients, preprocessing."""
import copy

import pytest
import torch

from captioning.data.batches import Features
from captioning.models.caption_model import CaptionModel, build_encoder
from captioning.models.decoders.lstm import LSTMDecoder
from captioning.registry import plain
from tests.conftest import CONF, compose_train

ENCODERS = sorted(path.stem for path in (CONF / "model" / "encoder").glob("*.yaml"))
LARGE = {"resnet50", "resnet101", "resnet152", "inception_v3"}  # seconds each to initialise: the full suite only


def encoder_config(name: str, **overrides) -> dict:
    """conf/model/encoder/NAME.yaml as composed (its own defaults included), with `pretrained: false` and overrides."""
    return {**plain(compose_train([f"model/encoder={name}"]).model.encoder), "pretrained": False, **overrides}


def build(config: dict):
    return build_encoder(config, pretrained=config["pretrained"])


@pytest.mark.parametrize("name", [pytest.param(name, marks=[pytest.mark.slow] if name in LARGE else [])
                                  for name in ENCODERS])
def test_every_registered_encoder(name):
    torch.manual_seed(0)
    encoder = build(encoder_config(name, trainable=True))
    pre = encoder.preprocess
    assert set(pre) == {"input_size", "mean", "std", "interpolation", "crop_pct"} and len(pre["mean"]) == 3
    size = pre["input_size"]
    images = torch.randn(2, 3, size, size)
    encoder.train()
    features = encoder(images).pooled
    assert features.shape == (2, encoder.out_dim)
    features.square().mean().backward()
    trainable = [(n, p) for n, p in encoder.named_parameters() if p.requires_grad]
    assert trainable, name
    missing = [n for n, p in trainable if p.grad is None]
    assert not missing, f"{name}: no gradient reaches {missing[:5]}"

    frozen = build(encoder_config(name, trainable=False))
    frozen.train()
    assert not frozen.training and not any(p.requires_grad for p in frozen.parameters())

    # Channels-last for speed, with the values of the usual contiguous layout.
    kernels = [p for p in frozen.parameters() if p.dim() == 4]
    assert kernels and all(p.is_contiguous(memory_format=torch.channels_last) for p in kernels), name
    contiguous = copy.deepcopy(frozen.backbone).to(memory_format=torch.contiguous_format)
    with torch.no_grad():
        got = frozen(images).pooled
        expected = contiguous.forward_head(contiguous.forward_features(images)).flatten(1)
    assert (got - expected).abs().max() <= 1e-5 * expected.abs().max(), name  # float rounding of another sum order


def test_torchvision_preprocessing_comes_from_the_weight_enum():
    import torchvision

    inception = build(encoder_config("inception_v3"))
    assert inception.preprocess["input_size"] == 299
    expected = torchvision.models.ResNet50_Weights.DEFAULT.transforms()
    resnet = build(encoder_config("resnet50"))
    assert resnet.preprocess["mean"] == pytest.approx(list(expected.mean))
    assert resnet.preprocess["crop_pct"] == pytest.approx(expected.crop_size[0] / expected.resize_size[0])
    assert resnet.out_dim == 2048


def test_offline_efficientnet_preprocessing():
    encoder = build(encoder_config("efficientnet_lite0", pretrained=True))  # the packaged weights: no download
    assert encoder.preprocess["input_size"] == 224
    assert encoder.preprocess["mean"] == [0.5] * 3 and encoder.preprocess["std"] == [0.5] * 3
    assert encoder.out_dim == 1280


@pytest.mark.parametrize("image_input", ["init", "first_step"])
def test_decoder_modes_teacher_forcing_matches_stepping(image_input):
    torch.manual_seed(0)
    decoder = LSTMDecoder(vocab_size=11, feature_dim=7, embed_size=6, hidden_size=5, num_layers=2,
                          image_input=image_input).eval()
    features, tokens = torch.randn(3, 7), torch.randint(1, 11, (3, 5))  # no padding: every position has a target
    logits = decoder.teacher_forced(features, tokens).view(3, 4, 11)  # the next word after each of tokens[:, :4]
    state = decoder.init_state(Features(features))
    for t in range(4):
        log_probs, state = decoder.step(tokens[:, t], state)
        assert torch.allclose(log_probs, torch.log_softmax(logits[:, t], -1), atol=1e-5)
    # the image matters in both modes
    assert not torch.allclose(decoder.teacher_forced(torch.randn(3, 7), tokens).view(3, 4, 11), logits)


@pytest.mark.parametrize("image_input", ["init", "first_step"])
def test_targets_only_logits_are_the_full_logits_at_real_targets(image_input):
    """The training loss projects only positions with a word to predict; they must equal those of stepping
    through every position."""
    torch.manual_seed(0)
    decoder = LSTMDecoder(vocab_size=13, feature_dim=7, embed_size=6, hidden_size=5, image_input=image_input).eval()
    tokens = torch.tensor([[1, 5, 6, 7, 2, 0], [1, 8, 2, 0, 0, 0], [1, 9, 10, 11, 12, 2]])  # 0 = padding
    features = torch.randn(3, 7)
    state, stepped = decoder.start_state(features), []
    for t in range(tokens.size(1) - 1):
        log_probs, state = decoder.step(tokens[:, t], state)
        stepped.append(log_probs)
    full = torch.stack(stepped, dim=1)  # (3, 5, 13) log-probs of the next word at every position
    picked = decoder.teacher_forced(features, tokens)
    real = tokens[:, 1:] != 0
    assert picked.shape == (int(real.sum()), 13) == (11, 13)
    assert torch.allclose(torch.log_softmax(picked, -1), full[real], atol=1e-5)
    total, count = decoder.loss(Features(features), tokens)  # the training loss: summed over the real targets only
    assert count == 11
    assert total.item() == pytest.approx(-full[real].gather(1, tokens[:, 1:][real][:, None]).sum().item(), rel=1e-5)


@pytest.mark.parametrize("image_input", ["init", "first_step"])
def test_gradients_reach_every_decoder_and_encoder_parameter(image_input):
    encoder = build(encoder_config("tiny_cnn", width=4, out_dim=8))
    decoder = LSTMDecoder(vocab_size=9, feature_dim=8, embed_size=6, hidden_size=5, image_input=image_input)
    model = CaptionModel(encoder, decoder).train()
    tokens = torch.randint(1, 9, (2, 5))
    total, _ = model(torch.randn(2, 3, 64, 64), tokens)
    total.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing


def test_unknown_image_input_is_rejected():
    with pytest.raises(ValueError, match="image_input"):
        LSTMDecoder(10, 4, image_input="sideways")
