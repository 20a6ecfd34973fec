"""executors layer."""
