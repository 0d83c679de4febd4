"""hep2edge.runtime"""
