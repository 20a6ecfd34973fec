"""The summarize step on the offline model, over the recorded outputs of the sample run (read
store.py, analyze, edit away `import os`, run pytest, summarize): the summary says what the run
did, does not recommend again what its edit did, and says plainly when a goal that asked for
changes got none."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest

from agent_engine.executors.base import ExecutorContext
from agent_engine.executors.llm_steps import SUMMARIZE, SummarizeInput, SummarizeOutput
from agent_engine.llm.base import (
    CompletionRequest,
    CompletionResponse,
    LLMCallRecord,
    LLMClient,
)
from agent_engine.llm.change_intent import asks_for_changes
from agent_engine.llm.offline import OfflineProvider

RECORDED = Path(__file__).resolve().parents[2] / "fixtures" / "sample_run" / "step_outputs.json"
UNMET = "The goal asked for changes, but this run made none"


class RecordingOfflineClient(LLMClient):
    """Answers with the offline model and keeps the requests it was sent."""

    def __init__(self) -> None:
        self.requests: list[CompletionRequest] = []

    async def complete(self, request: CompletionRequest) -> CompletionResponse:
        self.requests.append(request)
        return await OfflineProvider().complete(request, "offline-1")

    @property
    def calls(self) -> list[LLMCallRecord]:
        return []


@pytest.fixture
def recorded() -> dict[int, dict[str, Any]]:
    """Steps 1-4 of the sample run: read_file, analyze, edit_file, run_command."""
    return {int(n): output for n, output in json.loads(RECORDED.read_text()).items()}


async def summarize(
    prior: dict[int, dict[str, Any]], client: LLMClient | None = None, **fields: Any
) -> SummarizeOutput:
    context = ExecutorContext(
        run_id="run-1",
        step_number=len(prior) + 1,
        workspace_root=None,
        llm=client or RecordingOfflineClient(),
        logger=logging.getLogger("test_offline_summary"),
        prior_outputs=prior,
    )
    return await SUMMARIZE.execute(SummarizeInput(**fields), context)


def section(text: str, heading: str) -> str:
    """The lines under a ``## heading``, up to the next one."""
    return text.split(f"## {heading}\n\n", 1)[1].split("\n## ", 1)[0]


async def test_summary_of_the_sample_run_says_what_it_did_and_not_what_it_undid(
    recorded: dict[int, dict[str, Any]],
) -> None:
    assert any(
        f["message"] == "`os` is imported but never used"
        for f in recorded[2]["structured"]["findings"]
    )
    output = await summarize(recorded, goal="Tidy the store module and run the tests")
    text = output.text
    done = section(text, "What the run did")
    assert "- Edited `inventory/store.py`: removed 1 line (`import os`)." in done
    assert "exit code 0, 3 passed, 1 deselected." in done
    assert "- Read `inventory/store.py` (63 lines): An in-memory store" in done
    assert "This run's edits resolved 1 of them." in done
    assert "after_sha256" not in text and "before_sha256" not in text
    assert not re.search(r"\b[0-9a-f]{64}\b", text)
    assert section(text, "Resolved by this run").startswith(
        "- `inventory/store.py:6` `os` is imported but never used"
    )
    suggestions = section(text, "Top suggestions")
    assert "import os" not in suggestions and "`os`" not in suggestions
    # The findings still open, at their lines in the file as the edit left it (one line up).
    assert suggestions.split("\n")[0].startswith("1. `inventory/store.py:45` Resolve the TODO")
    assert text.count("Store.get") == 1  # each suggestion once
    assert output.unmet_goal is None
    assert UNMET not in text


async def test_summary_with_chosen_inputs_still_sees_the_edit(
    recorded: dict[int, dict[str, Any]],
) -> None:
    client = RecordingOfflineClient()
    inputs = [recorded[2]["text"], recorded[4]["stdout"]]  # as the end-to-end sample plan does
    output = await summarize(recorded, client, inputs=inputs)
    (request,) = client.requests
    prompt = request.messages[-1].content
    assert "### Edit: inventory/store.py" in prompt
    assert "-import os" in prompt and "after_sha256" not in prompt
    done = section(output.text, "What the run did")
    assert "- Edited `inventory/store.py`: removed 1 line (`import os`)." in done
    assert "- Test output given as text: 3 passed, 1 deselected." in done
    assert "`os` is imported" in section(output.text, "Resolved by this run")
    assert "import os" not in section(output.text, "Top suggestions")


