"""A competent model for "fix the failing test", played over the Chat Completions wire.

:class:`FixingModel` answers each request a :class:`~tests.fakes.llm_servers.FakeLLMServer`
receives from what the request asks, read back with the engine's own prompt parsers: the task
marker of its system message, the run so far of a revision, the files shown to propose_edit, the
sections given to a summary. It plans the tests first, reads the failing test and the module it
covers, proposes the fix it was told about (only when the file it is shown holds the bug), runs
the tests again and declares the goal met when they pass. Structured answers go back in the form
the request asked for: a forced tool's call, else the message's content.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from agent_engine.llm.base import ChatMessage
from agent_engine.llm.edit_prompts import parse_propose_edit_prompt
from agent_engine.llm.prompts import detect_task, parse_plan_prompt, parse_task_prompt
from agent_engine.llm.revision_prompts import parse_revision_prompt
from tests.fakes.llm_servers import ReceivedRequest, Reply, openai_completion

TEST_ARGV = ["python3", "-m", "pytest", "-q"]
_FAILED_RE = re.compile(r"^FAILED (?P<path>[\w/.-]+\.py)::", re.MULTILINE)
_PENDING = ("pending", "awaiting_approval", "approved", "running")


@dataclass
class FixingModel:
    """Knows one bug: ``old`` in ``path`` must become ``new``. ``asked`` lists each request's
    task in the order received."""

    path: str
    old: str
    new: str
    rationale: str
    asked: list[str] = field(default_factory=list)

    def __call__(self, received: ReceivedRequest) -> Reply:
        """The reply to one request, in the structured form the request asked for."""
        messages = [
            ChatMessage(role=m["role"], content=m["content"]) for m in received.body["messages"]
        ]
        task = detect_task(messages) or "text"
        self.asked.append(task)
        if task == "plan":
            return _structured(received, self._plan(messages))
        if task == "revise":
            return _structured(received, self._revise(messages))
        if task == "propose_edit":
            return _structured(received, self._edit(messages))
        if task == "summarize":
            return openai_completion(self._summary(messages), prompt_tokens=400)
        raise AssertionError(f"the fixing model was asked something it does not do: {task}")

    def _plan(self, messages: list[ChatMessage]) -> dict[str, Any]:
        prompt = parse_plan_prompt(messages)
        assert prompt.adaptive, "this model plans only adaptive runs"
        step = {"step_type": "run_command", "input_data": {"argv": TEST_ARGV}}
        return {"steps": [step], "rationale": "Run the tests first to see what fails."}

    def _revise(self, messages: list[ChatMessage]) -> dict[str, Any]:
        prompt = parse_revision_prompt(messages)
        steps = {s["step_number"]: s for s in prompt.steps}
        after = steps[prompt.revision["after_step"]]
        output = after.get("output") or {}
        first = int(prompt.revision["next_step_number"])
        if after["step_type"] == "run_command":
            if output.get("exit_code") == 0:
                return _decision("done", [], "The tests pass: the goal is met.")
            failing = _FAILED_RE.findall(output.get("stdout") or "")
            assert failing, f"no FAILED line in the test output: {output!r}"
            covered = "inventory/" + PurePosixPath(failing[0]).name.removeprefix("test_")
            reads = [_read(failing[0]), _read(covered)]
            return _decision("revise", reads, f"{failing[0]} fails: read it and {covered}.")
        still_reading = [
            s for s in prompt.steps if s["step_type"] == "read_file" and s["status"] in _PENDING
        ]
        if after["step_type"] != "read_file" or still_reading:
            return _decision("continue", [], "The reads planned are still to come.")
        test_run = max(n for n, s in steps.items() if s["step_type"] == "run_command")
        reads = sorted(n for n, s in steps.items() if s["step_type"] == "read_file")
        refs = [{"$ref": f"steps.{n}.output"} for n in (test_run, *reads)]
        work = [
            {
                "step_type": "propose_edit",
                "input_data": {
                    "instruction": "Fix the bug the failing test shows.",
                    "files": [self.path],
                    "inputs": refs,
                },
            },
            {"step_type": "edit_file", "input_data": {"$ref": f"steps.{first}.output.edit"}},
            {"step_type": "run_command", "input_data": {"argv": TEST_ARGV}},
            {
                "step_type": "summarize",
                "input_data": {
                    "instruction": "Say what the run changed and whether the tests pass.",
                    "inputs": [
                        {"$ref": f"steps.{first + 1}.output"},
                        {"$ref": f"steps.{first + 2}.output"},
                    ],
                },
            },
        ]
        return _decision("revise", work, "Propose the fix, apply it, test again, summarize.")

    def _edit(self, messages: list[ChatMessage]) -> dict[str, Any]:
        prompt = parse_propose_edit_prompt(messages)
        shown = {f.path: f.content for f in prompt.files}
        if (shown.get(self.path) or "").count(self.old) != 1:
            # Competent, not clairvoyant: with no bug in sight it proposes nothing.
            return {
                "path": None,
                "operation": None,
                "old": None,
                "new": None,
                "content": None,
                "diff": None,
                "rationale": f"{self.path} as shown does not hold the bug",
            }
        return {
            "path": self.path,
            "operation": "replace",
            "old": self.old,
            "new": self.new,
            "content": None,
            "diff": None,
            "rationale": self.rationale,
        }

    def _summary(self, messages: list[ChatMessage]) -> str:
        prompt = parse_task_prompt(messages)
        edits = [s for s in prompt.sections if s.kind == "edit"]
        commands = [s for s in prompt.sections if s.kind == "command"]
        lines = ["# Fixed the failing test", ""]
        for edit in edits:
            lines += [f"Changed `{edit.title}`: {self.rationale}", "", "```diff", edit.content]
            lines += ["```", ""]
        for command in commands:
            last = [line for line in command.content.split("\n") if line.strip()][-1:]
            lines.append(f"The tests were run again: {' '.join(last)}")
        return "\n".join(lines) + "\n"


def _read(path: str) -> dict[str, Any]:
    return {"step_type": "read_file", "input_data": {"path": path}}


def _decision(decision: str, steps: list[dict[str, Any]], rationale: str) -> dict[str, Any]:
    return {"decision": decision, "steps": steps, "rationale": rationale}


def _structured(received: ReceivedRequest, value: Any) -> Reply:
    text = json.dumps(value)
    if received.body.get("tool_choice") is not None:
        name = received.body["tool_choice"]["function"]["name"]
        return openai_completion(
            "", tool_arguments=text, tool_name=name, finish_reason="tool_calls"
        )
    assert received.body.get("response_format", {}).get("type") == "json_schema", received.body
    return openai_completion(text, prompt_tokens=1500, completion_tokens=120)
