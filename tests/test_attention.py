"""Attention decoders: the penalty, cached grids, where the words look on the built-in shapes, maps, checkpoints.

Beam search over both attention decoders (exhaustive search, beam 1 = greedy, batch invariance, no grid
copies) is tested with every other decoder in test_decoding.py.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
import tempfile

import numpy as np
import pytest
import torch
from PIL import Image

from captioning.data.batches import Features
from captioning.data.encoding import cache_features
from captioning.inference.attention_maps import attention_array
from captioning.inference.captioner import Captioner
from captioning.inference.demo import caption_upload
from captioning.models import encoders
from captioning.models.decoders import DECODERS
from captioning.models.decoders.attend import coverage_penalty
from captioning.tasks import caption as caption_command
from tests.conftest import CONF, ROOT
from tests.hostile.probe import run_command
from tests.test_caption import compose_caption
from tools.attention_on_shapes import SIZE, cell_coverage, localisation, pictures_of_several_shapes


def test_doubly_stochastic_penalty_is_added_in_training_only():
    torch.manual_seed(0)
    decoder = DECODERS.build({"name": "soft_attention", "embed_size": 8, "hidden_size": 8, "attention_size": 8,
                              "dropout": 0.0, "doubly_stochastic": 2.0}, "test", vocab_size=12, feature_dim=4,
                             grid_dim=6)
    memory = Features(torch.randn(3, 4), torch.randn(3, 5, 6))
    tokens = torch.tensor([[1, 5, 6, 7, 2], [1, 8, 2, 0, 0], [1, 9, 10, 2, 0]])
    targets = tokens[:, 1:]
    decoder.eval()
    plain, count = decoder.loss(memory, tokens)
    expected = torch.nn.functional.cross_entropy(decoder.target_logits(memory, tokens), targets[targets != 0],
                                                 reduction="sum")
    assert count == 9 and torch.allclose(plain, expected)
    weights = decoder.attention_weights(memory, tokens)  # (3, 4, 5): one row per next word
    assert torch.allclose(weights.sum(-1), torch.ones(3, 4))
    # By hand: per image, each cell's attention summed over the image's real steps, then sum of (1 - that)^2.
    weights = weights.detach()
    by_hand = sum(float(((1 - weights[b, :n].sum(0)) ** 2).sum()) for b, n in enumerate([4, 2, 3]))
    assert float(coverage_penalty(weights, targets)) == pytest.approx(by_hand, rel=1e-5)
    decoder.train()
    regularised, _ = decoder.loss(memory, tokens)
    assert float(regularised.detach()) == pytest.approx(float(plain.detach()) + 2.0 * by_hand, rel=1e-5)


def test_cached_grids_are_the_encoders_grids():
    encoder = encoders.tiny_cnn(width=8, out_dim=16, trainable=False).eval()
    images = torch.randn(5, 3, SIZE, SIZE)
    table = cache_features(encoder, lambda i: images[i], 5, grid=True, stack=torch.stack, batch_size=2,
                           device=torch.device("cpu"))
    with torch.no_grad():
        expected = encoder(images)
    assert table["grid"].shape == (5, 16, 32)  # 4 x 4 cells of the last conv block's 4 * width channels
    assert torch.allclose(table["grid"], expected.grid, atol=1e-6)
    assert torch.allclose(table["pooled"], expected.pooled, atol=1e-6)
    assert "grid" not in cache_features(encoder, lambda i: images[i], 5, stack=torch.stack, batch_size=2,
                                        device=torch.device("cpu"))


# ---------------------------------------------------------------- a trained soft-attention captioner


def test_each_validation_sends_attention_maps_to_tensorboard(attention_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(attention_run / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    tags = events.Tags()["images"]
    assert sorted(tags) == ["val/attention/0", "val/attention/1", "val/attention/2"]  # train.attention_maps: 3
    assert len(events.Images("val/attention/0")) == 4  # one per validation (4 epochs)
    assert events.Images("val/attention/0")[0].width > 200  # panels drawn, not an empty image


def test_colour_and_shape_words_look_at_the_shape_they_name(attention_run):
    """Mass on a shape = sum over cells of weight x the fraction of the cell its box covers. Uniform attention
    gives the box's share of the image; the colour and shape words must each give at least 3x that, on average."""
    ratios = localisation(Captioner.from_checkpoint(attention_run / "checkpoints" / "best.pt", device="cpu"))
    assert ratios["colour"] >= 3.0 and ratios["shape"] >= 3.0, ratios


