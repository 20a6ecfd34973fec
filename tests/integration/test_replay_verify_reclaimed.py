"""A verify replay's approved edit whose attempt is cut off (its lease lapses) comes to wait for
approval again, which the original's records do not decide: it waits for a person on the
approver's recorded view, and is never judged, nor failed, on the file the original edited."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from agent_engine.config import Settings
from agent_engine.domain.plan import PlanStep
from agent_engine.engine.approvals import decide_step
from agent_engine.engine.replay import replay_run
from agent_engine.engine.runs import CreateRunRequest, create_run, get_run
from agent_engine.engine.stepping import record_result, run_claimed
from agent_engine.executors.edit_file import sha256_of
from tests.engines import claim_locking, engine_context

BASE = "base\n"
EDITED = "base\nmarker\n"


async def test_a_verify_replays_reclaimed_edit_waits_for_a_person_instead_of_failing(
    settings: Settings, workspace_root: Path
) -> None:
    workspace = workspace_root / "w"
    workspace.mkdir()
    (workspace / "a.txt").write_text(BASE)
    edit = {"path": "a.txt", "operation": "replace", "old": BASE, "new": EDITED}
    async with engine_context(settings) as ctx:
        request = CreateRunRequest(
            goal="edit",
            workspace=str(workspace),
            steps=[PlanStep(step_type="edit_file", input_data=edit)],
        )
        run = (await create_run(ctx, request, actor="t", idempotency_key=None)).run
        assert await claim_locking(ctx, run.id) == []  # the edit waits for a person
        step_id = str((await get_run(ctx, str(run.id))).steps[0].id)
        await decide_step(ctx, str(run.id), step_id, decision="approved", actor="ann", comment=None)
        (claim,) = await claim_locking(ctx, run.id)
        result = await run_claimed(ctx, claim)
        assert result is not None
        await record_result(ctx, claim, result, actor="w")
        assert (workspace / "a.txt").read_text() == EDITED

        replay = (await replay_run(ctx, str(run.id), "verify", actor="t")).run
        assert await claim_locking(ctx, replay.id) == []  # parked, then approved as recorded
        # The replayed approval's attempt is claimed, and cut off: its lease has lapsed already.
        assert len(await claim_locking(ctx, replay.id, lease=timedelta(seconds=-5))) == 1
        assert await claim_locking(ctx, replay.id) == []
        step = (await get_run(ctx, str(replay.id))).steps[0]
    assert (step.status, step.error) == ("awaiting_approval", None)
    # What it shows is what the original's approver saw: the file before the edit.
    assert step.preview is not None and step.preview["before_sha256"] == sha256_of(BASE.encode())
    assert (workspace / "a.txt").read_text() == EDITED
