"""ONNX export (onnx_export.py, needs torch) and a captioner that runs the exported graphs with onnxruntime and
NumPy alone (runtime.py, never imports torch)."""
