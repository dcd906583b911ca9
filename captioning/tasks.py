"""`evaluate(cfg)` and `caption(cfg)`: what scripts/evaluate.py and scripts/caption.py run for a checkpoint.

The checkpoint records its task (image_caption, activity, video_caption); the code each task runs is
chosen here, never read from the file, so a checkpoint cannot name code to call.
"""
from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from captioning.checkpoint import CheckpointError, checkpoint_task


def evaluate(cfg: DictConfig) -> dict:
    """conf/evaluate.yaml, checkpoint mode: accuracy and a confusion matrix for activity checkpoints,
    the COCO caption metrics for image and video captioners. The report's `summary` is the printable table."""
    task = checkpoint_task(cfg.checkpoint)
    common = {"split": cfg.split, "output_dir": cfg.output_dir, "device": cfg.device, "batch_size": cfg.batch_size,
              "data": OmegaConf.to_container(cfg.data, resolve=True) if cfg.data else None}
    caption_options = {"decode": OmegaConf.to_container(cfg.decode, resolve=True),
                       "java": None if cfg.java == "none" else cfg.java, "spice": cfg.spice}
    if task == "activity":
        from captioning.video_evaluation import evaluate_activity

        return evaluate_activity(cfg.checkpoint, **common, max_clips=cfg.max_images)
    if task == "video_caption":
        from captioning.video_evaluation import evaluate_video_captions

        return evaluate_video_captions(cfg.checkpoint, **common, **caption_options, max_clips=cfg.max_images)
    if task != "image_caption":
        raise CheckpointError(f"{cfg.checkpoint}: unknown task {task!r}")
    from captioning.evaluation import evaluate_checkpoint
    from captioning.scoring import format_table

    report = evaluate_checkpoint(cfg.checkpoint, **common, **caption_options, max_images=cfg.max_images)
    return {**report, "summary": format_table(report)}


def caption(cfg: DictConfig) -> list[dict]:
    """conf/caption.yaml: `images=` names images for an image captioner, clips for a video description checkpoint."""
    task = checkpoint_task(cfg.checkpoint)
    if task == "video_caption":
        from captioning.video_inference import caption_clips

        return caption_clips(cfg)
    if task != "image_caption":
        raise CheckpointError(f"{cfg.checkpoint}: a {task!r} checkpoint writes no captions; "
                              "scripts/evaluate.py scores it on a split")
    from captioning.caption import caption_images

    return caption_images(cfg)
