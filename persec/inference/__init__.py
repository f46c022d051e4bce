"""Inference with a saved recognizer: loading it onto a device (model), reading image files
(read), ONNX export (export) and running the export with onnxruntime (onnx_runtime)."""
