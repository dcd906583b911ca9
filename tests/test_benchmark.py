"""The benchmark scripts run end to end (tiny sizes), report every row with its device, and refuse a bad option by
its key before any work."""
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict

from benchmarks.training_throughput import run
from captioning.config import check_options
from tests.conftest import CONF, ROOT


@pytest.mark.slow
def test_benchmark_runs_and_reports_each_row(tmp_path, capsys):
    tiny_cnn = {"name": "tiny_cnn", "width": 4, "out_dim": 16}
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose("benchmark", overrides=[
            "images=8", "warmup=1", "cached_batch_sizes=[4]", "cached_steps=2", "image_batch_size=4", "image_steps=1",
            "num_workers=0", "vocab_size=50", "hidden_size=16", "image_dir=null", "bucket_pool=2",
            "scst.decoders=[lstm]", "scst.images=8", "scst.batch_size=4", "scst.steps=2", "scst.samples=2",
            "scst.micro_batch=2", f"output={tmp_path / 'bench.json'}"])
    with open_dict(cfg):
        cfg.encoder = OmegaConf.create(tiny_cnn)
        cfg.also_frozen = OmegaConf.create([{**tiny_cnn, "width": 8, "out_dim": 24}])
        cfg.extraction = OmegaConf.create([{"encoder": tiny_cnn, "source": "memory", "images": 8, "batch_size": 4},
                                           {"encoder": tiny_cnn, "source": "device", "images": 8, "batch_size": 4}])
    rows = run(cfg)
    scst = [row for row in rows if row.get("path") == "scst"]
    rows = [row for row in rows if row.get("path") != "scst"]
    # cross-entropy on 4 captions; SCST on 4 images x 2 samples, at once and in pieces of 2 images (4 sequences)
    assert [(r["objective"], r["sequences"], r["micro_batch"]) for r in scst] == [
        ("xe", 4, None), ("scst", 8, None), ("scst", 8, 2)]
    assert scst[2]["benchmark"] == "scst lstm, 4 images in pieces of 2"
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


BAD_BENCHMARK_OPTIONS = [  # (overrides, what the message starts with)
    (["scst.baseline=best"], "scst.baseline='best'"),
    (["scst.samples=1"], "scst.baseline=mean: needs scst.samples >= 2"),  # the mean of the other samples
    (["scst.micro_batch=0"], "scst.micro_batch=0: expected an integer >= 1"),
    (["scst.decoders=[lstm,updwn]"], "scst.decoders[1]: unknown decoder 'updwn'"),
    (["grid_decoders=[soft]"], "grid_decoders[0]: unknown decoder 'soft'"),
    (["cached_batch_sizes=[0]"], "cached_batch_sizes=[0]"),
    (["device=gpu"], "device='gpu'"),
    (["encoder.name=resnet"], "encoder.name: unknown encoder 'resnet'"),
    (["also_frozen=[{name:timm,model:resnet101,pretraind:false}]"], "also_frozen[0].pretraind: not an argument"),
    (["extraction=[{encoder:{name:efficientnet_lite0},source:disc,images:8,batch_size:4}]"],
     "extraction[0].source='disc'"),
    (["extraction=[{encoder:{name:efficientnet_lite0},images:8,batch_size:4}]"], "extraction[0]: expected a mapping"),
]


@pytest.mark.parametrize("overrides, message", BAD_BENCHMARK_OPTIONS)
def test_benchmark_refuses_a_bad_option_naming_it(overrides, message):
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose("benchmark", overrides=overrides)
    with pytest.raises(ValueError) as error:
        check_options(cfg, "benchmark")
    assert str(error.value).startswith(message), str(error.value)


def test_decoding_benchmark_refuses_a_bad_option_naming_it(tmp_path):
    checkpoint = tmp_path / "best.pt"
    checkpoint.write_bytes(b"not read: the options are checked first")
    for overrides, message in ((["beam_sizes=[0,3]"], "beam_sizes=[0, 3]"), (["seconds=0"], "seconds=0"),
                               (["decode.beam_size=0"], "decode.beam_size=0"),
                               ([f"checkpoint={tmp_path / 'missing.pt'}"], "checkpoint=")):
        with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
            cfg = compose("benchmark_decoding", overrides=[f"checkpoint={checkpoint}", *overrides])
        with pytest.raises(ValueError, match=message.replace("[", r"\[")):
            check_options(cfg, "benchmark_decoding")
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        check_options(compose("benchmark_decoding", overrides=[f"checkpoint={checkpoint}"]), "benchmark_decoding")


@pytest.mark.slow
def test_benchmark_script_stops_on_a_bad_option_before_any_work(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "benchmark.py"), "scst.baseline=greedyy",
                           f"output={tmp_path / 'bench.json'}", f"hydra.run.dir={tmp_path / 'run'}"],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 1 and done.stderr.strip().splitlines()[-1] == (
        "error: scst.baseline='greedyy': expected one of greedy | mean") and "Traceback" not in done.stderr
    assert not (tmp_path / "bench.json").exists()
