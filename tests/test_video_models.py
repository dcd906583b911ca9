"""LRCN models: time folded into the batch, masked LSTM pooling, gradients, and the caption decoder on clip vectors."""
import pytest
import torch
from omegaconf import OmegaConf

from captioning.data.batches import Clips
from captioning.decoding import beam_search, greedy_search
from captioning.models.caption_model import build_activity_model, build_caption_model
from captioning.models.encoders import tiny_cnn
from captioning.models.temporal import TemporalLSTM, TimeDistributed
from tests.conftest import compose_train


def small_clips(B=3, T=5, lengths=(5, 2, 4), size=32) -> Clips:
    torch.manual_seed(0)
    mask = torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]  # (B, T)
    frames = torch.randn(B, T, 3, size, size) * mask[:, :, None, None, None]
    return Clips(frames, mask)


def test_folding_time_into_the_batch_equals_a_loop_over_frames():
    encoder = tiny_cnn(image_size=32, width=8, out_dim=24)
    for module in encoder.modules():  # non-trivial batch-norm statistics, so the check is not vacuous
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    folded = TimeDistributed(encoder).eval()
    clips = small_clips()
    with torch.no_grad():
        out = folded(clips)
        B, T = clips.mask.shape
        for b in range(B):
            for t in range(T):
                expected = encoder(clips.frames[b, t][None]).pooled[0] if clips.mask[b, t] else torch.zeros(24)
                assert torch.allclose(out.frames[b, t], expected, atol=1e-5), (b, t)
    assert out.frames.shape == (B, T, 24) and torch.equal(out.mask, clips.mask)


def test_padding_never_reaches_the_encoder():
    calls = []
    encoder = tiny_cnn(image_size=32, width=8, out_dim=16)
    encoder.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    TimeDistributed(encoder)(small_clips(lengths=(5, 2, 4)))
    assert calls == [11]  # one call for all real frames of the batch: no Python loop, no padded frames


@pytest.mark.parametrize("pooling", ["last", "mean"])
@pytest.mark.parametrize("training", [True, False])
def test_temporal_lstm_ignores_padding(pooling, training):
    torch.manual_seed(0)
    lstm = TemporalLSTM(input_dim=6, hidden_size=10, pooling=pooling).train(training)
    features = torch.randn(2, 7, 6)
    mask = torch.arange(7)[None, :] < torch.tensor([7, 3])[:, None]
    garbage = features.clone()
    garbage[1, 3:] = 1e3  # what sits in padded positions must not matter, batch-norm statistics included
    with torch.no_grad():
        out = lstm(features, mask)
        assert torch.allclose(out, lstm(garbage, mask), atol=1e-6)
        lstm.eval()
        out = lstm(features, mask)
        outputs, (h, _) = lstm.lstm(lstm.norm(features[1, :3])[None])  # the short clip alone, unpadded
    expected = h[-1, 0] if pooling == "last" else outputs[0].mean(0)
    assert torch.allclose(out[1], expected, atol=1e-6)


@pytest.mark.parametrize("trainable", [True, False])
def test_activity_model_gradients_and_frozen_encoder(trainable):
    cfg = compose_train(["task=activity", "model.encoder.image_size=32", "model.encoder.out_dim=16",
                         "model.temporal.hidden_size=12", f"model.encoder.trainable={str(trainable).lower()}"])
    model = build_activity_model(OmegaConf.to_container(cfg.model, resolve=True), num_classes=4)
    model.train()
    logits = model.logits(small_clips())
    assert logits.shape == (3, 4)
    logits.logsumexp(1).sum().backward()
    head = [n for n, p in model.head.named_parameters() if p.grad is None]
    assert not head, head
    encoder_grads = [p.grad is not None for p in model.encoder.parameters()]
    assert all(encoder_grads) if trainable else (not any(encoder_grads) and not model.encoder.encoder.training)


def test_clip_captioner_decodes_with_the_image_decoding_code():
    cfg = compose_train(["task=video_caption", "model.encoder.image_size=32", "model.encoder.out_dim=16",
                         "model.temporal.hidden_size=12", "model.decoder.hidden_size=16", "model.decoder.embed_size=8"])
    model = build_caption_model(OmegaConf.to_container(cfg.model, resolve=True), vocab_size=11).eval()
    clips = small_clips()
    tokens = torch.randint(1, 11, (3, 6))  # no padding: every next word is a target
    with torch.no_grad():
        assert model.decoder.target_logits(model.memory(clips), tokens).shape == (3 * 5, 11)
        total, count = model(clips, tokens)
        assert count == 3 * 5 and torch.isfinite(total)
        memory = model.encoder(clips)
        state = model.decoder.init_state(memory)
        assert state[0].shape == (1, 3, 16)
        greedy, _ = greedy_search(model.decoder, memory, start=1, end=2, max_tokens=8)
        beam, _ = beam_search(model.decoder, memory, start=1, end=2, beam_size=1, max_tokens=8)
    assert torch.equal(beam[:, 0], greedy)  # beam 1 is greedy: the clip state drives the same decoding code


