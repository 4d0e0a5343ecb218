"""Protocol codecs: translate a wire format (Seldon v1 JSON, Open Inference Protocol v2) to and from the core."""
