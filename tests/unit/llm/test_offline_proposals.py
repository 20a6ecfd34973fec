"""The offline model's propose_edit answers: deterministic valid edits for the simple cases it
can be sure of, checked by the real step on real files; a clear refusal for the rest."""

from __future__ import annotations

import ast
import logging
import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent_engine.errors import InvalidEditError
from agent_engine.executors.base import ExecutorContext
from agent_engine.executors.edit_file import EDIT_FILE
from agent_engine.executors.propose_edit import PROPOSE_EDIT, ProposeEditOutput
from agent_engine.llm.base import CompletionRequest, CompletionResponse, LLMCallRecord, LLMClient
from agent_engine.llm.edit_prompts import (
    EDIT_SCHEMA,
    EditableFile,
    build_edit_retry_messages,
    build_propose_edit_messages,
    parse_propose_edit_prompt,
)
from agent_engine.llm.offline import OfflineProvider

SAMPLE = Path(__file__).resolve().parents[3] / "examples" / "sample_workspace"


class OfflineClient(LLMClient):
    """The offline provider behind the client interface, keeping its responses."""

    def __init__(self) -> None:
        self.provider = OfflineProvider()
        self.responses: list[CompletionResponse] = []

    async def complete(self, request: CompletionRequest) -> CompletionResponse:
        response = await self.provider.complete(request, "offline-1")
        self.responses.append(response)
        return response

    @property
    def calls(self) -> list[LLMCallRecord]:
        return []


@pytest.fixture
def sample(tmp_path: Path) -> Path:
    target = tmp_path / "sample"
    shutil.copytree(SAMPLE, target)
    return target


def context(root: Path, llm: LLMClient) -> ExecutorContext:
    return ExecutorContext(
        run_id="run-offline",
        step_number=1,
        workspace_root=root,
        llm=llm,
        logger=logging.getLogger("tests.offline_proposals"),
    )


async def propose(root: Path, instruction: str, files: list[str]) -> ProposeEditOutput:
    data: dict[str, Any] = {"instruction": instruction, "files": files}
    return await PROPOSE_EDIT.execute(
        PROPOSE_EDIT.validate_input(data), context(root, OfflineClient())
    )


async def apply(root: Path, output: ProposeEditOutput) -> None:
    edit = EDIT_FILE.validate_input(output.model_dump(mode="json")["edit"])
    await EDIT_FILE.execute(edit, context(root, OfflineClient()))


async def test_unused_import_in_the_sample_workspace_is_removed(sample: Path) -> None:
    store = sample / "inventory" / "store.py"
    before = store.read_text()
    output = await propose(sample, "Remove the unused import", ["inventory/store.py"])
    assert output.operation == "replace" and output.attempts == 1
    assert "-import os\n" in output.preview_diff
    assert output.provider == "offline"
    await apply(sample, output)
    after = store.read_text()
    assert after == before.replace("import os\n", "", 1)
    ast.parse(after)


async def test_generic_fix_picks_a_certain_problem_and_answers_the_same_every_time(
    sample: Path,
) -> None:
    files = ["inventory/models.py", "inventory/store.py"]
    first = await propose(sample, "Fix the problems in the inventory", files)
    second = await propose(sample, "Fix the problems in the inventory", files)
    assert first == second
    assert first.path == "inventory/store.py" and "`os`" in first.rationale


async def test_spelled_out_replacement_is_applied_in_the_file_that_has_it(sample: Path) -> None:
    instruction = "Replace `LOW_STOCK_THRESHOLD = 5` with `LOW_STOCK_THRESHOLD = 3`"
    output = await propose(sample, instruction, ["inventory/store.py", "inventory/models.py"])
    assert output.path == "inventory/models.py"
    await apply(sample, output)
    assert "LOW_STOCK_THRESHOLD = 3\n" in (sample / "inventory" / "models.py").read_text()


