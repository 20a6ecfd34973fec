"""Which database errors while a step runs are the database out of reach (the step is claimed
again once its lease lapses) and which fail the step (they would come back every time)."""

from __future__ import annotations

from sqlalchemy.exc import DataError, IntegrityError, InterfaceError, OperationalError

from agent_engine.engine.stepping import database_out_of_reach


def test_a_refused_or_broken_connection_is_the_database_out_of_reach() -> None:
    assert database_out_of_reach(ConnectionRefusedError(111, "Connect call failed"))
    assert database_out_of_reach(OperationalError("SELECT 1", {}, Exception("shutting down")))
    assert database_out_of_reach(InterfaceError("SELECT 1", {}, Exception("connection closed")))
    invalidated = DataError("SELECT 1", {}, Exception("lost"), connection_invalidated=True)
    assert database_out_of_reach(invalidated)


def test_bad_data_a_constraint_or_a_plugins_own_error_fails_the_step() -> None:
    assert not database_out_of_reach(DataError("INSERT", {}, Exception("value too long")))
    assert not database_out_of_reach(IntegrityError("INSERT", {}, Exception("duplicate key")))
    assert not database_out_of_reach(FileNotFoundError("notes.txt"))
    assert not database_out_of_reach(ValueError("a plugin's bug"))
