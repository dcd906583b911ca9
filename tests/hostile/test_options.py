"""Hostile options: a bad value stops train / evaluate / caption / extract before any work, with exit status 1 and
one line naming the key and the value; no run folder, no data generated, no checkpoint read, no file touched.

Each case composes the real config with the bad override and runs the entry point as its script would
(tests/hostile/probe.py). The data cache, run folder and output paths point into an empty tmp folder, so a check that
let the value through would write there (and read the junk checkpoint, whose error names no key).
"""
from __future__ import annotations

import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException

from captioning.config import check_options
from captioning.tasks import caption, evaluate, extract, train
from tests.conftest import CONF, ROOT, compose_train, tiny_overrides
from tests.hostile.probe import assert_refused, run_command, snapshot

# (overrides, key the message names, value as the message shows it)
TRAIN_CASES = [
    # the cases
    (["train.grad_clip=-1"], "train.grad_clip", "=-1"),
    (["data.on_bad_caption=foo"], "data.on_bad_caption", "'foo'"),
    (["data.verify_images=fulll"], "data.verify_images", "'fulll'"),
    (["train.batch_size=abc"], "train.batch_size", "'abc'"),
    (["seed=abc"], "seed", "'abc'"),
    (["train.log_every=0"], "train.log_every", "=0"),
    # wrong types: integers are integers, booleans are booleans
    (["train.batch_size=3.5"], "train.batch_size", "3.5"),
    (["train.batch_size=true"], "train.batch_size", "true"),
    (["train.epochs='5'"], "train.epochs", "'5'"),
    (["seed=1.5"], "seed", "1.5"),
    (["vocab.max_words=abc"], "vocab.max_words", "'abc'"),
    (["train.evaluate_test=yes"], "train.evaluate_test", "'yes'"),
    (["data.augment.hflip=1"], "data.augment.hflip", "=1"),
    (["data.extract_features=1"], "data.extract_features", "=1"),
    (["train.grad_clip=abc"], "train.grad_clip", "'abc'"),
    (["task=activity", "data.keep_in_memory=no"], "data.keep_in_memory", "'no'"),
    # ranges
    (["train.grad_clip=0"], "train.grad_clip", "=0"),
    (["train.grad_clip=nan"], "train.grad_clip", "nan"),
    (["seed=-1"], "seed", "-1"),
    (["train.batch_size=0"], "train.batch_size", "=0"),
    (["train.micro_batch=0"], "train.micro_batch", "=0"),
    (["train.epochs=0"], "train.epochs", "=0"),
    (["train.max_steps=0"], "train.max_steps", "=0"),
    (["train.bucket_pool=-1"], "train.bucket_pool", "-1"),
    (["train.encoder_lr=-0.1"], "train.encoder_lr", "-0.1"),
    (["train.checkpoint_every=0"], "train.checkpoint_every", "=0"),
    (["train.show_examples=-1"], "train.show_examples", "-1"),
    (["vocab.min_count=0"], "vocab.min_count", "=0"),
    (["data.augment.color_jitter=-0.5"], "data.augment.color_jitter", "-0.5"),
    (["data.num_workers=-1"], "data.num_workers", "-1"),
    (["task=video_caption", "data.frames=0"], "data.frames", "=0"),
    (["optim.lr=0"], "optim.lr", "=0"),
    (["optim.lr=-1e-3"], "optim.lr", "-0.001"),
    (["optim.weight_decay=-1"], "optim.weight_decay", "-1"),
    (["optim=sgd", "optim.momentum=-0.9"], "optim.momentum", "-0.9"),
    (["scheduler=step", "scheduler.build.gamma=0"], "scheduler.build.gamma", "=0"),
    (["decode.beam_size=0"], "decode.beam_size", "=0"),
    (["decode.n_best=4"], "decode.n_best", "=4"),
    (["decode.max_words=3", "decode.min_words=5"], "decode.min_words", "=5"),
    # closed sets
    (["data.on_bad_image=ignore"], "data.on_bad_image", "'ignore'"),
    (["data.sampling=all"], "data.sampling", "'all'"),
    (["data.pin_memory=maybe"], "data.pin_memory", "'maybe'"),
    (["train.amp=fast"], "train.amp", "'fast'"),
    (["train.amp=true"], "train.amp", "true"),
    (["train.device=gpu"], "train.device", "'gpu'"),
    (["train.device=cuda:x"], "train.device", "'cuda:x'"),
    (["train.device=cuda:99"], "train.device", "'cuda:99'"),
    (["scheduler=step", "scheduler.interval=batch"], "scheduler.interval", "'batch'"),
    (["decode.length_penalty=norm"], "decode.length_penalty", "'norm'"),
    (["train.select_metric=METEOR"], "train.select_metric", "'METEOR'"),
    (["task=activity", "train.select_metric=CIDEr"], "train.select_metric", "'CIDEr'"),
    (["task.name=captions"], "task.name", "'captions'"),
    # files that must exist, values that must be given
    (["train.init_from={tmp}/nowhere.pt"], "train.init_from", "nowhere.pt"),
    (["train.resume={tmp}"], "train.resume", "{tmp}"),
    (["data.features=''"], "data.features", "''"),
    (["data=flickr"], "data.captions_file", "Missing mandatory value"),
    (["experiment=lrcn_description"], "activity", "Missing mandatory value"),
    # model parts and data sources: their registries check argument types
    (["model.decoder.hidden_size=abc"], "model.decoder.hidden_size", "'abc'"),
    (["model.decoder.dropout=true"], "model.decoder.dropout", "True"),
    (["model.encoder.width=8.5"], "model.encoder.width", "8.5"),
    (["data.source.num_train=abc"], "data.source.num_train", "'abc'"),
    (["data=karpathy", "data.dataset_json=d.json", "data.image_root=img", "data.restval_as_train=maybe"],
     "data.restval_as_train", "'maybe'"),
]

