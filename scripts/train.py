"""Train: `python scripts/train.py [task=...] hydra.run.dir=DIR [overrides]` (tasks: conf/task/)."""
from captioning.commands.train import main

if __name__ == "__main__":
    main()
