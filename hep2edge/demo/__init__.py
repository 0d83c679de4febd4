"""`hep2edge demo`: every stage on synthetic data, end to end, with a report page to look at.

Import `hep2edge.demo.run` for `run_demo`; it needs the `train` and `export` extras.
"""
