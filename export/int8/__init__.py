"""INT8 Q/DQ in the graph: ModelOpt PTQ (quantize), the fp32 QuantizeLinear rewrite (qdq) and the ranking of
the nodes that stay in high precision (sensitivity); figures in STUDY.md."""
