"""Pack precomputed region features (bottom-up attention) into a feature store:
`python scripts/pack_region_features.py input=data/cocobu_att output=features/cocobu [pooled=data/cocobu_fc]`."""
from captioning.commands.pack_region_features import main

if __name__ == "__main__":
    main()
