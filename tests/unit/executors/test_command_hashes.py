"""A command's record hashes: what ran and what came back, recomputable from the output alone,
also after a provider key the command printed was masked."""

from __future__ import annotations

import hashlib

import rfc8785

from agent_engine.engine.secrets import redact_result
from agent_engine.engine.stepping import StepResult
from agent_engine.executors.command_hashes import RESULT_FIELDS, with_record_hashes
from agent_engine.executors.run_command import RunCommandOutput

SECRET = "sk-test-0123456789abcdef0123456789"


def _jcs(document: object) -> str:
    return hashlib.sha256(rfc8785.dumps(document)).hexdigest()


def _output(stdout: str) -> RunCommandOutput:
    return RunCommandOutput(
        argv=["python3", "-c", "print(1)"],
        cwd="src",
        exit_code=0,
        stdout=stdout,
        stderr="",
        stdout_truncated=False,
        stderr_truncated=False,
        stdout_bytes=len(stdout.encode()),
        stderr_bytes=0,
        duration_ms=3,
        killed=False,
        timed_out=False,
        env_keys=["PATH", "HOME", "LANG"],
    )


def test_the_hashes_cover_what_ran_and_what_came_back() -> None:
    hashed = with_record_hashes(_output("1\n"), "2026-12-01T13:00:00+00:00")
    assert hashed.started_at == "2026-12-01T13:00:00+00:00"
    ran = {
        "argv": ["python3", "-c", "print(1)"],
        "cwd": "src",
        "env_keys": ["HOME", "LANG", "PATH"],
        "stdin": None,
    }
    assert hashed.command_hash == _jcs(ran)
    dumped = hashed.model_dump(mode="json")
    assert hashed.result_hash == _jcs({name: dumped[name] for name in RESULT_FIELDS})
    other = with_record_hashes(_output("2\n"), "2026-12-01T13:00:00+00:00")
    assert (other.command_hash, other.result_hash) != (hashed.command_hash, hashed.result_hash)
    assert other.command_hash == hashed.command_hash  # same command, another result


def test_the_result_hash_covers_the_streams_as_recorded_after_masking() -> None:
    hashed = with_record_hashes(_output(f"key={SECRET}\n"), "2026-12-01T13:00:00+00:00")
    result = StepResult(hashed.model_dump(mode="json"), None, [], 1.0)
    masked = redact_result(result, [SECRET])
    assert masked.output is not None
    assert SECRET not in masked.output["stdout"]
    assert masked.output["result_hash"] != hashed.result_hash
    assert masked.output["result_hash"] == _jcs({n: masked.output[n] for n in RESULT_FIELDS})
    assert masked.output["command_hash"] == hashed.command_hash
