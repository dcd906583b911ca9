"""Score a checkpoint on a split, or a COCO results file.

    python scripts/evaluate.py checkpoint=CKPT [data=karpathy ...] split=test [decode.beam_size=3] [output_dir=DIR]
        image or video captioners: the COCO caption metrics; activity checkpoints: top-1 accuracy + confusion.png
    python scripts/evaluate.py results=RESULTS.json annotations=CAPTIONS.json [allow_partial=true] [output_dir=DIR]
"""
from captioning.commands.evaluate import main

if __name__ == "__main__":
    main()
