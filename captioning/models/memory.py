"""`Features` moved to `captioning.data.batches` (the data layer hands them to the models); this name stays while
tests/test_configs.py still imports it from here."""
from captioning.data.batches import Features

__all__ = ["Features"]
