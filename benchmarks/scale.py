"""The scale rehearsal: `python -m benchmarks.scale scale=F scratch=DIR` (F = 1.0: COCO Karpathy size).

Writes a COCO-size split file and grid store under DIR/scale-F (kept for the next call; the free disk is checked
first), then measures each decoder on each path (streamed from the store, the table in memory) in a fresh process:
start-up, peak RSS and peak anonymous memory, seconds per training step, greedy validation; and once per scale the
four COCO scorers over the val split and the SCST reward with the training captions' document frequencies.
Prints one table and writes DIR/scale.json (one row per scale, decoder and path; rows of earlier scales are kept).
"""
from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import date
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig

from benchmarks import scale_data, scale_measure
from benchmarks.devices import device_name
from captioning.cli import reports_errors
from captioning.config import check_options
from captioning.data.regions import pack_region_features

COLUMNS = ("scale", "images", "captions", "decoder", "path", "startup_s", "peak_rss_gb", "peak_anon_gb", "step_s",
           "batch_size", "val_greedy_s", "score_s", "reward_captions_per_s")


def in_process(function, **kwargs) -> dict:
    """`function(**kwargs)` in a fresh process (its own peak memory); its error is raised here."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(function, **kwargs).result()


def prepare(folder: Path, cfg: DictConfig) -> dict:
    """The split file and grid store of this scale, written unless an earlier call finished them."""
    sizes = scale_data.split_sizes(cfg.scale)
    images = sum(sizes.values())
    done = folder / "prepared.json"
    if done.is_file():
        return json.loads(done.read_text())
    if folder.exists() and any(folder.iterdir()):
        raise scale_data.DataError(f"{folder}: holds files of an unfinished preparation; delete the folder")
    regions = round(images * cfg.regions) if cfg.regions else 0
    needed = scale_data.store_bytes(images, cfg.cells, cfg.width) + regions * 55 * cfg.width * 6 + 200 * images
    print(f"scale {cfg.scale}: {images:,} images; the data takes {needed / 1e9:.1f} GB under {folder}")
    scale_data.check_disk(folder, needed)
    timings, start = {}, time.perf_counter()
    captions = round(scale_data.CAPTIONS * cfg.scale)
    scale_data.write_karpathy(folder / "dataset_coco.json", sizes, captions)
    timings["split_file_s"], start = round(time.perf_counter() - start, 1), time.perf_counter()
    scale_data.write_grid_store(folder / "store", [str(i) for i in range(images)], cfg.cells, cfg.width)
    timings["store_write_s"] = round(time.perf_counter() - start, 1)
    info = {"sizes": sizes, "captions": captions, "store_gb": round(scale_data.store_bytes(images, cfg.cells,
                                                                                          cfg.width) / 1e9, 2),
            **timings}
    done.write_text(json.dumps(info))
    return info


def prepare_regions(folder: Path, cfg: DictConfig, info: dict) -> dict:
    """A region-feature folder of `cfg.regions` of the images (K from 10 to 100), packed by the converter; timed."""
    if not cfg.regions or "pack_s" in info:
        return info
    ids = [str(i) for i in range(round(sum(info["sizes"].values()) * cfg.regions))]
    for leftover in (folder / "regions" / "att", folder / "regions" / "store"):
        if leftover.exists():
            shutil.rmtree(leftover)  # an interrupted preparation of ours
    start = time.perf_counter()
    written = scale_data.write_region_folder(folder / "regions" / "att", ids, cfg.width)
    write_s, start = time.perf_counter() - start, time.perf_counter()
    pack_region_features(folder / "regions" / "att", folder / "regions" / "store")
    pack_s = time.perf_counter() - start
    info = {**info, "region_images": len(ids), "region_folder_gb": round(written / 1e9, 2),
            "region_write_s": round(write_s, 1), "pack_s": round(pack_s, 1),
            "pack_images_per_s": round(len(ids) / pack_s, 1)}
    (folder / "prepared.json").write_text(json.dumps(info))
    return info


def run(cfg: DictConfig) -> list[dict]:
    scratch = Path(cfg.scratch).expanduser()
    folder = scratch / f"scale-{cfg.scale:g}"
    info = prepare_regions(folder, cfg, prepare(folder, cfg))
    torch.set_num_threads(cfg.threads)
    common = {"scale": cfg.scale, "machine": f"{device_name(torch.device('cpu'))}, {os.cpu_count()} cores",
              "date": date.today().isoformat(),
              **{key: value for key, value in info.items() if key != "sizes"}}
    scores = in_process(scale_measure.scoring_row, folder=str(folder), java=cfg.java,
                        reward_captions=cfg.reward_captions, threads=cfg.threads)
    rows = []
    for decoder in cfg.decoders:
        for path in cfg.paths:
            row = in_process(scale_measure.training_row, folder=str(folder), decoder=decoder, path=path,
                             batch_size=cfg.batch_size, steps=cfg.steps, warmup=cfg.warmup, hidden=cfg.hidden_size,
                             max_words=cfg.max_words, min_count=cfg.min_count, threads=cfg.threads,
                             device=cfg.device)
            rows.append({**common, **row, "score_s": scores["score_s"],
                         "reward_captions_per_s": scores["reward_captions_per_s"], "scoring": scores})
            print(format_row(rows[-1]), flush=True)
    output = Path(cfg.output).expanduser() if cfg.output else scratch / "scale.json"
    kept = [row for row in (json.loads(output.read_text()) if output.is_file() else []) if row["scale"] != cfg.scale]
    output.write_text(json.dumps(kept + rows, indent=1))
    print(table(kept + rows))
    print(f"rows written to {output}")
    return rows


def format_row(row: dict) -> str:
    return " | ".join(str(row.get(column, "refused" if column == "startup_s" and "refused" in row else "-"))
                      for column in COLUMNS)


def table(rows: list[dict]) -> str:
    lines = [" | ".join(COLUMNS), " | ".join("---" for _ in COLUMNS)]
    lines += [format_row(row) for row in sorted(rows, key=lambda r: (r["scale"], r["decoder"], r["path"]))]
    refused = [f"{row['scale']} {row['decoder']} {row['path']}: {row['refused']}" for row in rows if "refused" in row]
    return "\n".join(lines + refused)


@hydra.main(version_base="1.3", config_path="../conf", config_name="scale")
@reports_errors
def main(cfg: DictConfig) -> None:
    check_options(cfg, "scale")
    run(cfg)


if __name__ == "__main__":
    main()
