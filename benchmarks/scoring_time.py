"""Time the COCO caption metrics on a val2017-sized synthetic set: 5,000 images, 25,000 references.

    python benchmarks/scoring_time.py [--images 5000] [--out DIR]

Writes `captions.json` (COCO annotation format) and `results.json` (COCO results format) under
--out, then times `score_results_file` on them: the same path as
`scripts/evaluate.py results=... annotations=...`. Captions come from a seeded word grammar, so
the run needs no data set and gives the same files every time.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from captioning.evaluation.report import score_results_file  # noqa: E402

SUBJECTS = ["man", "woman", "dog", "cat", "child", "boy", "girl", "group of people", "player", "horse", "bird",
            "surfer", "skier", "biker", "couple", "train", "bus", "truck", "plate of food", "giraffe", "elephant"]
ADJECTIVES = ["young", "old", "small", "large", "brown", "black", "white", "red", "happy", "tall", "little"]
VERBS = ["is standing", "is sitting", "is running", "is walking", "is riding a bike", "is holding a frisbee",
         "is eating", "is jumping", "is playing", "is looking", "is parked", "is flying a kite", "are posing"]
PLACES = ["on the beach", "in a field", "on a street", "next to a building", "in the snow", "on the grass",
          "in a kitchen", "near the water", "at the park", "on a table", "in front of a house", "down a hill"]


def sentence(rng: np.random.Generator) -> str:
    words = f"a {rng.choice(ADJECTIVES)} {rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(PLACES)}"
    if rng.random() < 0.4:
        words += f" with a {rng.choice(ADJECTIVES)} {rng.choice(SUBJECTS)}"
    return words.capitalize() + ("." if rng.random() < 0.7 else "")


def write_files(folder: Path, images: int, seed: int = 0) -> tuple[Path, Path]:
    rng = np.random.default_rng(seed)
    annotations, results = [], []
    for image_id in range(1, images + 1):
        references = [sentence(rng) for _ in range(5)]
        annotations += [{"id": len(annotations) + 1, "image_id": image_id, "caption": c} for c in references]
        results.append({"image_id": image_id, "caption": references[0] if rng.random() < 0.3 else sentence(rng)})
    dataset = {"info": {}, "licenses": [], "images": [{"id": i, "file_name": f"{i}.jpg"} for i in range(1, images + 1)],
               "annotations": annotations}
    (folder / "captions.json").write_text(json.dumps(dataset))
    (folder / "results.json").write_text(json.dumps(results))
    return folder / "captions.json", folder / "results.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--out", type=Path, default=None, help="folder for the generated files (default: a temp dir)")
    args = parser.parse_args()
    folder = args.out or Path(tempfile.mkdtemp(prefix="scoring-time-"))
    folder.mkdir(parents=True, exist_ok=True)
    annotations, results = write_files(folder, args.images)
    start = time.perf_counter()
    report = score_results_file(results, annotations, folder / "scores")
    seconds = time.perf_counter() - start
    print(f"scored {args.images} images ({5 * args.images} references) in {seconds:.1f} s")
    print({name: round(value, 2) for name, value in report["metrics"].items() if value is not None})


if __name__ == "__main__":
    main()
