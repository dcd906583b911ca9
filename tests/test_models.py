"""Every registered encoder and both decoder image-input modes: shapes, gradients, preprocessing."""
import copy

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from captioning.models.captioner import CaptionModel
from captioning.models.decoder import LSTMDecoder

from tests.conftest import CONF

ENCODERS = sorted(path.stem for path in (CONF / "model" / "encoder").glob("*.yaml"))


def encoder_config(name: str, **overrides):
    cfg = OmegaConf.load(CONF / "model" / "encoder" / f"{name}.yaml")
    return OmegaConf.merge(cfg, {"pretrained": False, **overrides})


@pytest.mark.parametrize("name", ENCODERS)
def test_every_registered_encoder(name):
    torch.manual_seed(0)
    encoder = instantiate(encoder_config(name, trainable=True))
    pre = encoder.preprocess
    assert set(pre) == {"input_size", "mean", "std", "interpolation", "crop_pct"} and len(pre["mean"]) == 3
    size = pre["input_size"]
    images = torch.randn(2, 3, size, size)
    encoder.train()
    features = encoder(images)
    assert features.shape == (2, encoder.out_dim)
    features.square().mean().backward()
    trainable = [(n, p) for n, p in encoder.named_parameters() if p.requires_grad]
    assert trainable, name
    missing = [n for n, p in trainable if p.grad is None]
    assert not missing, f"{name}: no gradient reaches {missing[:5]}"

    frozen = instantiate(encoder_config(name, trainable=False))
    frozen.train()
    assert not frozen.training and not any(p.requires_grad for p in frozen.parameters())

    # Channels-last for speed, with the values of the usual contiguous layout.
    kernels = [p for p in frozen.parameters() if p.dim() == 4]
    assert kernels and all(p.is_contiguous(memory_format=torch.channels_last) for p in kernels), name
    contiguous = copy.deepcopy(frozen.backbone).to(memory_format=torch.contiguous_format)
    with torch.no_grad():
        got, expected = frozen(images), contiguous(images).flatten(1)
    assert (got - expected).abs().max() <= 1e-5 * expected.abs().max(), name  # float rounding of another sum order


def test_torchvision_preprocessing_comes_from_the_weight_enum():
    import torchvision

    inception = instantiate(encoder_config("inception_v3"))
    assert inception.preprocess["input_size"] == 299
    expected = torchvision.models.ResNet50_Weights.DEFAULT.transforms()
    resnet = instantiate(encoder_config("resnet50"))
    assert resnet.preprocess["mean"] == pytest.approx(list(expected.mean))
    assert resnet.preprocess["crop_pct"] == pytest.approx(expected.crop_size[0] / expected.resize_size[0])
    assert resnet.out_dim == 2048


def test_offline_efficientnet_preprocessing():
    encoder = instantiate(OmegaConf.load(CONF / "model" / "encoder" / "efficientnet_lite0.yaml"))
    assert encoder.preprocess["input_size"] == 224
    assert encoder.preprocess["mean"] == [0.5] * 3 and encoder.preprocess["std"] == [0.5] * 3
    assert encoder.out_dim == 1280


@pytest.mark.parametrize("image_input", ["init", "first_step"])
def test_decoder_modes_teacher_forcing_matches_stepping(image_input):
    torch.manual_seed(0)
    decoder = LSTMDecoder(vocab_size=11, feature_dim=7, embed_size=6, hidden_size=5, num_layers=2,
                          image_input=image_input).eval()
    features, tokens = torch.randn(3, 7), torch.randint(1, 11, (3, 4))
    logits = decoder(features, tokens)
    assert logits.shape == (3, 4, 11)
    state = decoder.init_state(features)
    for t in range(4):
        log_probs, state = decoder.step(tokens[:, t], state)
        assert torch.allclose(log_probs, torch.log_softmax(logits[:, t], -1), atol=1e-5)
    # the image matters in both modes
    assert not torch.allclose(decoder(torch.randn(3, 7), tokens), logits)


@pytest.mark.parametrize("image_input", ["init", "first_step"])
def test_targets_only_logits_are_the_full_logits_at_real_targets(image_input):
    """The training loss projects only positions with a word to predict; they must equal the full forward's."""
    torch.manual_seed(0)
    decoder = LSTMDecoder(vocab_size=13, feature_dim=7, embed_size=6, hidden_size=5, image_input=image_input).eval()
    tokens = torch.tensor([[1, 5, 6, 7, 2, 0], [1, 8, 2, 0, 0, 0], [1, 9, 10, 11, 12, 2]])  # 0 = padding
    features = torch.randn(3, 7)
    full = decoder(features, tokens)  # (3, 6, 13)
    picked = decoder(features, tokens, targets_only=True)
    real = tokens[:, 1:] != 0
    assert picked.shape == (int(real.sum()), 13) == (11, 13)
    assert torch.allclose(picked, full[:, :-1][real], atol=1e-6)


@pytest.mark.parametrize("image_input", ["init", "first_step"])
def test_gradients_reach_every_decoder_and_encoder_parameter(image_input):
    encoder = instantiate(encoder_config("tiny_cnn", width=4, out_dim=8))
    decoder = LSTMDecoder(vocab_size=9, feature_dim=8, embed_size=6, hidden_size=5, image_input=image_input)
    model = CaptionModel(encoder, decoder).train()
    tokens = torch.randint(1, 9, (2, 5))
    model(torch.randn(2, 3, 64, 64), tokens).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing


def test_unknown_image_input_is_rejected():
    with pytest.raises(ValueError, match="image_input"):
        LSTMDecoder(10, 4, image_input="sideways")
