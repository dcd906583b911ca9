"""The closed sets of values that options of several commands share (an Enum's values are what a YAML file says)."""
from __future__ import annotations

import sys
from enum import Enum


def closed_set(name: str, *values: str) -> type[Enum]:
    """An Enum whose members' names are their values: the words a YAML file may give an option. It belongs to the
    module that names it (so its members pickle, as Hydra's launchers and DDP's workers pickle configs)."""
    return Enum(name, [(value, value) for value in values], module=sys._getframe(1).f_globals["__name__"])


class Auto(Enum):
    """auto | true | false: a switch whose default depends on the machine or the data."""
    auto = "auto"
    true = True
    false = False


Amp = closed_set("Amp", "auto", "bf16", "fp16", "off")
Split = closed_set("Split", "train", "val", "test", "restval")  # restval: Karpathy's, with data.restval_as_train=false
Dtype = closed_set("Dtype", "float16", "float32")
# train.scst.baseline and the benchmark's scst.baseline (captioning/training/scst.py checks its own argument against
# the same values)
ScstBaseline = closed_set("ScstBaseline", "greedy", "mean")
SCST_BASELINES = tuple(member.value for member in ScstBaseline)


class MeanMetric(Enum):
    """compare's metric: the metrics whose corpus score is the mean of the per-image scores
    (captioning/evaluation/compare.py takes its list from here)."""
    cider = "CIDEr"
    rouge_l = "ROUGE-L"
    spice = "SPICE"


MEAN_METRICS = tuple(member.value for member in MeanMetric)
