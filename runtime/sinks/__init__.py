"""hep2edge.runtime.sinks"""
