"""hep2edge.runtime.backends"""
