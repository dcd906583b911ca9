"""The closed sets of values that options of several commands share (an Enum's values are what a YAML file says)."""
from __future__ import annotations

from enum import Enum


class Auto(Enum):
    """auto | true | false: a switch whose default depends on the machine or the data."""
    auto = "auto"
    true = True
    false = False


class Amp(Enum):
    auto = "auto"
    bf16 = "bf16"
    fp16 = "fp16"
    off = "off"


class Split(Enum):
    train = "train"
    val = "val"
    test = "test"
    restval = "restval"  # Karpathy's, with data.restval_as_train=false


class Dtype(Enum):
    float16 = "float16"
    float32 = "float32"


class ScstBaseline(Enum):
    """train.scst.baseline and the benchmark's scst.baseline; captioning/training/scst.py checks its own argument
    against the same values."""
    greedy = "greedy"
    mean = "mean"


SCST_BASELINES = tuple(member.value for member in ScstBaseline)


class MeanMetric(Enum):
    """compare's metric: the metrics whose corpus score is the mean of the per-image scores
    (captioning/evaluation/compare.py takes its list from here)."""
    cider = "CIDEr"
    rouge_l = "ROUGE-L"
    spice = "SPICE"


MEAN_METRICS = tuple(member.value for member in MeanMetric)
