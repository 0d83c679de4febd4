"""hep2edge.runtime.sources"""
