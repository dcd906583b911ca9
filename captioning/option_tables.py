"""The option tables: every key of conf/train.yaml (every task and data group), conf/evaluate.yaml,
conf/caption.yaml, conf/extract_features.yaml, conf/pack_region_features.yaml, conf/export.yaml, conf/demo.yaml and
the benchmarks' configs with its type or closed set of values. `captioning.options.check_options` checks a composed
config against `SCHEMAS[command]`.
"""
from __future__ import annotations

import re
import shutil

from captioning.evaluation.compare import MEAN_METRICS
from captioning.option_types import (Option, _is_number, any_of, existing_file, integer, list_of, number, one_of, path,
                                     text)

BOOL = Option("true or false", lambda v: isinstance(v, bool))
DEVICE = Option("auto | cpu | cuda | cuda:N",
                lambda v: isinstance(v, str) and bool(re.fullmatch(r"auto|cpu|cuda(:\d+)?", v)))
AMP = one_of("auto", "bf16", "fp16", "off")
JAVA = Option("auto | none | a java executable (a path, or a name on PATH)",
              lambda v: isinstance(v, str) and (v in ("auto", "none") or shutil.which(v) is not None))
SCST_BASELINES = ("greedy", "mean")  # train.scst.baseline and the benchmark's; captioning/training/scst.py uses it
SPLITS = ("train", "val", "test", "restval")  # restval: Karpathy's, with data.restval_as_train=false

DATA = {  # conf/common/data_options.yaml and the data groups (conf/data/*.yaml); data.source: its registry
    "data.name": text(),
    "data.on_bad_image": one_of("error", "skip"),
    "data.on_bad_caption": one_of("error", "skip"),
    "data.verify_images": one_of("none", "header", "full"),
    "data.allow_outside_root": BOOL,
    "data.max_image_pixels": integer(0, null=True),                       # 0 or null: no limit
    "data.jpeg_draft": BOOL,
    "data.sampling": one_of("random_caption", "pairs"),
    "data.augment.hflip": BOOL,
    "data.augment.random_resized_crop": BOOL,
    "data.augment.color_jitter": number(low=0),
    "data.features": path(null=True),
    "data.extract_features": BOOL,
    "data.features_in_memory": one_of("auto", True, False),
    "data.num_workers": integer(0),
    "data.pin_memory": one_of("auto", True, False),
    "data.frames": integer(1),                                            # clip data
    "data.keep_in_memory": BOOL,                                          # clip data
    "data.captions_file": path(), "data.image_dir": path(), "data.split_file": path(null=True),     # flickr
    "data.dataset_json": path(), "data.image_root": path(), "data.restval_as_train": BOOL,          # karpathy
    **{f"data.{split}.{key}": path(null=True)                                                       # coco, clips
       for split in ("train", "val", "test") for key in ("annotations", "images", "clips", "labels")},
}

DECODE = {  # conf/decode/default.yaml
    "decode.beam_size": integer(1),
    "decode.n_best": integer(1),                                          # and <= decode.beam_size
    "decode.max_words": integer(1, null=True),
    "decode.min_words": integer(0),                                       # and <= decode.max_words
    "decode.length_penalty": one_of("none", "avg", "gnmt"),
    "decode.alpha": number(),
    "decode.forbid_unk": BOOL,
    "decode.block_ngram_repeat": integer(0), "decode.diversity_strength": number(low=0),
    "decode.diversity_groups": integer(1),                                # and a divisor of decode.beam_size
    "decode.top_p": Option("null or a number in (0, 1]", lambda v: v is None or (_is_number(v) and 0 < v <= 1)),
    "decode.temperature": number(above=0), "decode.seed": integer(0, 2**32 - 1),
}

TRAIN = {  # conf/train.yaml, conf/train/, conf/optim/, conf/scheduler/ (model.*: the registries)
    "seed": integer(0, 2**32 - 1),
    "run_dir": path(null=True),
    "vocab.min_count": integer(1),
    "vocab.max_words": integer(1),
    "train.epochs": integer(1),
    "train.max_steps": integer(1, null=True),
    "train.batch_size": integer(1),
    "train.micro_batch": integer(1, null=True),
    "train.bucket_pool": integer(0),
    "train.device": DEVICE,
    "train.amp": AMP,
    "train.grad_clip": number(above=0, null=True),
    "train.encoder_lr": number(low=0, null=True),
    "train.select_metric": text(),                                        # and a metric of the task
    "train.init_from": existing_file(null=True),
    "train.resume": existing_file(null=True),
    "train.log_every": integer(1),
    "train.checkpoint_every": integer(1, null=True),
    "train.show_examples": integer(0), "train.attention_maps": integer(0),
    "train.evaluate_test": BOOL,
    "train.overwrite": BOOL,
    "train.objective": one_of("xe", "scst"),
    "train.scst.samples": integer(1),
    "train.scst.baseline": one_of(*SCST_BASELINES),
    "train.scst.temperature": number(above=0),
    "train.scst.bleu_weight": number(low=0),
    "train.scheduled_sampling.max_prob": Option("a number in [0, 1]", lambda v: _is_number(v) and 0 <= v <= 1),
    "train.scheduled_sampling.increase_prob": Option("a number in (0, 1]", lambda v: _is_number(v) and 0 < v <= 1),
    "train.scheduled_sampling.increase_every": integer(1), "train.scheduled_sampling.start": integer(0),
    "optim.lr": number(above=0),
    "optim.weight_decay": number(low=0),
    "optim.momentum": number(low=0),
    "optim.fused": BOOL,
    "scheduler.interval": one_of("epoch", "step"),
    "scheduler.build.step_size": integer(1),
    "scheduler.build.gamma": number(above=0),
    "scheduler.build.T_max": integer(1),
    "scheduler.build.eta_min": number(low=0),
}

