"""The benchmark script runs end to end (tiny sizes) and reports every row with its device."""
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict

from benchmarks.training_throughput import run
from tests.conftest import CONF


def test_benchmark_runs_and_reports_each_row(tmp_path, capsys):
    tiny_cnn = {"name": "tiny_cnn", "width": 4, "out_dim": 16}
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose("benchmark", overrides=[
            "images=8", "warmup=1", "cached_batch_sizes=[4]", "cached_steps=2", "image_batch_size=4", "image_steps=1",
            "num_workers=0", "vocab_size=50", "hidden_size=16", "image_dir=null", "bucket_pool=2",
            "scst.decoders=[lstm]", "scst.images=8", "scst.batch_size=4", "scst.steps=2", "scst.samples=2",
            f"output={tmp_path / 'bench.json'}"])
    with open_dict(cfg):
        cfg.encoder = OmegaConf.create(tiny_cnn)
        cfg.also_frozen = OmegaConf.create([{**tiny_cnn, "width": 8, "out_dim": 24}])
        cfg.extraction = OmegaConf.create([{"encoder": tiny_cnn, "source": "memory", "images": 8, "batch_size": 4},
                                           {"encoder": tiny_cnn, "source": "device", "images": 8, "batch_size": 4}])
    rows = run(cfg)
    scst = [row for row in rows if row.get("path") == "scst"]
    rows = [row for row in rows if row.get("path") != "scst"]
    # cross-entropy on 4 captions; SCST on 4 images x 2 samples, and on 2 images x 2 (as many sequences as XE)
    assert [(r["objective"], r["sequences"]) for r in scst] == [("xe", 4), ("scst", 8), ("scst", 4)]
    assert all(r["steps_per_s"] > 0 and r["peak_memory_mb"] > 0 for r in scst) and "rise_over_xe" in scst[1]
    assert [(r["benchmark"].split(",")[0], r.get("path")) for r in rows] == [
        ("train", "cached"), ("train soft_attention", "grid"), ("train updown", "grid"), ("train", "images"),
        ("train", "fine-tune"), ("train", "cached"), ("train", "images"), ("extract tiny_cnn (memory)", None),
        ("extract tiny_cnn (device)", None)]
    assert rows[1]["benchmark"] == "train soft_attention, cached 16x16 grids"  # the tiny CNN's 4 x 4 cells, 4 * width
    assert rows[0]["benchmark"] == "train, cached 16-d features" and rows[5]["benchmark"] == "train, cached 24-d features"
    assert all(r.get("captions_per_s", r.get("images_per_s", 0)) > 0 and r["device"] for r in rows)
    assert rows[0]["steps"] == 2 and rows[-2]["images"] == rows[-1]["images"] == 8
    assert capsys.readouterr().out.count("x the image-decoding path with the same frozen tiny_cnn") == 2
    assert (tmp_path / "bench.json").is_file()


def test_speed_options_bucketed_batches_pad_less():
    import torch

    from benchmarks.speed_options import BATCH, caption_lengths, token_batches

    generator = torch.Generator().manual_seed(0)
    lengths = caption_lengths(None, BATCH * 8, generator)
    padding = {}
    for pool in (0, 4):
        batches = token_batches(lengths, pool, 6, generator)
        assert [tokens.shape[0] for tokens in batches] == [BATCH] * 6
        assert all(((tokens != 0).sum(1) >= 10).all() for tokens in batches)  # 8-16 words + <start> + <end>
        padding[pool] = sum(tokens.numel() for tokens in batches) / sum(int((tokens != 0).sum()) for tokens in batches)
    assert padding[4] < 1.1 < padding[0]
