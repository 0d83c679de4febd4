"""hep2edge.export"""
