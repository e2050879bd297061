"""Stage 6, shipping a model: export (merged, ONNX) and the HTTP service. Imports inference and below."""
