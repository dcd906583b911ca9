"""Five fold evaluations of one recipe as one score: `python scripts/folds.py folds=[DIR,...] output_dir=DIR`
(captioning/evaluation/folds.py)."""
from captioning.commands.folds import main

if __name__ == "__main__":
    main()
