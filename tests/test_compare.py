"""Comparing two recipes image by image (captioning/evaluation/compare.py, scripts/compare_evaluations.py): the
means are the corpus scores, a real gain is told from noise, and folders that scored other images or references
are refused by name."""
from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from captioning.commands.compare_evaluations import main as compare_main
from captioning.data.records import DataError
from captioning.evaluation.compare import compare_evaluations, paired_difference
from tests.conftest import CONF, ROOT
from tests.hostile.probe import run_command

REFERENCES = json.dumps(["a dog runs", "a dog is running"])


def write_evaluation(folder, scores: dict[str, float], references: str = REFERENCES, column: str = "CIDEr"):
    """An evaluation folder as scripts/evaluate.py writes it: per_image.csv and metrics.json (the corpus mean)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "per_image.csv", "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["image_id", "caption", "references", "BLEU-4", column])
        for key, score in scores.items():
            writer.writerow([key, "a dog", references, "10.0000", f"{score:.4f}"])
    (folder / "metrics.json").write_text(json.dumps({"metrics": {column: float(np.mean(list(scores.values())))}}))
    return str(folder)


def draws(seed: int, count: int = 100, shift: float = 0.0) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    return {f"img{i}": max(float(v), 0.0) + shift for i, v in enumerate(rng.gamma(1.5, 25.0, count))}


def test_means_are_the_corpus_scores_and_a_constant_gain_is_certain(tmp_path):
    base = draws(0)
    other = {key: value + 6.0 for key, value in base.items()}
    result = compare_evaluations([write_evaluation(tmp_path / "b", base)], [write_evaluation(tmp_path / "o", other)],
                                 metric="CIDEr", samples=2000, seed=0, confidence=0.95)
    corpus = json.loads((tmp_path / "b" / "metrics.json").read_text())["metrics"]["CIDEr"]
    assert result["base"] == pytest.approx(corpus, abs=1e-4) and result["other"] == pytest.approx(corpus + 6, abs=1e-3)
    assert result["difference"] == pytest.approx(6.0, abs=1e-3)
    assert result["interval"] == pytest.approx([6.0, 6.0], abs=1e-3)   # every image gained exactly 6
    assert result["p_value"] == pytest.approx(1 / 2001)                  # no sign flip reaches it
    assert result["images"] == 100


def test_noise_is_not_called_a_gain_and_a_real_one_is():
    rng = np.random.default_rng(1)
    base = rng.gamma(1.5, 25.0, 100)
    wobble = rng.normal(0.0, 20.0, 100)
    noise = base + wobble - wobble.mean()                                # per-image noise of 20, no gain on average
    gain = base + 6.0 + rng.normal(0.0, 20.0, 100) * 0.3                 # +6 per image, small noise
    null = paired_difference(base, noise, samples=4000, seed=0, confidence=0.95)
    real = paired_difference(base, gain, samples=4000, seed=0, confidence=0.95)
    assert null["interval"][0] < 0 < null["interval"][1] and null["p_value"] > 0.05
    assert real["interval"][0] > 3 and real["p_value"] < 0.001
    assert real["relative_interval"][0] == pytest.approx(real["interval"][0] / base.mean(), rel=0.3)
    again = paired_difference(base, noise, samples=4000, seed=0, confidence=0.95)
    assert again == null                                                 # the seed fixes the resamples
    wider = paired_difference(base, noise, samples=4000, seed=0, confidence=0.99)
    assert wider["interval"][0] < null["interval"][0] and wider["interval"][1] > null["interval"][1]


def test_seeds_are_averaged_per_image(tmp_path):
    base = [write_evaluation(tmp_path / f"b{s}", draws(s)) for s in range(3)]
    other = [write_evaluation(tmp_path / f"o{s}", draws(10 + s)) for s in range(2)]
    result = compare_evaluations(base, other, metric="CIDEr", samples=500, seed=0, confidence=0.95)
    base_means = [np.mean(list(draws(s).values())) for s in range(3)]
    assert [run["score"] for run in result["runs"]["base"]] == pytest.approx(base_means, abs=1e-3)
    assert result["base"] == pytest.approx(np.mean(base_means), abs=1e-3)
    assert result["other"] == pytest.approx(np.mean([np.mean(list(draws(10 + s).values())) for s in range(2)]),
                                            abs=1e-3)


def test_other_images_references_or_broken_files_are_refused_by_name(tmp_path):
    base = write_evaluation(tmp_path / "base", draws(0))
    fewer = write_evaluation(tmp_path / "fewer", dict(list(draws(0).items())[:99]))
    with pytest.raises(DataError, match=r"fewer/per_image.csv: not the images of .*missing 1 \(first 'img99'\)"):
        compare_evaluations([base], [fewer], metric="CIDEr", samples=100, seed=0, confidence=0.95)
    refs = write_evaluation(tmp_path / "refs", draws(0), references=json.dumps(["a cat"]))
    with pytest.raises(DataError, match="refs/per_image.csv: image id 'img0' has other references"):
        compare_evaluations([base], [refs], metric="CIDEr", samples=100, seed=0, confidence=0.95)
    rouge = write_evaluation(tmp_path / "rouge", draws(0), column="ROUGE-L")
    with pytest.raises(DataError, match="rouge/per_image.csv: expected columns image_id, references and CIDEr"):
        compare_evaluations([base], [rouge], metric="CIDEr", samples=100, seed=0, confidence=0.95)
    broken = tmp_path / "broken"
    write_evaluation(broken, draws(0))
    text = (broken / "per_image.csv").read_text().splitlines()
    text[3] = text[3].rsplit(",", 1)[0] + ",nan?"                       # line 4: image img2
    (broken / "per_image.csv").write_text("\n".join(text) + "\n")
    with pytest.raises(DataError, match=r"broken/per_image.csv: line 4: CIDEr 'nan\?' of image id 'img2' is not a"):
        compare_evaluations([base], [str(broken)], metric="CIDEr", samples=100, seed=0, confidence=0.95)
    with pytest.raises(DataError, match="nowhere/per_image.csv: not found"):
        compare_evaluations([base], [str(tmp_path / "nowhere")], metric="CIDEr", samples=100, seed=0, confidence=0.95)


@pytest.mark.slow
def test_script_prints_the_comparison_and_refuses_a_bad_option(tmp_path):
    base = write_evaluation(tmp_path / "b", draws(0))
    other = write_evaluation(tmp_path / "o", {k: v + 6 for k, v in draws(0).items()})
    script = str(ROOT / "scripts" / "compare_evaluations.py")
    done = subprocess.run([sys.executable, script, f"base={base}", f"other=[{other}]", "samples=500",
                           f"output={tmp_path / 'cmp.json'}"], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "other - base: +6.00" in done.stdout and "95% interval [+6.00, +6.00]" in done.stdout
    assert json.loads((tmp_path / "cmp.json").read_text())["difference"] == pytest.approx(6.0, abs=1e-3)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["b", "cmp.json", "o"]  # no log or .hydra folder
    # The refusal through the script's own `main` in this process (a new interpreter costs seconds).
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose("compare", overrides=[f"base={base}", f"other={other}", "metric=BLEU-4"])
    bad = run_command(lambda: compare_main(cfg))
    assert bad.code == 1 and bad.message == "error: metric='BLEU-4': expected one of CIDEr | ROUGE-L | SPICE"
