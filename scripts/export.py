"""Export a checkpoint to ONNX: `python scripts/export.py checkpoint=RUN/checkpoints/best.pt output=DIR`.

Then caption without torch: `python -m captioning.export.runtime DIR photo.jpg` (onnxruntime and NumPy).
"""
from captioning.commands.export import main

if __name__ == "__main__":
    main()
