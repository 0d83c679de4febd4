"""TensorRT: the build plan (importable without TensorRT), the builder, the trtexec equivalent and the probe
that tells a real TensorRT from the stubs."""
