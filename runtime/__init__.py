"""hep2edge.runtime: what runs next to the scanner (numpy, opencv, onnxruntime, TensorRT + pycuda; never torch).

backends/ (one interface: tensorrt, onnxruntime, torch), preprocess.py (numpy reference) and its CUDA twin
cuda_preprocess.py, sources/ (files, folder watch, camera), pipeline.py + stages.py (overlapping threads,
bounded queues), sinks/ (result JSON + mask, overlay, CSV), journal.py (results.db: exactly once),
service.py (what `hep2edge analyze / watch / camera` call).
"""