EVALUATE = {  # conf/evaluate.yaml
    "checkpoint": any_of(existing_file(null=True), list_of(existing_file(), "existing files")),  # null: results mode
    "split": one_of(*SPLITS),
    "device": DEVICE,
    "batch_size": integer(1),
    "max_images": integer(1, null=True),
    "results": existing_file(null=True),
    "annotations": existing_file(null=True),
    "allow_partial": BOOL,
    "java": JAVA,
    "spice": one_of("auto", True, False),
    "meteor": one_of("required", "optional"),
    "output_dir": path(),
    "overwrite": BOOL,
}

CAPTION = {  # conf/caption.yaml
    "checkpoint": any_of(existing_file(), list_of(existing_file(), "existing files")),  # a list: an ensemble
    "images": any_of(path(), list_of(path(), "paths")),
    "batch_size": integer(1),
    "device": DEVICE,
    "output": path(null=True),
    "overwrite": BOOL,
    "attention_maps": path(null=True),
}

EXTRACT = {  # conf/extract_features.yaml (model.encoder: its registry)
    "output": path(),
    "splits": list_of(one_of(*SPLITS), " | ".join(SPLITS)),
    "batch_size": integer(1),
    "device": DEVICE,
    "amp": AMP, "dtype": one_of("float16", "float32"),
    "store_grid": BOOL, "decode_on_device": one_of("auto", True, False),
}
PACK_REGIONS = {  # conf/pack_region_features.yaml (data: optional, the source whose image ids are checked)
    "input": path(), "output": path(), "pooled": path(null=True), "boxes": path(null=True),
    "dtype": one_of("float16", "float32"), "overwrite": BOOL,
}
EXPORT = {"checkpoint": existing_file(), "output": path(), "opset": integer(14, 21), "overwrite": BOOL}  # conf/export.yaml

DEMO = {  # conf/demo.yaml
    "checkpoint": any_of(existing_file(), list_of(existing_file(), "existing files")),  # a list: an ensemble
    "host": text(), "port": integer(1, 65535), "device": DEVICE,
    "examples": any_of(path(null=True), list_of(path(), "paths")),
    "max_upload_mb": integer(1), "max_image_pixels": integer(1, null=True),
}

BENCHMARK = {  # conf/benchmark.yaml and conf/bench/*.yaml; encoder specs and decoder names: their registries
    "device": DEVICE, "amp": AMP, "output": path(null=True), "image_dir": path(null=True),
    "vocab_size": integer(5), "hidden_size": integer(1), "bucket_pool": integer(0),
    "images": integer(1), "warmup": integer(0), "cached_batch_sizes": list_of(integer(1), "integers >= 1"),
    "cached_steps": integer(1), "image_batch_size": integer(1), "image_steps": integer(1), "num_workers": integer(0),
    "grid_decoders": list_of(text(), "decoder names", empty=True),
    "scst.decoders": list_of(text(), "decoder names", empty=True),
    "scst.images": integer(1), "scst.batch_size": integer(1), "scst.steps": integer(1), "scst.samples": integer(1),
    "scst.baseline": one_of(*SCST_BASELINES),
    "scst.micro_batch": integer(1),
}
BENCHMARK_DECODING = {  # conf/benchmark_decoding.yaml (and its decode group)
    "checkpoint": existing_file(), "images": any_of(path(null=True), list_of(path(), "paths")),
    "num_images": integer(1), "device": DEVICE,
    "beam_sizes": list_of(integer(1), "integers >= 1"), "batch_sizes": list_of(integer(1), "integers >= 1"),
    "cuda_batch_sizes": list_of(integer(1), "integers >= 1"),
    "seconds": number(above=0), "repeats": integer(1), "loop": BOOL, "output": path(null=True),
}

SCALE = {  # conf/scale.yaml (python -m benchmarks.scale); decoder names: their registry
    "scale": number(above=0), "scratch": path(), "decoders": list_of(text(), "decoder names"),
    "paths": list_of(one_of("streamed", "in_memory"), "streamed | in_memory"), "batch_size": integer(1),
    "steps": integer(1), "warmup": integer(0), "hidden_size": integer(1), "width": integer(1), "cells": integer(1),
    "max_words": integer(1), "min_count": integer(1), "reward_captions": integer(1),
    "regions": Option("a number in [0, 1]", lambda v: _is_number(v) and 0 <= v <= 1), "java": JAVA,
    "threads": integer(1), "output": path(null=True), "device": DEVICE,
}
COMPARE = {  # conf/compare.yaml
    "base": any_of(path(), list_of(path(), "paths")), "other": any_of(path(), list_of(path(), "paths")),
    "metric": one_of(*MEAN_METRICS), "samples": integer(100),
    "confidence": Option("a number in (0, 1)", lambda v: _is_number(v) and 0 < v < 1),
    "seed": integer(0, 2**32 - 1), "output": path(null=True),
}

SCHEMAS = {"train": {**TRAIN, **DATA, **DECODE}, "evaluate": {**EVALUATE, **DATA, **DECODE},
           "caption": {**CAPTION, **DECODE}, "extract": {**EXTRACT, **DATA},
           "pack_regions": {**PACK_REGIONS, **DATA}, "export": EXPORT,
           "demo": DEMO, "benchmark": BENCHMARK, "scale": SCALE, "benchmark_decoding": {**BENCHMARK_DECODING, **DATA, **DECODE},
           "compare": COMPARE}
DEVICE_KEY = {"train": "train.device", "evaluate": "device", "caption": "device", "extract": "device", "demo": "device",
              "benchmark": "device", "benchmark_decoding": "device", "scale": "device"}
