"""Deterministic Agent Execution Engine."""