def test_the_localisation_measure_can_fail():
    """A decoder whose attention is uniform scores 1; one that looks at each named box scores far above 3."""
    image, words, named = pictures_of_several_shapes(1, seed=5)[0]
    for _, _, box in named:
        coverage = cell_coverage(box, 8)
        uniform = torch.full((64,), 1 / 64)
        assert float(uniform @ coverage) / float(coverage.mean()) == pytest.approx(1.0)
        on_box = coverage / coverage.sum()
        assert float(on_box @ coverage) / float(coverage.mean()) > 3.0
    assert cell_coverage((0, 0, 32, 32), 2).tolist() == [1.0, 0.0, 0.0, 0.0]
    assert cell_coverage((16, 16, 48, 48), 2).tolist() == [0.25, 0.25, 0.25, 0.25]


def test_captioner_returns_each_words_attention_with_beam_search(attention_run, synthetic_root):
    captioner = Captioner.from_checkpoint(attention_run / "checkpoints" / "best.pt", device="cpu")
    images = [image for image, _, _ in pictures_of_several_shapes(6, seed=7)]
    plain = captioner.caption(images, beam_size=3)
    looked = captioner.caption(images, beam_size=3, return_attention=True)
    for without, caption in zip(plain, looked, strict=True):
        assert caption.caption == without.caption and without.attention is None  # asking changes no caption
        assert caption.grid == [8, 8] and len(caption.attention) == len(caption.caption.split())
        assert all(abs(sum(row) - 1) < 1e-3 and len(row) == 64 for row in caption.attention)
    # The weights are those of decoding: the first word's row equals the decoder's first step on this image.
    memory = captioner.encode(captioner.read(images[0])[None])
    state = captioner.model.decoder.init_state(memory)
    h, _ = state.recurrent
    _, first = captioner.model.decoder.attention(*state.memory, h)
    assert torch.allclose(torch.tensor(looked[0].attention[0]), first[0], atol=1e-4)


