"""Operator review of the runtime's results: the worklist app, the audit trail, LIS export and the retraining loop.

Everything here reads `RESULTS/results.db` with its own SQLite connection (the watcher keeps writing it) and
adds two append-only tables, `reviews` and `exports`; the web app (FastAPI + uvicorn) and HL7 (hl7apy) come
with the `review` extra, the rest needs the base install only.
"""
