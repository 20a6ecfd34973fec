"""Durability under faults: ``make chaos`` kills workers, restarts PostgreSQL and drops
connections while a mixed workload runs, then checks the engine's invariants (docs/chaos.md)."""
