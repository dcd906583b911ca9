"""Compare two recipes image by image: `python scripts/compare_evaluations.py base=[DIR,...] other=[DIR,...]`.

Prints each side's score (mean over its runs), the difference with a paired bootstrap interval over the images,
and the sign-flip permutation p-value of no difference (captioning/evaluation/compare.py).
"""
from captioning.commands.compare_evaluations import main

if __name__ == "__main__":
    main()
