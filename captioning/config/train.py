"""conf/train.yaml and its groups: task, model (specs its registries check), optim, scheduler, train, decode, vocab.

`validate_decode` and `validate_train` hold the rules across keys; `captioning.tasks.check_task` adds the ones that
depend on the task (select_metric, model parts, objectives).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from captioning.config.choices import Amp, ScstBaseline, closed_set
from captioning.config.data import DataOptions
from captioning.config.fields import OptionError, option

SEED = dict(ge=0, le=2**32 - 1)


LengthPenalty = closed_set("LengthPenalty", "none", "avg", "gnmt")
Objective = closed_set("Objective", "xe", "scst")
Interval = closed_set("Interval", "epoch", "step")


# The most words a caption may have (vocab.max_words, decode.max_words, a checkpoint's max_words): a longer cap is a
# typo or a crafted file, and would decode (beam x words) steps per image for a caption nobody writes.
MAX_CAPTION_WORDS = 1000


@dataclass
class Decode:
    """conf/decode/default.yaml."""
    beam_size: int = option(ge=1)
    n_best: int = option(ge=1)                    # and <= beam_size (validate_decode)
    max_words: Optional[int] = option(ge=1, le=MAX_CAPTION_WORDS)
    min_words: int = option(ge=0, le=MAX_CAPTION_WORDS)  # and <= max_words (the checkpoint's when null)
    length_penalty: LengthPenalty = option()
    alpha: float = option()
    forbid_unk: bool = option()
    block_ngram_repeat: int = option(ge=0)
    diversity_groups: int = option(ge=1)          # and a divisor of beam_size
    diversity_strength: float = option(ge=0)
    top_p: Optional[float] = option(gt=0, le=1)
    temperature: float = option(gt=0)
    seed: int = option(**SEED)


@dataclass
class Task:
    name: str = option()                          # a registered task (captioning.tasks.check_task)


@dataclass
class Vocab:
    min_count: int = option(ge=1)
    max_words: int = option(ge=1, le=MAX_CAPTION_WORDS)


@dataclass
class Partial:
    """A callable Hydra builds with its arguments bound (`instantiate` gives a functools.partial)."""
    _target_: str = option()
    _partial_: bool = option()


@dataclass
class Optim(Partial):
    """conf/optim/*.yaml: a partial optimiser; keys an optimiser does not take are left out of its file."""
    lr: float = option(gt=0)                      # adam, sgd (with noam: the peak rate)
    weight_decay: float = option(ge=0)            # adam, sgd
    momentum: float = option(ge=0)                # sgd
    fused: bool = option()                        # adam: one kernel for the whole update (CUDA)


@dataclass
class SchedulerBuild(Partial):
    """conf/scheduler/*.yaml's build: a partial scheduler over the optimiser."""
    step_size: int = option(ge=1)                 # step: intervals between decays
    gamma: float = option(gt=0)                   # step: the factor of each decay
    T_max: int = option(ge=1)                     # cosine: intervals from the peak rate to eta_min
    eta_min: float = option(ge=0)                 # cosine: the last rate
    warmup: int = option(ge=1)                    # noam: steps of linear warmup (training/schedules.py)


@dataclass
class Scheduler:
    """conf/scheduler/*.yaml (build: null, no scheduler)."""
    build: Optional[SchedulerBuild] = option()
    interval: Interval = option()


@dataclass
class Scst:
    samples: int = option(ge=1)                   # >= 2 for the mean baseline (validate_scst)
    baseline: ScstBaseline = option()
    temperature: float = option(gt=0)
    bleu_weight: float = option(ge=0)


@dataclass
class ScheduledSampling:
    max_prob: float = option(ge=0, le=1)
    increase_prob: float = option(gt=0, le=1)
    increase_every: int = option(ge=1)
    start: int = option(ge=0)


@dataclass
class Train:
    """conf/train/default.yaml (task files override some)."""
    epochs: int = option(ge=1)
    max_steps: Optional[int] = option(ge=1)
    batch_size: int = option(ge=1)
    micro_batch: Optional[int] = option(ge=1)
    bucket_pool: int = option(ge=0)
    device: str = option(kind="device")
    amp: Amp = option()
    grad_clip: Optional[float] = option(gt=0)
    encoder_lr: Optional[float] = option(ge=0)
    select_metric: str = option()                 # and a metric of the task (captioning.tasks.check_task)
    init_from: Optional[str] = option(kind="file")
    resume: Optional[str] = option(kind="file")
    overwrite: bool = option()
    log_every: int = option(ge=1)
    checkpoint_every: Optional[int] = option(ge=1)
    attention_maps: int = option(ge=0)
    show_examples: int = option(ge=0)
    objective: Objective = option()
    label_smoothing: float = option(ge=0, lt=1)   # cross-entropy only: 0 with objective=scst (validate_train)
    scheduled_sampling: ScheduledSampling = option()
    scst: Scst = option()
    evaluate_test: bool = option()


@dataclass
class Model:
    """Model parts are specs: `captioning.models.caption_model.check_model_spec` checks each against its registry."""
    encoder: Any = option(spec=True)
    decoder: Any = option(spec=True)
    temporal: Any = option(spec=True)
    classifier: Any = option(spec=True)


@dataclass
class TrainConfig:
    """conf/train.yaml (scripts/train.py)."""
    seed: int = option(**SEED)
    run_dir: Optional[str] = option(kind="path")
    vocab: Vocab = option()
    data: DataOptions = option()                  # the schema of its source (config/data.py)
    model: Model = option()
    optim: Optim = option()
    scheduler: Scheduler = option()
    train: Train = option()
    decode: Decode = option()
    task: Task = option()


def validate_decode(decode: dict, prefix: str = "decode") -> None:
    """n_best within the beam, min_words within max_words, diversity groups that divide the beam (not sampling)."""
    top_p, groups = decode.get("top_p"), decode.get("diversity_groups", 1)  # keys a hand-made config may leave out
    beam, max_words = decode["beam_size"], decode.get("max_words")
    for broken, key, expected in (
            (top_p is not None and groups > 1, "diversity_groups", "1 with decode.top_p set (sampling)"),
            (beam % groups, "diversity_groups", f"a divisor of decode.beam_size={beam}"),
            (decode["n_best"] > beam and top_p is None, "n_best", f"an integer in 1..{beam} (decode.beam_size)"),
            (max_words is not None and decode.get("min_words", 0) > max_words, "min_words",
             f"an integer in 0..{max_words} (decode.max_words)")):
        if broken:
            raise OptionError(f"{prefix}.{key}={decode[key]}: expected {expected}")


def validate_scst(scst: dict, prefix: str) -> None:
    """The mean-of-others baseline needs 2 samples per image (train.scst, and the benchmark's scst)."""
    if scst["baseline"] == ScstBaseline.mean.value and scst["samples"] < 2:
        raise OptionError(f"{prefix}.baseline=mean: needs {prefix}.samples >= 2 (the mean of the other samples)")
