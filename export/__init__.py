"""hep2edge.export: checkpoint -> fp32 ONNX -> fp16 / int8 in the graph -> verified -> TensorRT engines.

Entry points: `pipeline.run_export(ExportConfig) -> ExportReport` (`hep2edge export`) and
`tensorrt.engines.build_engine_for_onnx` (`hep2edge build-engine` on the target). Precisions are entries of
`precisions.PRECISIONS` (int8/ holds the INT8 steps); everything before the TensorRT builder call lives in
`tensorrt.plan` and `tensorrt.trtexec`.
"""
