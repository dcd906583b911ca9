"""Caption images: `python scripts/caption.py checkpoint=RUN/checkpoints/best.pt images=DIR [decode.beam_size=5]`.

With a video description checkpoint (task=video_caption), `images` names clips: video files or frame folders.
"""
from captioning.commands.caption import main

if __name__ == "__main__":
    main()
