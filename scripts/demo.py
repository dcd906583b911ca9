"""The demo page: `python scripts/demo.py [checkpoint=RUN/checkpoints/best.pt] [port=7860]`, then open
http://127.0.0.1:7860. Without arguments it serves the quick start's checkpoint (runs/quickstart)."""
from captioning.commands.demo import main

if __name__ == "__main__":
    main()