@pytest.mark.parametrize(
    ("source", "instruction", "fixed"),
    [
        (
            "def load():\n    try:\n        return 1\n    except:\n        return 0\n",
            "Replace the bare except",
            "def load():\n    try:\n        return 1\n    except Exception:\n        return 0\n",
        ),
        (
            "def same(x):\n    return x is 'a'\n",
            "Fix the identity comparison with a literal",
            "def same(x):\n    return x == 'a'\n",
        ),
        (
            "from os import path, sep\n\nprint(sep)\n",
            "Remove the unused import `path`",
            "from os import sep\n\nprint(sep)\n",
        ),
    ],
)
async def test_known_problems_get_their_one_line_fix(
    tmp_path: Path, source: str, instruction: str, fixed: str
) -> None:
    (tmp_path / "mod.py").write_text(source)
    output = await propose(tmp_path, instruction, ["mod.py"])
    await apply(tmp_path, output)
    assert (tmp_path / "mod.py").read_text() == fixed


async def test_repeated_line_is_replaced_with_enough_context_to_be_unique(tmp_path: Path) -> None:
    source = 'import json\n\nTEMPLATE = """\nimport json\n"""\n'
    (tmp_path / "dup.py").write_text(source)
    output = await propose(tmp_path, "Fix the problems", ["dup.py"])
    assert output.edit.old == "import json\n\n"  # the line alone occurs twice
    await apply(tmp_path, output)
    assert (tmp_path / "dup.py").read_text() == '\nTEMPLATE = """\nimport json\n"""\n'


async def test_fenced_content_creates_the_absent_file(tmp_path: Path) -> None:
    instruction = "Create the changelog with:\n```\n# Changelog\n\n- first\n```"
    output = await propose(tmp_path, instruction, ["CHANGELOG.md"])
    assert output.operation == "write" and output.base_exists is False
    await apply(tmp_path, output)
    assert (tmp_path / "CHANGELOG.md").read_text() == "# Changelog\n\n- first\n"


async def test_nothing_sensible_to_propose_fails_validation_by_name_not_a_fake_edit(
    sample: Path,
) -> None:
    store = sample / "inventory" / "store.py"
    before = store.read_text()
    client = OfflineClient()
    data = {"instruction": "Make the store faster", "files": ["inventory/store.py"]}
    with pytest.raises(InvalidEditError) as failed:
        await PROPOSE_EDIT.execute(PROPOSE_EDIT.validate_input(data), context(sample, client))
    assert "proposes no edit" in failed.value.detail
    assert "offline model has no edit to propose" in failed.value.detail
    assert len(client.responses) == 3  # asked, refused, asked again, as with any model
    assert "path" not in (client.responses[0].json_value or {})
    assert store.read_text() == before


def test_offline_answer_has_every_key_of_the_edit_schema() -> None:
    messages = build_propose_edit_messages(
        "Replace `1` with `2`", [EditableFile("a.py", "x = 1\n")], []
    )
    response = OfflineProvider().answer(CompletionRequest(messages=messages), "offline-1")
    assert set(response.json_value) == set(EDIT_SCHEMA["required"])
    assert response.json_value["old"] == "1" and response.json_value["content"] is None


@given(
    contents=st.lists(
        st.one_of(st.none(), st.text(alphabet=st.sampled_from("ab`\n #\r\t")), st.just("\n")),
        min_size=1,
        max_size=4,
    ),
    # Instructions arrive stripped (the step's input model strips them).
    instruction=st.text(min_size=1).map(str.strip).filter(bool),
)
def test_prompt_shows_each_file_exactly_and_parses_back(
    contents: list[str | None], instruction: str
) -> None:
    files = [EditableFile(f"dir/f{n}.py", content) for n, content in enumerate(contents)]
    messages = build_propose_edit_messages(instruction, files, ["some context"])
    messages += build_edit_retry_messages("{}", ["path: Field required"])
    parsed = parse_propose_edit_prompt(messages)
    assert parsed.files == files
    assert parsed.instruction == instruction
    assert parsed.previous_errors == ["path: Field required"]
    assert [section.content for section in parsed.inputs] == ["some context"]
