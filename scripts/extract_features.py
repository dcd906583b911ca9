"""Cache pooled encoder features: `python scripts/extract_features.py data=... model/encoder=... output=PATH`."""
from captioning.commands.extract_features import main

if __name__ == "__main__":
    main()
