"""The scale rehearsal end to end at a tiny size: data written, every row measured, the table and scale.json."""
import json
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir

from benchmarks import scale, scale_data
from tests.conftest import CONF, ROOT
from tests.hostile.probe import run_command

COLUMNS = ("scale", "images", "captions", "decoder", "path", "startup_s", "peak_rss_gb", "peak_anon_gb", "step_s",
           "batch_size", "val_greedy_s", "score_s", "reward_captions_per_s")


def test_split_sizes_and_caption_counts_follow_the_karpathy_split(tmp_path):
    assert scale_data.split_sizes(1.0) == {"train": 113_287, "val": 5_000, "test": 5_000}
    sizes = scale_data.split_sizes(0.001)
    scale_data.write_karpathy(tmp_path / "d.json", sizes, 700)
    images = json.loads((tmp_path / "d.json").read_text())["images"]
    assert [sum(i["split"] == s for i in images) for s in ("train", "val", "test")] == [113, 5, 5]
    captions = [s["raw"].split() for i in images for s in i["sentences"]]
    assert len(captions) == 700 and min(map(len, captions)) >= 8 and max(map(len, captions)) <= 20
    words = [w for c in captions for w in c]
    counts = sorted((words.count(w) for w in set(words)), reverse=True)
    assert counts[0] > 20 * counts[len(counts) // 2]  # Zipf-like: a few words take most of the text


def test_disk_is_checked_before_anything_is_written(tmp_path):
    with pytest.raises(scale_data.DataError, match=r"needs 1000000.0 GB of disk"):
        scale_data.check_disk(tmp_path / "scratch", 10**15)


@pytest.mark.slow
def test_a_tiny_rehearsal_measures_every_row(tmp_path):
    command = [sys.executable, "-m", "benchmarks.scale", "scale=0.005", f"scratch={tmp_path}", "width=32", "steps=2",
               "warmup=1", "hidden_size=16", "threads=1", "reward_captions=200"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**__import__("os").environ, "TQDM_DISABLE": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads((tmp_path / "scale.json").read_text())
    assert sorted((r["decoder"], r["path"]) for r in rows) == [("lstm", "in_memory"), ("lstm", "streamed"),
                                                              ("updown", "in_memory"), ("updown", "streamed")]
    for row in rows:
        assert all(row[c] is not None for c in COLUMNS)
        assert row["images"] == 616 and row["captions"] == 3084 and row["val_images"] == 25
        assert row["step_s"] > 0 and row["peak_anon_gb"] <= row["peak_rss_gb"]
        assert {"BLEU-4", "METEOR", "ROUGE-L", "CIDEr"} <= set(row["scoring"]["scores"])
    assert "| updown | streamed |" in done.stdout
    # The refusal through the script's own `main` in this process (a new interpreter costs seconds).
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose("scale", overrides=[f"scratch={tmp_path}", "decoders=[transformerx]"])
    again = run_command(lambda: scale.main(cfg))
    assert again.code == 1 and "decoders[0]" in again.message and "transformerx" in again.message