EVALUATE_CASES = [
    (["split=tset"], "split", "'tset'"),
    (["batch_size=0"], "batch_size", "=0"),
    (["max_images=0"], "max_images", "=0"),
    (["java=/no/such/java"], "java", "/no/such/java"),
    (["spice=maybe"], "spice", "'maybe'"),
    (["allow_partial=1"], "allow_partial", "=1"),
    (["device=tpu"], "device", "'tpu'"),
    (["decode.beam_size=abc"], "decode.beam_size", "'abc'"),
    (["checkpoint={tmp}/nowhere.pt"], "checkpoint", "nowhere.pt"),
    (["data=synthetic", "data.source.root={tmp}/cache", "data.verify_images=fulll"], "data.verify_images", "'fulll'"),
    (["data=synthetic", "data.source.root={tmp}/cache", "data.source.num_test=abc"], "data.source.num_test", "'abc'"),
]

CAPTION_CASES = [
    (["batch_size=0"], "batch_size", "=0"),
    (["images=[]"], "images", "[]"),
    (["images=[1,2]"], "images", "[1, 2]"),
    (["output=5"], "output", "=5"),
    (["decode.n_best=5"], "decode.n_best", "=5"),
    (["decode.forbid_unk=1"], "decode.forbid_unk", "=1"),
    (["decode.block_ngram_repeat=-1"], "decode.block_ngram_repeat", "-1"),
    (["decode.beam_size=4", "decode.diversity_groups=3"], "decode.diversity_groups", "=3"),
    (["decode.diversity_strength=-0.5"], "decode.diversity_strength", "-0.5"),
    (["decode.top_p=0"], "decode.top_p", "=0"),
    (["decode.top_p=1.5"], "decode.top_p", "1.5"),
    (["decode.top_p=0.9", "decode.beam_size=4", "decode.diversity_groups=2"], "decode.diversity_groups", "=2"),
    (["decode.temperature=0"], "decode.temperature", "=0"),
    (["device=gpu"], "device", "'gpu'"),
    (["checkpoint={tmp}/nowhere.pt"], "checkpoint", "nowhere.pt"),
    (["checkpoint=[{tmp}/nowhere.pt]"], "checkpoint", "nowhere.pt"),
    (["checkpoint=[]"], "checkpoint", "[]"),
    (["images='???'"], "images", "Missing mandatory value"),
]

EXTRACT_CASES = [
    (["splits=[train,tset]"], "splits", "'tset'"),
    (["splits=[]"], "splits", "[]"),
    (["dtype=float64"], "dtype", "'float64'"),
    (["store_grid=1"], "store_grid", "=1"),
    (["amp=fp8"], "amp", "'fp8'"),
    (["batch_size=-1"], "batch_size", "-1"),
    (["model.encoder.pretrained=maybe"], "model.encoder.pretrained", "'maybe'"),
    (["data.on_bad_image=ignore"], "data.on_bad_image", "'ignore'"),
    (["output='???'"], "output", "Missing mandatory value"),
]

