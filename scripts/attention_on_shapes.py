"""Attention on the built-in shapes: `python scripts/attention_on_shapes.py RUN/checkpoints/best.pt [--pictures 60]`.

Prints, for the colour words and the shape words of reference captions, how many times the uniform share of
attention they put on the shape they name (tools/attention_on_shapes.py says how it is measured).
"""
import argparse
from pathlib import Path

from captioning.cli import reports_errors
from captioning.inference.captioner import Captioner
from tools.attention_on_shapes import localisation


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path, help="an attention decoder's checkpoint trained on the built-in shapes")
    parser.add_argument("--pictures", type=int, default=60, help="fresh pictures of 2-3 shapes to measure on")
    parser.add_argument("--seed", type=int, default=12345, help="seed of the pictures")
    args = parser.parse_args(argv)
    captioner = Captioner.from_checkpoint(args.checkpoint, device="cpu")
    ratios = localisation(captioner, args.pictures, args.seed)
    print(f"attention on the named shape, x the uniform share ({args.pictures} pictures): colour words "
          f"{ratios['colour']:.2f}, shape words {ratios['shape']:.2f}, both {ratios['all']:.2f}")


if __name__ == "__main__":
    reports_errors(main)()
