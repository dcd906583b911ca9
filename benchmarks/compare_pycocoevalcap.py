"""Check `scripts/evaluate.py results=... annotations=...` against pycocoevalcap run the official way.

    python benchmarks/compare_pycocoevalcap.py RESULTS.json CAPTIONS.json METRICS.json

Loads both files with pycocotools (`COCO`, `loadRes`), gathers references and results exactly as
`COCOEvalCap.evaluate()` does, runs the PTB tokenizer and the BLEU, METEOR, ROUGE-L and CIDEr
scorers (SPICE left out: it downloads CoreNLP), and prints them next to the figures in
METRICS.json (written by scripts/evaluate.py) with their difference.
"""
import contextlib
import io
import json
import sys
from pathlib import Path

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
from pycocotools.coco import COCO

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from captioning.evaluation.coco import find_java, java_on_path  # noqa: E402


def official_scores(results: str, annotations: str) -> dict[str, float]:
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(annotations)
        coco_results = coco.loadRes(results)
    image_ids = coco_results.getImgIds()  # the results' images, as the COCO caption example sets params
    gts = {i: coco.imgToAnns[i] for i in image_ids}
    res = {i: coco_results.imgToAnns[i] for i in image_ids}
    with java_on_path(find_java()):
        tokenizer = PTBTokenizer()
        gts, res = tokenizer.tokenize(gts), tokenizer.tokenize(res)
        meteor = Meteor()
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    scores = {f"BLEU-{n + 1}": bleu[n] for n in range(4)}
    scores["METEOR"], _ = meteor.compute_score(gts, res)
    scores["ROUGE-L"], _ = Rouge().compute_score(gts, res)
    scores["CIDEr"], _ = Cider().compute_score(gts, res)
    return {name: 100 * float(value) for name, value in scores.items()}


def main() -> None:
    results, annotations, metrics = sys.argv[1:4]
    ours = json.loads(Path(metrics).read_text())["metrics"]
    print(f"{'metric':<8} {'pycocoevalcap':>14} {'evaluate.py':>12} {'difference':>11}")
    for name, value in official_scores(results, annotations).items():
        print(f"{name:<8} {value:14.4f} {ours[name]:12.4f} {ours[name] - value:11.1e}")


if __name__ == "__main__":
    main()
