"""Caption images with an exported captioner (scripts/export.py) using onnxruntime, NumPy and PIL only: no torch.

    python -m captioning.export.runtime EXPORT_DIR photo.jpg [more.jpg ...] [--beam-size 3] [--n-best 1]

Preprocessing (resize the shorter side, centre crop, normalise) and beam search follow the PyTorch code they
mirror (data/transforms.py, decoding/search.py), so the captions are the same (tests/test_export.py). Images are
read as caption.py reads them (data/images.py, torch-free: the pixel limit, EXIF, any mode); an unreadable one is
reported on stderr and skipped. A bad option or export folder ends it with one `error: ...` line naming the option
or file, exit status 1; so does having nothing to caption.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

from captioning.data.images import MAX_IMAGE_PIXELS, ImageReadError, check_aspect, load_rgb, to_rgb
from captioning.data.records import record_size_error
from captioning.errors import ExportError
from captioning.export.description import check_description

FORMAT = 1
RESAMPLE = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}
GRAPHS = ("encoder.onnx", "init.onnx", "step.onnx")


class OnnxCaptioner:
    def __init__(self, folder: str | Path, providers: tuple[str, ...] = ("CPUExecutionProvider",)):
        folder = Path(folder)
        if not folder.is_dir():
            raise ExportError(f"{folder}: not an export folder (captioning-export writes one)")
        missing = [name for name in ("captioner.json", *GRAPHS) if not (folder / name).is_file()]
        if missing:
            raise ExportError(f"{folder / missing[0]}: missing from the export folder; export the checkpoint again")
        if (too_big := record_size_error(folder / "captioner.json")) is not None:
            raise ExportError(too_big)
        try:
            spec = json.loads((folder / "captioner.json").read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError) as error:
            raise ExportError(f"{folder / 'captioner.json'}: not a readable export description ({error})") from None
        if not isinstance(spec, dict):
            raise ExportError(f"{folder / 'captioner.json'}: expected a JSON object, found {type(spec).__name__}")
        if spec.get("format") != FORMAT:
            raise ExportError(f"{folder / 'captioner.json'}: format {spec.get('format')!r}, "
                              f"this runtime reads format {FORMAT}")
        check_description(spec, folder / "captioner.json")  # ids, sizes and names are data from a file: checked
        self.spec, self.words = spec, spec["vocab"]
        self.encoder, self.init, self.step_graph = (open_graph(folder / name, providers) for name in GRAPHS)
        check_graphs(self, folder)

    def preprocess(self, image: str | Path | Image.Image) -> np.ndarray:
        """An image file or PIL image -> (3, S, S) float32, as the checkpoint's preprocessing."""
        p = self.spec["preprocess"]
        # As the Captioner reads images: upright, transparency onto white, 16-bit rescaled; files over the pixel
        # limit, missing or damaged raise ImageReadError naming the file.
        if isinstance(image, Image.Image):
            check_aspect(image.size, "an image given in memory")  # a file's shape is checked as it opens
            image = to_rgb(image)
        else:
            image = load_rgb(image, max_pixels=MAX_IMAGE_PIXELS)
        size = int(p["input_size"])
        short = int(math.floor(size / p.get("crop_pct", 1.0)))
        w, h = image.size
        new = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
        image = image.resize(new, RESAMPLE[p.get("interpolation", "bilinear")])
        left, top = int(round((new[0] - size) / 2.0)), int(round((new[1] - size) / 2.0))
        image = image.crop((left, top, left + size, top + size))
        array = np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / 255.0
        mean, std = (np.asarray(p[k], dtype=np.float32)[:, None, None] for k in ("mean", "std"))
        return (array - mean) / std

    def encode(self, images: np.ndarray) -> list[np.ndarray]:
        """(B, 3, S, S) -> the memory arrays: pooled (B, D) [, grid (B, N, C)]."""
        return self.encoder.run(None, {"images": images.astype(np.float32)})

    def initial_state(self, memory: list[np.ndarray]) -> list[np.ndarray]:
        return self.init.run(None, feed(self.init, dict(zip(self.spec["memory"], memory, strict=True))))

    def step(self, tokens: np.ndarray, state: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        """tokens (R,) -> log_probs (R, V) and the new state (rows on axis 0)."""
        out = self.step_graph.run(None, feed(self.step_graph, {"tokens": tokens.astype(np.int64),
                                                               **dict(zip(self.spec["state"], state, strict=True))}))
        return out[0], out[1:]

    def beam_search(self, memory: list[np.ndarray], *, beam_size: int = 3, n_best: int = 1,
                    max_words: int | None = None, min_words: int = 0, length_penalty: str = "none",
                    alpha: float = 0.7, forbid_unk: bool = False) -> list[tuple[list[int], float]]:
        """One image's memory (batch of 1) -> its n_best (tokens, score), best first; beam_size=1 is greedy."""
        end, K = self.spec["end"], beam_size
        max_tokens = (max_words or self.spec["max_words"]) + 1
        divisor = {"none": lambda n: 1.0, "avg": lambda n: float(n), "gnmt": lambda n: ((5.0 + n) / 6.0) ** alpha}
        penalty = divisor[length_penalty]
        state = self.initial_state(memory)
        scores, histories = np.zeros(1, dtype=np.float32), [[]]
        tokens = np.array([self.spec["start"]])
        finished: list[tuple[float, list[int]]] = []
        for t in range(max_tokens):
            log_probs, state = self.step(tokens, state)
            if forbid_unk:
                log_probs[:, self.spec["unk"]] = -np.inf
            if t < min_words:
                log_probs[:, end] = -np.inf
            V = log_probs.shape[1]
            candidates = (scores[:, None] + log_probs).reshape(-1)
            num = min(2 * K, candidates.size)
            top = np.argsort(-candidates, kind="stable")[:num]
            parents, words = top // V, top % V
            last = t == max_tokens - 1
            for j in range(min(K, num)):
                if last or words[j] == end:
                    finished.append((float(candidates[top[j]]) / penalty(t + 1), histories[parents[j]] + [int(words[j])]))
            finished = sorted(finished, key=lambda item: -item[0])[:n_best]
            if last:
                break
            keep = [j for j in range(num) if words[j] != end][:K]
            scores = candidates[top[keep]]
            histories = [histories[parents[j]] + [int(words[j])] for j in keep]
            state = [s[parents[keep]] for s in state]
            tokens = words[keep]
            reach = max(penalty(t + 2), penalty(max_tokens))
            if len(finished) == n_best and finished[-1][0] >= float(scores[0]) / reach:
                break
        return [(sequence, score) for score, sequence in finished]

    def words_of(self, tokens: list[int]) -> str:
        special = {self.spec[k] for k in ("start", "end", "pad")}
        out = []
        for token in tokens:
            if token == self.spec["end"]:
                break
            if token not in special:
                out.append(self.words[token])
        return " ".join(out)

    def caption(self, images: list, **decode) -> list[dict]:
        """Images (paths, PIL images or `preprocess`ed arrays) -> [{"caption", "score", "alternatives": [...]}]."""
        batch = np.stack([image if isinstance(image, np.ndarray) else self.preprocess(image) for image in images])
        memory = self.encode(batch)
        results = []
        for index in range(len(images)):
            ranked = [{"caption": self.words_of(tokens), "score": score}
                      for tokens, score in self.beam_search([m[index:index + 1] for m in memory], **decode)]
            results.append({**ranked[0], "alternatives": ranked[1:]})
        return results


def open_graph(path: Path, providers: tuple[str, ...]) -> ort.InferenceSession:
    try:
        return ort.InferenceSession(str(path), providers=list(providers))
    except Exception as error:  # onnxruntime's own types (InvalidProtobuf, Fail, ...) for a damaged or foreign file
        message = " ".join(str(error).split())[:300]
        raise ExportError(f"{path}: not a loadable ONNX graph ({type(error).__name__}: {message})") from None


def check_graphs(captioner: OnnxCaptioner, folder: Path) -> None:
    """Each graph takes and gives the arrays captioner.json names for its place (a step.onnx swapped for
    encoder.onnx, or graphs of another export, are refused by file name before any image is read)."""
    memory, state = list(captioner.spec.get("memory", [])), list(captioner.spec.get("state", []))
    expected = {"encoder.onnx": (captioner.encoder, {"images"}, memory),
                "init.onnx": (captioner.init, set(memory), state),
                "step.onnx": (captioner.step_graph, {"tokens", *state},
                              ["log_probs", *(f"next_{name}" for name in state)])}
    for name, (session, inputs, outputs) in expected.items():
        got_inputs = {node.name for node in session.get_inputs()}
        got_outputs = [node.name for node in session.get_outputs()]
        # init.onnx may drop a memory array it never reads (soft attention's pooled vector); step.onnx may not.
        inputs_ok = got_inputs <= inputs and bool(got_inputs) if name == "init.onnx" else got_inputs == inputs
        if not inputs_ok or got_outputs != outputs:
            raise ExportError(f"{folder / name}: not this export's {name.split('.')[0]} graph: it takes "
                              f"{sorted(got_inputs)} and gives {got_outputs}; captioner.json expects "
                              f"{sorted(inputs)} -> {outputs}")
    size = captioner.spec.get("preprocess", {}).get("input_size")
    side = captioner.encoder.get_inputs()[0].shape[2:]
    if all(isinstance(n, int) for n in side) and side != [size, size]:
        raise ExportError(f"{folder / 'encoder.onnx'}: takes {side[0]}x{side[1]} images; captioner.json's "
                          f"preprocess.input_size is {size}")


def feed(session: ort.InferenceSession, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The arrays a graph takes: the exporter drops inputs a graph never reads (soft attention's init: the pooled vector)."""
    wanted = {node.name for node in session.get_inputs()}
    return {name: array for name, array in arrays.items() if name in wanted}


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad option ends with one `error: ...` line and exit status 1, as every other command."""

    def error(self, message: str):
        raise SystemExit(f"error: {message} (see --help)")


def at_least(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {low}, found {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {low}, found {value}")
        return value
    return parse


def main(argv: list[str] | None = None) -> None:
    parser = OneLineParser(prog="python -m captioning.export.runtime",
                           description="Caption images with an ONNX export (no torch).")
    parser.add_argument("export_dir")
    parser.add_argument("images", nargs="+")
    parser.add_argument("--beam-size", type=at_least(1), default=3)
    parser.add_argument("--n-best", type=at_least(1), default=1)
    parser.add_argument("--length-penalty", choices=("none", "avg", "gnmt"), default="none")
    parser.add_argument("--batch-size", type=at_least(1), default=16, help="images encoded at once")
    args = parser.parse_args(argv)
    if args.n_best > args.beam_size:
        parser.error(f"argument --n-best: {args.n_best} is more than --beam-size {args.beam_size}")
    try:
        captioner = OnnxCaptioner(args.export_dir)
    except ExportError as error:
        raise SystemExit(f"error: {' '.join(str(error).split())}") from None
    decode = dict(beam_size=args.beam_size, n_best=args.n_best, length_penalty=args.length_penalty)
    captioned = skipped = 0
    for first in range(0, len(args.images), args.batch_size):
        paths, arrays = [], []
        for path in args.images[first:first + args.batch_size]:
            try:
                arrays.append(captioner.preprocess(path))
                paths.append(path)
            except ImageReadError as error:
                print(f"skipped {' '.join(str(error).split())}", file=sys.stderr, flush=True)
                skipped += 1
        if not paths:
            continue
        for path, result in zip(paths, captioner.caption(arrays, **decode), strict=True):
            print(f"{path}\t{result['caption']}", flush=True)
            captioned += 1
    if skipped:
        print(f"{captioned} images captioned, {skipped} skipped", file=sys.stderr)
    if not captioned:
        raise SystemExit(f"error: nothing could be captioned ({skipped} images skipped)")


if __name__ == "__main__":
    main()
