"""The demo page (Gradio): upload an image or pick an example, set the beam, see the n-best captions with their
scores and, for attention decoders, where each word looked. Bad uploads get a message in the page."""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from captioning.data.images import MAX_IMAGE_PIXELS, ImageReadError, load_rgb
from captioning.inference.attention_maps import attention_array
from captioning.inference.captioner import Captioner

PENALTIES = ["none", "avg", "gnmt"]


def caption_upload(captioner: Captioner, path: str | None, beam_size: float, n_best: float, length_penalty: str,
                   max_pixels: int | None = MAX_IMAGE_PIXELS
                   ) -> tuple[str, str | None, str, list[list], np.ndarray | None]:
    """One request of the page: (status message, the image shown, best caption, n-best rows [rank, caption, score],
    the attention panels as an (H, W, 3) array or None). A file that is not a readable image, or exceeds
    `max_pixels`, and settings that are not numbers (an API call) give a message naming them, never an exception."""
    if not path:
        return "Upload an image or pick an example.", None, "", [], None
    try:
        image = load_rgb(path, max_pixels=max_pixels)
    except ImageReadError as error:
        return f"Could not read this upload: {str(error).replace(str(path), Path(path).name)}", None, "", [], None
    beam, shown = whole_number(beam_size), whole_number(n_best)
    for name, value, given in (("beam_size", beam, beam_size), ("n_best", shown, n_best)):
        if value is None:
            return f"{name}: expected a whole number, found {given!r:.40}", None, "", [], None
    if length_penalty not in PENALTIES:
        return (f"length_penalty: expected one of {' | '.join(PENALTIES)}, found {length_penalty!r:.40}", None, "", [],
                None)
    beam = max(beam, 1)
    attend = captioner.has_attention()
    caption = captioner.caption(image, beam_size=beam, n_best=min(max(shown, 1), beam),
                                length_penalty=length_penalty, return_attention=attend)
    ranked = [{"caption": caption.caption, "score": caption.score}, *caption.alternatives]
    rows = [[rank, item["caption"], round(item["score"], 4)] for rank, item in enumerate(ranked, 1)]
    attention = None
    if attend:
        attention = attention_array(image, caption, captioner.preprocess)
    return "", path, caption.caption, rows, attention


def whole_number(value) -> int | None:
    """A slider's value (a number, or what an API call sent) as an int; None when it is not a whole number."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if math.isfinite(number) and number == int(number) else None


def build_demo(captioner: Captioner, examples: list[str], title: str, max_pixels: int | None = MAX_IMAGE_PIXELS):
    """The page as a `gradio.Blocks` (launch it with `.launch(...)`)."""
    import gradio as gr

    with gr.Blocks(title="captioning demo") as demo:
        gr.Markdown(f"## Image captioning demo\n{title}")
        with gr.Row():
            with gr.Column():
                upload = gr.File(label="Image", type="filepath", elem_id="upload")
                beam = gr.Slider(1, 10, value=3, step=1, label="Beam size", elem_id="beam")
                n_best = gr.Slider(1, 5, value=3, step=1, label="Captions shown (n-best)", elem_id="n_best")
                penalty = gr.Dropdown(PENALTIES, value="none", label="Length penalty", elem_id="penalty")
                run = gr.Button("Caption", variant="primary", elem_id="run")
                if examples:
                    gr.Examples(examples, inputs=[upload], label="Examples")
            with gr.Column():
                status = gr.Markdown(elem_id="status")
                shown = gr.Image(label="Image", type="filepath", interactive=False, elem_id="shown", height=240)
                best = gr.Textbox(label="Caption", interactive=False, elem_id="best")
                table = gr.Dataframe(headers=["rank", "caption", "score"], label="n-best (score: log-prob / penalty)",
                                     interactive=False, elem_id="nbest")
                attention = gr.Image(label="Where each word looked", visible=captioner.has_attention(),
                                     elem_id="attention", type="numpy")
        run.click(lambda *args: caption_upload(captioner, *args, max_pixels=max_pixels),
                  [upload, beam, n_best, penalty], [status, shown, best, table, attention])
    return demo


def default_examples(checkpoint: str, count: int = 4) -> list[str]:
    """A few test-split images of the checkpoint's own data source (none when it cannot be read here)."""
    from captioning.checkpoint import load_checkpoint
    from captioning.data.records import DataError
    from captioning.inference.scoring import read_split

    try:
        _, records = read_split(load_checkpoint(checkpoint, mmap=True), checkpoint, "test", None, None)
    except (DataError, OSError, ValueError):
        return []
    return [str(record.image_path) for record in records[:count] if Path(record.image_path).is_file()]


def serve(checkpoint: str | list[str], *, host: str, port: int, device: str, examples: list[str] | None,
          max_upload_mb: int, max_image_pixels: int | None, allow_hub_model: str | None = None) -> None:
    """`scripts/demo.py`: build the page for a checkpoint (or an ensemble) and serve it until interrupted. A hub or URL
    encoder the checkpoint names is fetched only when it is `allow_hub_model`."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # offline: no usage reports
    captioner = Captioner.from_checkpoint(checkpoint, device=device, allow_hub_model=allow_hub_model)
    first = checkpoint if isinstance(checkpoint, str) else checkpoint[0]
    examples = default_examples(first) if examples is None else examples
    title = f"Checkpoint: `{checkpoint}` ({'attention maps shown' if captioner.has_attention() else 'pooled decoder'})"
    build_demo(captioner, examples, title, max_image_pixels).launch(
        server_name=host, server_port=port, max_file_size=f"{max_upload_mb}mb", show_error=False)
