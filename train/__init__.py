"""hep2edge.train"""