async def test_a_proposal_before_its_edit_is_not_quoted_as_a_key_point(
    recorded: dict[int, dict[str, Any]],
) -> None:
    """A propose_edit output (edit_file's input, its preview diff, hashes) is a proposal: the
    summary describes the edit that applied it, and quotes none of the proposal's JSON."""
    edit = recorded[3]
    proposal = {
        "path": edit["path"],
        "operation": "replace",
        "base_sha256": edit["before_sha256"],
        "base_exists": True,
        "rationale": "Removes the unused import of `os`.",
        "edit": {
            "path": edit["path"],
            "operation": "replace",
            "old": "import os\n",
            "new": "",
            "content": None,
            "diff": None,
            "expected_sha256": edit["before_sha256"],
        },
        "preview_diff": edit["diff"],
        "attempts": 1,
        "model": "offline-1",
        "provider": "offline",
    }
    prior = {1: recorded[1], 2: proposal, 3: edit, 4: recorded[4]}
    output = await summarize(prior, goal="Tidy the store module and run the tests")
    assert "- Edited `inventory/store.py`: removed 1 line (`import os`)." in output.text
    assert '"expected_sha256"' not in output.text and '"preview_diff"' not in output.text
    assert '"attempts"' not in output.text


@pytest.mark.parametrize(
    ("goal", "prior_steps"),
    [
        ("Remove the unused import from store.py", (1, 2)),  # no edit step ran
        ("Fix store.py and run the tests", (1, 2, 4)),  # the edit was rejected: no output
    ],
)
async def test_a_goal_asking_for_changes_the_run_did_not_make_says_so_first(
    recorded: dict[int, dict[str, Any]], goal: str, prior_steps: tuple[int, ...]
) -> None:
    prior = {n: recorded[n] for n in prior_steps}
    output = await summarize(prior, goal=goal)
    assert output.unmet_goal is not None
    assert output.unmet_goal.startswith(UNMET + ": no edit_file step applied a change")
    assert output.unmet_goal.endswith(f"The goal: {goal}")
    lines = output.text.split("\n")
    assert lines[lines.index("# Summary") + 4] == f"**{output.unmet_goal}**"
    # What the analysis proposed is still there, marked as not applied.
    assert "Delete line 6 (`import os`)" in section(output.text, "Top suggestions (not applied)")


async def test_an_edit_that_changed_nothing_does_not_meet_the_goal(
    recorded: dict[int, dict[str, Any]],
) -> None:
    unchanged = {**recorded[3], "diff": "", "after_sha256": recorded[3]["before_sha256"]}
    output = await summarize({1: recorded[1], 2: recorded[2], 3: unchanged}, goal="Fix store.py")
    assert output.unmet_goal is not None


async def test_goals_that_ask_for_no_change_or_are_not_known_get_no_note(
    recorded: dict[int, dict[str, Any]],
) -> None:
    prior = {1: recorded[1], 2: recorded[2]}
    assert (await summarize(prior, goal="Analyze the store module")).unmet_goal is None
    assert (await summarize(prior)).unmet_goal is None
    output = await summarize(recorded, goal="Remove the unused import")
    assert output.unmet_goal is None


@pytest.mark.parametrize(
    ("goal", "asks"),
    [
        ("Fix the parser", True),
        ("Find and remove dead code", True),
        ("Tidy the store module and run the tests", True),
        ("Could you update the docs?", True),
        ("Analyze the code, then add tests for pricing", True),
        ("Analyze the codebase and suggest improvements", False),
        ("Summarize the changes of the last release", False),
        ("Explain how errors are fixed", False),
        ("Run the tests", False),
    ],
)
def test_a_change_verb_must_start_a_clause(goal: str, asks: bool) -> None:
    assert asks_for_changes(goal) is asks
