"""Summarise a multirun folder: `python scripts/summarize_sweep.py multirun/DATE/TIME [--output-dir DIR]`.

Prints every run sorted by its best validation `train.select_metric` (lower is better only for loss and perplexity),
and writes `summary.csv` and `summary.png` (metric against each swept parameter) into the folder. When `seed` was
swept, it also prints mean +- std over the runs that differ only in seed (validation, and test when scored).
"""
import argparse
from pathlib import Path

from tools.sweep_summary import summarize_sweep


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path, help="a multirun folder (holds one sub-folder per job)")
    parser.add_argument("--output-dir", type=Path, default=None, help="where summary.csv/png go (default: sweep_dir)")
    args = parser.parse_args(argv)
    summary = summarize_sweep(args.sweep_dir, args.output_dir)
    print(summary["table"])
    print(f"\n{len(summary['rows'])} runs, sorted by best validation {summary['metric']}; "
          f"wrote {summary['csv']} and {summary['plot']}")
    if summary["seed_table"]:
        print(f"\nover seeds (runs that differ only in seed; mean +- sample std):\n{summary['seed_table']}")


if __name__ == "__main__":
    main()
