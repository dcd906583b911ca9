"""Checkpoints cannot name code: crafted files are refused by every loader before anything is built.

Each crafted checkpoint aims at a victim file (as `builtins.open(..., "w")` would empty it); the victim
must be untouched, and the one-line error must name the offending key.
"""
import subprocess
import sys

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict

from captioning.checkpoint import CheckpointError, load_checkpoint
from captioning.commands.evaluate import main as evaluate_main
from captioning.inference.captioner import Captioner
from captioning.tasks import caption, evaluate, train
from tests.conftest import CONF, ROOT, compose_train, tiny_overrides
from tests.hostile.probe import run_command

VICTIM_TEXT = "precious data\n"


def crafted_cases(victim):
    """name -> (edit of the payload, the key the error must name)."""
    open_victim = {"_target_": "builtins.open", "file": str(victim), "mode": "w"}
    return {
        "nested_target": (lambda p: p["model_spec"]["encoder"].update(width=open_victim), "model_spec.encoder.width._target_"),
        "hub_load": (lambda p: p["model_spec"].update(decoder={"_target_": "torch.hub.load", "repo_or_dir": "evil/repo",
                                                               "model": "x"}), "model_spec.decoder._target_"),
        "unknown_name": (lambda p: p["model_spec"]["encoder"].update(name="evil_encoder"), "model_spec.encoder.name"),
        "extra_argument": (lambda p: p["model_spec"]["decoder"].update(command="rm -rf /"), "model_spec.decoder.command"),
        "non_plain_value": (lambda p: p["model_spec"]["encoder"].update(width=torch.tensor(8)), "model_spec.encoder.width"),
        "data_source_target": (lambda p: p["data"]["source"].update(_target_="os.system"), "data.source._target_"),
        "unknown_task": (lambda p: p.update(task="evil_task"), "task"),
    }


@pytest.fixture(scope="module")
def trained(tmp_path_factory, synthetic_root):
    run_dir = tmp_path_factory.mktemp("security-run")
    train(compose_train(tiny_overrides(synthetic_root) + ["train.epochs=1", "train.show_examples=0"], run_dir))
    return run_dir / "checkpoints" / "last.pt"


@pytest.fixture
def victim(tmp_path):
    path = tmp_path / "victim.txt"
    path.write_text(VICTIM_TEXT)
    return path


def craft(trained, tmp_path, case: str, victim):
    edit, key = crafted_cases(victim)[case]
    payload = torch.load(trained, weights_only=True)
    edit(payload)
    path = tmp_path / f"{case}.pt"
    torch.save(payload, path)
    return path, key


def loaders(path, tmp_path, synthetic_root):
    """Every way a user hands a checkpoint to the project."""
    def run_caption():
        caption(OmegaConf.create({"checkpoint": str(path), "images": str(tmp_path), "batch_size": 2, "device": "cpu",
                                  "output": None, "decode": {"beam_size": 2, "n_best": 1, "max_words": None,
                                                             "min_words": 0, "length_penalty": "none", "alpha": 0.7,
                                                             "forbid_unk": False}}))

    def run_evaluate():
        evaluate(OmegaConf.create({"checkpoint": str(path), "split": "test", "data": None, "device": "cpu",
                                   "batch_size": 8, "max_images": 2, "java": "none", "spice": False,
                                   "output_dir": str(tmp_path / "eval"),
                                   "decode": {"beam_size": 1, "n_best": 1, "max_words": None, "min_words": 0,
                                              "length_penalty": "none", "alpha": 0.7, "forbid_unk": False}}))

    def run_train(key: str):
        cfg = compose_train(tiny_overrides(synthetic_root) + ["train.epochs=2", "train.show_examples=0"], tmp_path / key)
        with open_dict(cfg):
            cfg.train[key] = str(path)
        train(cfg)

    return {"caption": run_caption, "evaluate": run_evaluate, "resume": lambda: run_train("resume"),
            "init_from": lambda: run_train("init_from"), "Captioner": lambda: Captioner.from_checkpoint(path, "cpu")}


@pytest.mark.parametrize("loader", ["caption", "evaluate", "resume", "init_from", "Captioner"])
@pytest.mark.parametrize("case", list(crafted_cases("x")))
def test_crafted_checkpoint_is_refused_naming_the_key(trained, tmp_path, synthetic_root, victim, case, loader):
    if case == "unknown_task" and loader == "Captioner":
        pytest.skip("the Captioner reads any caption checkpoint; it chooses nothing by task name")
    path, key = craft(trained, tmp_path, case, victim)
    with pytest.raises(CheckpointError) as error:
        loaders(path, tmp_path, synthetic_root)[loader]()
    message = str(error.value)
    assert "\n" not in message and str(path) in message, message
    assert key.split(".")[-1] in message and key.split(".")[0] in message, message
    assert victim.read_text() == VICTIM_TEXT
    assert not (tmp_path / "eval").exists()  # refused before anything was written


@pytest.mark.slow
def test_scripts_refuse_with_one_line(trained, tmp_path, victim):
    """scripts/caption.py as a real process; scripts/evaluate.py's own `main` in this process, through the same
    error wrapper (a second interpreter costs seconds; tests/test_evaluate.py starts the real evaluate.py)."""
    path, key = craft(trained, tmp_path, "nested_target", victim)
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "caption.py"), f"checkpoint={path}", "images=.",
                           f"hydra.run.dir={tmp_path / 'out'}"], capture_output=True, text=True, cwd=tmp_path,
                          timeout=300)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith(f"error: {path}: {key}"), done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose("evaluate", overrides=[f"checkpoint={path}", "split=test", f"output_dir={tmp_path / 'out'}"])
    refused = run_command(lambda: evaluate_main(cfg))
    assert refused.code == 1 and refused.message.startswith(f"error: {path}: {key}"), refused.message
    assert victim.read_text() == VICTIM_TEXT


def test_the_untouched_checkpoint_loads(trained):
    """The crafted cases fail because of their edits, not because every checkpoint is refused."""
    payload = load_checkpoint(trained)
    assert payload["model_spec"]["encoder"]["name"] == "tiny_cnn" and payload["task"] == "image_caption"
    assert Captioner.from_checkpoint(trained, "cpu").inputs.kind == "image"
    assert (CONF / "train.yaml").is_file()


def test_old_format_checkpoints_are_refused_with_a_clear_message(tmp_path):
    old = tmp_path / "old.pt"
    torch.save({"model": {}, "model_config": {"encoder": {"_target_": "captioning.models.encoders.tiny_cnn"}},
                "vocab": [], "preprocess": {}}, old)
    with pytest.raises(CheckpointError, match="older version of this project .format 1.*retrain"):
        load_checkpoint(old)
