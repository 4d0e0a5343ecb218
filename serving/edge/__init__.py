"""Edge serving: an ONNX bundle and a runtime that needs only numpy and onnxruntime, with fleet rollout."""
