"""Errors that every layer raises: the core defines them, so vocab and data share one `DataError`."""


class DataError(ValueError):
    """Caption data that cannot be used: the message names the file, key or id."""


class ExportError(ValueError):
    """An ONNX export folder that cannot be used (a missing, damaged or mismatched file): the message names it."""
