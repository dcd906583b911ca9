"""Show and Tell image captioning. `Captioner` is imported on first use, so `import captioning` stays cheap."""
__all__ = ["Caption", "Captioner"]


def __getattr__(name: str):
    if name in __all__:
        from captioning.inference import captioner
        return getattr(captioner, name)
    raise AttributeError(f"module 'captioning' has no attribute {name!r}")