def test_demo_answers_an_upload_with_the_attention_panels_of_its_caption(attention_run, tmp_path, monkeypatch):
    """The page's attention output is the panels of the very caption it shows, as an array: no temporary file is
    left behind per request."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    captioner = Captioner.from_checkpoint(attention_run / "checkpoints" / "best.pt", device="cpu")
    image = pictures_of_several_shapes(1, seed=3)[0][0]
    image.save(tmp_path / "shapes.png")
    message, shown, best, rows, panels = caption_upload(captioner, str(tmp_path / "shapes.png"), 3, 2, "none")
    caption = captioner.caption(image, beam_size=3, return_attention=True)
    assert message == "" and best == caption.caption and rows[0][1] == caption.caption
    assert panels.dtype == np.uint8 and panels.ndim == 3 and panels.shape[2] == 3
    assert np.array_equal(panels, attention_array(image, caption, captioner.preprocess))
    words = len(caption.caption.split())  # one panel per word, five to a row
    assert panels.shape[0] == round(2.4 * 80 * math.ceil(words / min(words, 5)))
    assert list(scratch.iterdir()) == []


def test_caption_script_writes_attention_maps_and_refuses_to_replace_them(attention_run, learned_run, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for index, (image, _, _) in enumerate(pictures_of_several_shapes(3, seed=11)):
        image.save(folder / f"shapes_{index}.png")
    maps, output = tmp_path / "maps", tmp_path / "captions.json"
    checkpoint = attention_run / "checkpoints" / "best.pt"
    script = [sys.executable, str(ROOT / "scripts" / "caption.py"), f"checkpoint={checkpoint}", f"images={folder}",
              "device=cpu", f"attention_maps={maps}", f"output={output}"]
    done = subprocess.run(script, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    pngs = sorted(path.name for path in maps.iterdir())
    assert pngs == ["shapes_0.png", "shapes_1.png", "shapes_2.png"]
    rows = json.loads(output.read_text())["captions"]
    words = len(rows[0]["caption"].split())
    with Image.open(maps / "shapes_0.png") as picture:  # one 2.2 x 2.4 inch panel per word, five to a row, 80 dpi
        assert picture.format == "PNG" and picture.size == (176 * min(words, 5), 192 * math.ceil(words / 5))
    assert len(rows[0]["attention"]) == words and rows[0]["grid"] == [8, 8]
    # The refusals in this process, through the scripts' own error wrapper (a new interpreter each costs seconds).
    before = (maps / "shapes_0.png").read_bytes()
    again = run_command(lambda: caption_command(compose_caption(script[2:])))
    assert again.code == 1 and f"{maps / 'shapes_0.png'} exists; give overwrite=true" in again.message
    assert (maps / "shapes_0.png").read_bytes() == before
    pooled = [part.replace(str(checkpoint), str(learned_run / "checkpoints" / "best.pt")) for part in script[2:]]
    refused = run_command(lambda: caption_command(compose_caption(pooled[:-1] + [f"attention_maps={tmp_path / 'other'}"])))
    assert refused.code == 1 and "decoder attends over no grid" in refused.message
    assert not (tmp_path / "other").exists()


def test_attention_checkpoint_evaluates_like_any_other(attention_run, tmp_path):
    from hydra import compose, initialize_config_dir

    from captioning.tasks import evaluate

    overrides = [f"checkpoint={attention_run / 'checkpoints' / 'best.pt'}", "split=test", "device=cpu", "java=none",
                 f"output_dir={tmp_path / 'eval'}", "max_images=40", "decode.beam_size=3"]
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        report = evaluate(compose("evaluate", overrides=overrides))
    assert report["metrics"]["BLEU-4"] > 30  # it captions the shapes, through the unchanged evaluate path


def test_grid_size_pools_the_grid_and_input_size_enlarges_it(tmp_path):
    """grid_size trades cells for size (the store and attention); input_size gives more cells (448 px: 14 x 14)."""
    images = torch.randn(2, 3, SIZE, SIZE)
    full = encoders.tiny_cnn(width=4, out_dim=8).eval()
    pooled = encoders.tiny_cnn(width=4, out_dim=8, grid_size=2).eval()
    pooled.load_state_dict(full.state_dict())
    with torch.no_grad():
        a, b = full(images), pooled(images)
    assert a.grid.shape == (2, 16, 16) and b.grid.shape == (2, 4, 16)
    assert torch.allclose(b.pooled, a.pooled)  # the pooled vector is the backbone's own, whatever the grid
    corner = a.grid.view(2, 4, 4, 16)[:, :2, :2].mean(dim=(1, 2))  # the top-left 2 x 2 cells, averaged
    assert torch.allclose(b.grid[:, 0], corner, atol=1e-6)
    with pytest.raises(ValueError, match="model.encoder.grid_size must be a positive"):
        encoders.tiny_cnn(grid_size=0)
    large = encoders.efficientnet_lite0(pretrained=True, input_size=448).eval()
    assert large.preprocess["input_size"] == 448
    with torch.no_grad():
        assert large(torch.randn(1, 3, 448, 448)).grid.shape == (1, 196, 1280)


def test_a_store_of_pooled_grids_serves_only_runs_that_pool_the_same_way(tmp_path):
    from captioning.data.features import FeatureStore, extract_features
    from captioning.data.records import DataError
    from captioning.data.sources.synthetic import synthetic_splits

    records = synthetic_splits(tmp_path / "shapes", num_train=4, num_val=1, num_test=1, image_size=32)["train"]
    encoder = encoders.efficientnet_lite0(pretrained=True, grid_size=3)
    store = extract_features(encoder, records, tmp_path / "store", device=torch.device("cpu"), store_grid=True)
    assert FeatureStore(store).header["grid"] == [9, 1280]
    FeatureStore(store).check_encoder(encoder)
    with pytest.raises(DataError, match="grid_size: store has 3, run wants None"):
        FeatureStore(store).check_encoder(encoders.efficientnet_lite0(pretrained=True))
    with pytest.raises(DataError, match="another encoder"):  # nor is it continued by one that does not pool
        extract_features(encoders.efficientnet_lite0(pretrained=True), records, store, device=torch.device("cpu"),
                         store_grid=True)


def test_updown_attention_lstm_is_one_lstm_over_word_pooled_and_language_state():
    """The pooled vector's gates, computed once per image, plus the per-step gates equal nn.LSTMCell over the
    concatenated [h_lang, pooled, word]; and a checkpoint of that joined layout loads into the split one."""
    torch.manual_seed(0)
    spec = {"name": "updown", "embed_size": 6, "hidden_size": 5, "attention_size": 4, "dropout": 0.0}
    decoder = DECODERS.build(spec, "test", vocab_size=11, feature_dim=7, grid_dim=3).eval()
    memory = Features(torch.randn(2, 7), torch.randn(2, 4, 3))
    state = decoder.init_state(memory)
    state = state.advance(tuple(torch.randn(2, 5) for _ in range(4)))  # a mid-caption state, not zeros
    h_att, c_att, h_lang, _ = state.recurrent
    words = decoder.embed(torch.tensor([3, 8]))
    cell = decoder.attend_lstm
    joined = torch.nn.LSTMCell(5 + 7 + 6, 5)
    weight_ih = torch.cat([cell.weight_ih[:, :5], decoder.attend_pooled.weight, cell.weight_ih[:, 5:]], dim=1)
    with torch.no_grad():
        joined.weight_ih.copy_(weight_ih)
        for name in ("weight_hh", "bias_ih", "bias_hh"):
            getattr(joined, name).copy_(getattr(cell, name))
        expected = joined(torch.cat([h_lang, memory.pooled, words], dim=1), (h_att, c_att))
        _, _, after = decoder.advance(words, state)
    for got, want in zip(after.recurrent[:2], expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)

    old = {k: v for k, v in decoder.state_dict().items() if k != "attend_pooled.weight"}
    old["attend_lstm.weight_ih"] = weight_ih.detach().clone()
    fresh = DECODERS.build(spec, "test", vocab_size=11, feature_dim=7, grid_dim=3)
    fresh.load_state_dict(old)
    for name, value in decoder.state_dict().items():
        torch.testing.assert_close(fresh.state_dict()[name], value)


@pytest.mark.parametrize("kind", ["soft_attention", "updown"])
def test_skipping_ended_captions_gives_the_same_loss_and_gradients(kind):
    """Training with skip_padding steps only the captions still running: the loss and every gradient are those of
    stepping the whole padded batch (dropout off, so both see the same network)."""
    spec = {"name": kind, "embed_size": 6, "hidden_size": 5, "attention_size": 4, "dropout": 0.0}
    lengths = [9, 2, 7, 3, 3, 9, 1, 5, 2, 4]  # words per caption, <end> included: cuts at several steps
    tokens = torch.zeros(len(lengths), max(lengths) + 1, dtype=torch.long)
    generator = torch.Generator().manual_seed(1)
    for row, length in enumerate(lengths):
        tokens[row, 0] = 1
        tokens[row, 1:length] = torch.randint(4, 11, (length - 1,), generator=generator)
        tokens[row, length] = 2
    memory = Features(torch.randn(len(lengths), 7, generator=generator), torch.randn(len(lengths), 4, 3, generator=generator))
    results = []
    for skip in (False, True):
        torch.manual_seed(0)
        decoder = DECODERS.build({**spec, "skip_padding": skip}, "test", vocab_size=11, feature_dim=7, grid_dim=3).train()
        total, count = decoder.loss(memory, tokens)
        total.backward()
        results.append((total.detach(), count, {n: p.grad.clone() for n, p in decoder.named_parameters()
                                                 if p.grad is not None}))
    (full, full_count, full_grads), (skipped, skipped_count, skipped_grads) = results
    assert skipped_count == full_count == sum(lengths)
    torch.testing.assert_close(skipped, full, rtol=1e-5, atol=1e-6)
    assert skipped_grads.keys() == full_grads.keys()
    for name, grad in full_grads.items():
        torch.testing.assert_close(skipped_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)
