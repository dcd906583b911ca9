"""Caption images with an exported captioner (scripts/export.py) using onnxruntime, NumPy and PIL only: no torch.

    python -m captioning.export.runtime EXPORT_DIR photo.jpg [more.jpg ...] [--beam-size 3] [--n-best 1]

Preprocessing (resize the shorter side, centre crop, normalise) and beam search follow the PyTorch code they
mirror (data/transforms.py, decoding/search.py), so the captions are the same (tests/test_export.py).
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps

FORMAT = 1
RESAMPLE = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}


class OnnxCaptioner:
    def __init__(self, folder: str | Path, providers: tuple[str, ...] = ("CPUExecutionProvider",)):
        folder = Path(folder)
        try:
            spec = json.loads((folder / "captioner.json").read_text())
        except (OSError, ValueError) as error:
            raise ValueError(f"{folder / 'captioner.json'}: not a readable export description ({error})") from None
        if not isinstance(spec, dict) or spec.get("format") != FORMAT:
            raise ValueError(f"{folder / 'captioner.json'}: format {spec.get('format') if isinstance(spec, dict) else None!r}"
                             f", this runtime reads format {FORMAT}")
        self.spec, self.words = spec, spec["vocab"]
        self.encoder, self.init, self.step_graph = (ort.InferenceSession(str(folder / name), providers=list(providers))
                                                    for name in ("encoder.onnx", "init.onnx", "step.onnx"))

    def preprocess(self, image: str | Path | Image.Image) -> np.ndarray:
        """An image file or PIL image -> (3, S, S) float32, as the checkpoint's preprocessing."""
        p = self.spec["preprocess"]
        if not isinstance(image, Image.Image):
            with Image.open(image) as opened:
                image = ImageOps.exif_transpose(opened)
                image.load()
        if image.mode in ("RGBA", "LA", "P", "PA"):  # transparency onto white, as the training images
            rgba = image.convert("RGBA")
            image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
        image = image.convert("RGB")
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
        """Images (paths or PIL images) -> [{"caption", "score", "alternatives": [{"caption", "score"}]}]."""
        batch = np.stack([self.preprocess(image) for image in images])
        memory = self.encode(batch)
        results = []
        for index in range(len(images)):
            ranked = [{"caption": self.words_of(tokens), "score": score}
                      for tokens, score in self.beam_search([m[index:index + 1] for m in memory], **decode)]
            results.append({**ranked[0], "alternatives": ranked[1:]})
        return results


def feed(session: ort.InferenceSession, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The arrays a graph takes: the exporter drops inputs a graph never reads (soft attention's init: the pooled vector)."""
    wanted = {node.name for node in session.get_inputs()}
    return {name: array for name, array in arrays.items() if name in wanted}


def main() -> None:
    parser = argparse.ArgumentParser(description="Caption images with an ONNX export (no torch).")
    parser.add_argument("export_dir")
    parser.add_argument("images", nargs="+")
    parser.add_argument("--beam-size", type=int, default=3)
    parser.add_argument("--n-best", type=int, default=1)
    parser.add_argument("--length-penalty", choices=("none", "avg", "gnmt"), default="none")
    args = parser.parse_args()
    captioner = OnnxCaptioner(args.export_dir)
    for path, result in zip(args.images, captioner.caption(args.images, beam_size=args.beam_size, n_best=args.n_best,
                                                            length_penalty=args.length_penalty), strict=True):
        print(f"{path}\t{result['caption']}")


if __name__ == "__main__":
    main()