DEMO_CASES = [
    (["port=0"], "port", "=0"),
    (["port=abc"], "port", "'abc'"),
    (["max_upload_mb=0"], "max_upload_mb", "=0"),
    (["max_image_pixels=-5"], "max_image_pixels", "-5"),
    (["device=tpu"], "device", "'tpu'"),
    (["checkpoint={tmp}/nowhere.pt"], "checkpoint", "nowhere.pt"),
]

EXPORT_CASES = [
    (["opset=9"], "opset", "=9"),
    (["overwrite=1"], "overwrite", "=1"),
    (["checkpoint={tmp}/nowhere.pt"], "checkpoint", "nowhere.pt"),
    (["output='???'"], "output", "Missing mandatory value"),
]


def compose_primary(name: str, overrides: list[str]):
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        return compose(name, overrides=overrides)


def command(kind: str, overrides: list[str], tmp) -> tuple:
    """(entry point, composed config) with every path the command could write or read inside `tmp`."""
    if kind == "train":
        small = [] if any(o.startswith("data=") for o in overrides) else [  # a small synthetic set, made nowhere else
            f"data.source.root={tmp / 'cache'}", "data.source.num_train=16", "data.source.num_val=8",
            "data.source.num_test=8"]
        return train, compose_train(small + overrides, tmp / "run")
    if kind == "evaluate":
        return evaluate, compose_primary("evaluate", [f"checkpoint={tmp / 'model.pt'}", f"output_dir={tmp / 'eval'}",
                                                      "java=none", "spice=false"] + overrides)
    if kind == "caption":
        return caption, compose_primary("caption", [f"checkpoint={tmp / 'model.pt'}", f"images={tmp / 'photo.png'}",
                                                    f"output={tmp / 'captions.json'}"] + overrides)
    if kind in ("demo", "export"):  # their scripts check the options first, then serve or export
        return (lambda cfg: check_options(cfg, kind)), compose_primary(kind, [
            f"checkpoint={tmp / 'model.pt'}", *([f"output={tmp / 'onnx'}"] if kind == "export" else [])] + overrides)
    return extract, compose_primary("extract_features", [f"output={tmp / 'store'}", "model/encoder=tiny_cnn",
                                                        f"data.source.root={tmp / 'cache'}"] + overrides)


CASES = [(kind, *case) for kind, cases in [("train", TRAIN_CASES), ("evaluate", EVALUATE_CASES),
                                           ("caption", CAPTION_CASES), ("extract", EXTRACT_CASES),
                                           ("demo", DEMO_CASES), ("export", EXPORT_CASES)] for case in cases]


@pytest.mark.parametrize("kind, overrides, key, shown", CASES, ids=[f"{c[0]}:{' '.join(c[1])}" for c in CASES])
def test_bad_option_stops_the_command_before_any_work(tmp_path, kind, overrides, key, shown):
    (tmp_path / "model.pt").write_bytes(b"not a checkpoint")  # read it and the error names it, not the key
    (tmp_path / "photo.png").write_bytes(b"not an image either")
    overrides = [override.replace("{tmp}", str(tmp_path)) for override in overrides]
    work, cfg = command(kind, overrides, tmp_path)
    before = snapshot(tmp_path)
    outcome = run_command(lambda: work(cfg))
    assert_refused(outcome, key, before, snapshot(tmp_path))
    assert shown.replace("{tmp}", str(tmp_path)) in outcome.message
    assert snapshot(tmp_path) == before  # nothing new either: no run folder, no cache, no outputs
    assert any(what in outcome.message for what in ("expected", "registered:", "Missing mandatory value")), \
        outcome.message  # says what is allowed


def test_a_removed_key_stops_composition(synthetic_root):
    """`train.select_mode` is gone (the metric sets the direction); Hydra refuses it, naming the key."""
    with pytest.raises(ConfigCompositionException, match="select_mode"):
        compose_train(tiny_overrides(synthetic_root) + ["train.select_mode=maximize"])


@pytest.mark.slow
def test_a_removed_key_stops_the_script_before_the_run_folder(tmp_path):
    """The same from the command line: exit status 1, the key named, no run folder."""
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "train.py"), "train.select_mode=maximize",
                           f"hydra.run.dir={tmp_path / 'run'}"], check=False, capture_output=True, text=True,
                          cwd=tmp_path, timeout=300)
    assert done.returncode == 1
    assert "select_mode" in done.stderr and "not in struct" in done.stderr
    assert list(tmp_path.iterdir()) == []
