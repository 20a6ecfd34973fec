"""Benchmarks of the engine's orchestration overhead, compared with DBOS Transact.

Run ``python -m bench.orchestration --help`` (or ``make bench``); see ``bench/README.md``.
"""