def test_configured_temporal_pooling_is_checked():
    with pytest.raises(ValueError, match="model.temporal.pooling"):
        TemporalLSTM(input_dim=4, pooling="max")


def test_init_from_moves_the_clip_encoder_between_tasks(tmp_path):
    """`train.init_from`: an activity model's frame CNN and clip LSTM start a captioner, and the other way round."""
    from captioning.checkpoint import load_checkpoint, save_checkpoint
    from captioning.tasks.base import part_prefixes, warm_start

    overrides = ["model.encoder.image_size=32", "model.encoder.out_dim=16", "model.temporal.hidden_size=12"]
    activity_spec = OmegaConf.to_container(compose_train(["task=activity"] + overrides).model, resolve=True)
    caption_spec = OmegaConf.to_container(compose_train(["task=video_caption"] + overrides).model, resolve=True)
    activity = build_activity_model(activity_spec, num_classes=4)
    captioner = build_caption_model(caption_spec, vocab_size=9)
    save_checkpoint({"model": activity.state_dict(), "model_spec": activity_spec, "parts": part_prefixes(activity),
                     "classes": ["a", "b", "c", "d"], "preprocess": {}, "task": "activity"}, tmp_path / "activity.pt")
    decoder_before = {name: value.clone() for name, value in captioner.decoder.captioner.state_dict().items()}
    copied = warm_start(captioner, load_checkpoint(tmp_path / "activity.pt"), tmp_path / "activity.pt")
    assert sorted(copied) == ["encoder", "temporal"]  # the classifier has no place in a captioner
    for name, value in activity.head.temporal.state_dict().items():
        assert torch.equal(captioner.decoder.temporal.state_dict()[name], value), name
    assert torch.equal(captioner.encoder.state_dict()["encoder.backbone.head.1.weight"],
                       activity.encoder.state_dict()["encoder.backbone.head.1.weight"])
    for name, value in captioner.decoder.captioner.state_dict().items():  # the caption decoder starts fresh
        assert torch.equal(value, decoder_before[name]), name
    fresh = build_activity_model(activity_spec, num_classes=4)
    save_checkpoint({"model": captioner.state_dict(), "model_spec": caption_spec, "parts": part_prefixes(captioner),
                     "vocab": [], "preprocess": {}, "task": "video_caption"}, tmp_path / "captioner.pt")
    warm_start(fresh, load_checkpoint(tmp_path / "captioner.pt"), tmp_path / "captioner.pt")
    assert torch.equal(fresh.head.temporal.lstm.weight_ih_l0, activity.head.temporal.lstm.weight_ih_l0)


def test_two_stage_description_recipe():
    """experiment=lrcn_description: a description run that starts from a named activity checkpoint."""
    from omegaconf.errors import InterpolationToMissingValueError

    cfg = compose_train(["experiment=lrcn_description", "activity=runs/activity/checkpoints/best.pt"])
    assert cfg.task.name == "video_caption" and cfg.train.init_from == "runs/activity/checkpoints/best.pt"
    assert cfg.model.temporal.pooling == compose_train(["task=activity"]).model.temporal.pooling == "mean"
    assert cfg.train.encoder_lr < cfg.optim.lr
    with pytest.raises(InterpolationToMissingValueError, match="activity"):  # stage 1 must be named
        _ = compose_train(["experiment=lrcn_description"]).train.init_from


@pytest.mark.parametrize("encoder", [["model/encoder=resnet18", "model.encoder.pretrained=false"],
                                     ["model/encoder=efficientnet_lite0"]])
@pytest.mark.parametrize("task", ["activity", "video_caption"])
def test_clip_tasks_build_with_any_registered_frame_encoder(task, encoder):
    """`task=... model/encoder=...`: the composed model spec builds, and a forward pass on clips at the encoder's
    input size gives a finite loss (efficientnet_lite0 loads its packaged weights: no download)."""
    from captioning.registry import plain

    cfg = compose_train([f"task={task}", *encoder])
    spec = plain(cfg.model)
    torch.manual_seed(0)
    if task == "activity":
        assert set(spec) == {"encoder", "temporal", "classifier"}
        model = build_activity_model(spec, num_classes=4, pretrained=spec["encoder"]["pretrained"])
        target = torch.tensor([0, 3])
    else:
        assert set(spec) == {"encoder", "temporal", "decoder"}
        model = build_caption_model(spec, vocab_size=11, pretrained=spec["encoder"]["pretrained"])
        target = torch.tensor([[1, 5, 6, 2], [1, 7, 2, 0]])
    assert model.encoder.out_dim == {"resnet18": 512, "efficientnet_lite0": 1280}[model.encoder.encoder.name]
    size = model.encoder.preprocess["input_size"]
    clips = Clips(torch.randn(2, 2, 3, size, size), torch.ones(2, 2, dtype=torch.bool))  # 2 clips x 2 frames
    total, count = model.train()(clips, target)
    assert count == (2 if task == "activity" else 5) and torch.isfinite(total) and total.item() > 0
    total.backward()
    missing = [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing  # the loss reaches every trained part (clip LSTM and classifier or decoder)
    assert not any(p.requires_grad for p in model.encoder.parameters())  # these encoders are frozen by default
