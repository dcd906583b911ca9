"""scripts/evaluate.py in both modes, data configs, and checkpoint selection on validation CIDEr."""
import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from captioning.checkpoint import load_checkpoint
from captioning.commands.evaluate import main as evaluate_main
from captioning.data.datasets import CaptionDataset, ImageLoader, collate
from captioning.data.loading import load_splits
from captioning.data.sources import read_source
from captioning.data.transforms import build_transform
from captioning.models.caption_model import build_caption_model
from captioning.tasks import TASKS, train
from captioning.training.validation import cider_of, greedy_captions
from captioning.vocab import Vocabulary
from tests.conftest import CONF, ROOT, compose_train, tiny_overrides


def run_evaluate(*overrides: str) -> str:
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "evaluate.py"), *overrides], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.slow  # a run of the real script
def test_checkpoint_mode_then_results_mode_agree(tiny_run, tmp_path):
    """Caption the test split (data config from the checkpoint), then score its results.json against the
    split's COCO caption file: both modes must give the same numbers."""
    out = tmp_path / "ckpt"
    printed = run_evaluate(f"checkpoint={tiny_run / 'checkpoints' / 'best.pt'}", "split=test", f"output_dir={out}",
                           "decode.beam_size=2", "java=none")
    report = json.loads((out / "metrics.json").read_text())
    assert report["data"]["split"] == "test" and report["data"]["images"] == 24 and report["data"]["full_split"]
    assert len(report["checkpoint"]["sha256"]) == 64 and report["decode"]["beam_size"] == 2
    assert report["decode"]["max_words"] == 20  # null in conf/decode: the checkpoint's training cap
    assert {"torch", "pycocoevalcap", "nltk"} <= set(report["versions"])
    for name in ("BLEU-1", "BLEU-4", "ROUGE-L", "CIDEr"):
        assert f"  {name:<8} {report['metrics'][name]:7.2f}" in printed
    assert "METEOR   skipped" in printed and "SPICE    skipped" in printed and "nltk corpus_bleu" in printed
    results = json.loads((out / "results.json").read_text())
    rows = list(csv.DictReader(open(out / "per_image.csv")))
    assert [r["image_id"] for r in results] == [int(row["image_id"]) for row in rows]  # synthetic ids stay ints
    assert {"caption", "references", "BLEU-4", "CIDEr"} <= set(rows[0])
    assert len(json.loads(rows[0]["references"])) == 5

    annotations = next(Path(report["data"]["source"]["root"]).glob("*-120-24-24-seed0/captions_test.json"))
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):  # results mode: the script's own `main`,
        cfg = compose("evaluate", overrides=[f"results={out / 'results.json'}", f"annotations={annotations}",
                                             f"output_dir={tmp_path / 'res'}", "java=none"])
    evaluate_main(cfg)  # in this process (a second interpreter costs seconds)
    rescored = json.loads((tmp_path / "res" / "metrics.json").read_text())
    assert rescored["metrics"] == pytest.approx(report["metrics"])
    assert rescored["coverage"]["scored"] == 24 and not rescored["coverage"]["partial"]


def test_data_override_and_string_image_ids(tiny_run, tmp_path):
    """`data=flickr ...` replaces the checkpoint's data config; Flickr's file-name ids stay strings."""
    source = read_source(load_checkpoint(tiny_run / "checkpoints" / "best.pt")["data"]["source"])
    images = tmp_path / "images"
    images.mkdir()
    lines, split = ["image,caption"], {}
    for n, record in enumerate(source["val"][:3]):
        name = f"{n}_{record.image_path.name}"
        shutil.copy(record.image_path, images / name)
        lines += [f"{name},{caption}" for caption in record.captions]
        split[name] = "test"
    (tmp_path / "captions.txt").write_text("\n".join(lines))
    (tmp_path / "split.json").write_text(json.dumps(split))
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose("evaluate", overrides=["data=flickr", f"data.captions_file={tmp_path / 'captions.txt'}",
                                             f"data.image_dir={images}", f"data.split_file={tmp_path / 'split.json'}"])
    report = TASKS.get("image_caption")().evaluate_checkpoint(
        tiny_run / "checkpoints" / "best.pt", split="test", data=OmegaConf.to_container(cfg.data, resolve=True),
        decode=OmegaConf.to_container(cfg.decode), output_dir=tmp_path / "out", java=None)
    assert report["data"]["name"] == "flickr" and report["data"]["images"] == 3
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [r["image_id"] for r in results] == sorted(split)


def test_validation_cider_selects_checkpoints_on_the_val_split(synthetic_root, tmp_path):
    with pytest.raises(ValueError, match="not a validation metric"):
        train(compose_train(tiny_overrides(synthetic_root) + ["train.select_metric=METEOR"], tmp_path / "bad"))
    result = train(compose_train(tiny_overrides(synthetic_root) + ["train.select_metric=CIDEr"], tmp_path / "run"))
    best = load_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt")
    last = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert result["select_metric"] == "CIDEr" and result["select"] == best["metrics"]["CIDEr"]
    assert best["metrics"]["CIDEr"] >= last["metrics"]["CIDEr"]

    # The logged CIDEr is that of greedy captions of the *validation* images.
    splits = load_splits(last["data"])
    vocab = Vocabulary(last["vocab"])
    model = build_caption_model(last["model_spec"], len(vocab), pretrained=False)
    model.load_state_dict(last["model"])
    records = splits["val"]
    dataset = CaptionDataset(records, vocab, 20, ImageLoader(records, build_transform(last["preprocess"])))
    loader = torch.utils.data.DataLoader(dataset, batch_size=16, sampler=[(i, 0) for i in range(len(records))],
                                         collate_fn=collate)
    captions = greedy_captions(model, loader, vocab, torch.device("cpu"), cached=False, max_tokens=21)
    assert cider_of(captions, [r.captions for r in records]) == pytest.approx(last["metrics"]["CIDEr"], abs=1e-6)
