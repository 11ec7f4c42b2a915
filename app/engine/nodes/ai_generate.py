"""The ``ai.generate`` node: a chat completion from an OpenAI-compatible endpoint.

The node POSTs ``{model, messages, temperature?, max_tokens?}`` to ``{baseUrl}/chat/completions``
through ``app.engine.outbound`` (the SSRF-guarded client, with its size and time caps), with
the key from a workspace secret as a Bearer token. Its output is the assistant's text, the
model the server reports, the finish reason and the token usage. A non-2xx answer fails the
step with the upstream's own ``error.message`` when it sends one; the key never appears in an
error or the output, even when the upstream echoes it.
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import Field, field_validator

from app.engine import outbound
from app.engine.caps import cap_output
from app.engine.expressions import to_text
from app.engine.nodes.base import (
    NodeConfig,
    NodeContext,
    NodeFailure,
    NodeOutcome,
    NodeType,
    register,
)

EXCERPT_CHARS = 200
MAX_PROMPT_CHARS = 1_000_000
# The largest completion any common model produces (128 Ki tokens); a guard against typos.
MAX_TOKENS_LIMIT = 131_072
_REDACTED = "[redacted]"


class AiGenerateConfig(NodeConfig):
    """The configuration of an ``ai.generate`` node."""

    base_url: str = Field(
        min_length=1,
        max_length=2048,
        description="The API's base URL, e.g. https://api.openai.com/v1; the node calls "
        "{baseUrl}/chat/completions.",
    )
    model: str = Field(min_length=1, max_length=256, description="The model, e.g. gpt-4o-mini.")
    system: str | None = Field(
        None,
        max_length=MAX_PROMPT_CHARS,
        description="Instructions sent as the system message, with {{ expressions }}.",
    )
    prompt: str = Field(
        min_length=1,
        max_length=MAX_PROMPT_CHARS,
        description="The user message, with {{ expressions }}, e.g. 'Summarize: {{ input.text }}'.",
    )
    api_key_secret: str | None = Field(
        None,
        min_length=1,
        max_length=100,
        description="The name of the workspace secret holding the API key (sent as a Bearer "
        "token); none for an endpoint that needs no key.",
    )
    temperature: float | None = Field(
        None, ge=0, le=2, description="Sampling temperature, 0 (focused) to 2 (varied)."
    )
    max_tokens: int | None = Field(
        None, ge=1, le=MAX_TOKENS_LIMIT, description="The most tokens the answer may have."
    )

    @field_validator("system", "prompt", mode="before")
    @classmethod
    def _as_text(cls, value: Any) -> Any:
        # A prompt that is one expression renders to that value's type: send it as text.
        return value if isinstance(value, str) or value is None else to_text(value)


async def run(ctx: NodeContext, config: AiGenerateConfig, input: Any) -> NodeOutcome:
    """Ask the endpoint for a chat completion; output its text, model, finish reason, usage."""
    api_key = ctx.secret(config.api_key_secret).strip() if config.api_key_secret else None
    response = await outbound.request(
        outbound.OutboundPolicy.from_settings(ctx.settings).for_node(config.timeout_seconds),
        "POST",
        f"{config.base_url.rstrip('/')}/chat/completions",
        headers=_request_headers(ctx, api_key),
        json=_request_body(config),
    )
    if not 200 <= response.status <= 299:
        raise NodeFailure(_status_message(response, api_key))
    # A completion of megabytes (an endpoint ignoring maxTokens) is cut to the step cap.
    return NodeOutcome(await cap_output(_completion_output(response, config.model), ctx.settings))


def _request_headers(ctx: NodeContext, api_key: str | None) -> dict[str, str]:
    headers = {
        "Accept": "application/json",
        # The same key on every attempt, so a retried call can be deduplicated by the API.
        "Idempotency-Key": f"{ctx.run_id}:{ctx.node_id}",
    }
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return headers


def _request_body(config: AiGenerateConfig) -> dict[str, Any]:
    messages = [{"role": "user", "content": config.prompt}]
    if config.system:
        messages.insert(0, {"role": "system", "content": config.system})
    body: dict[str, Any] = {"model": config.model, "messages": messages}
    if config.temperature is not None:
        body["temperature"] = config.temperature
    if config.max_tokens is not None:
        body["max_tokens"] = config.max_tokens
    return body


def _status_message(response: outbound.OutboundResponse, api_key: str | None) -> str:
    """The step's error for a non-2xx answer: the upstream's error.message, else its body."""
    detail = _error_message(response) or response.text()
    if api_key:
        # Some servers quote the key they were given back; it must not reach the run.
        detail = detail.replace(api_key, _REDACTED)
    detail = _excerpt(detail)
    prefix = f"AI endpoint answered {response.status}"
    return f"{prefix}: {detail}" if detail else f"{prefix} with an empty body."


def _error_message(response: outbound.OutboundResponse) -> str | None:
    """``error.message`` of an OpenAI-style error body, or None."""
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    message = error.get("message") if isinstance(error, dict) else error
    return message if isinstance(message, str) and message.strip() else None


def _completion_output(response: outbound.OutboundResponse, requested_model: str) -> Any:
    """The node's output from a chat completion body; a NodeFailure when it is not one."""
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        raise _not_a_completion(response, "the body is not JSON") from None
    choices = body.get("choices") if isinstance(body, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise _not_a_completion(response, "it has no choices")
    choice = choices[0]
    message = choice.get("message")
    if not isinstance(message, dict):
        raise _not_a_completion(response, "its first choice has no message")
    finish_reason = choice.get("finish_reason")
    finish_reason = finish_reason if isinstance(finish_reason, str) else None
    content = message.get("content")
    if content is None:
        raise NodeFailure(f"The model answered without text (finish reason: {finish_reason}).")
    if not isinstance(content, str):
        raise _not_a_completion(response, "its message content is not text")
    model = body.get("model")
    usage = body.get("usage") if isinstance(body.get("usage"), dict) else {}
    return {
        # JSONB cannot store NUL; nothing else in a model's text needs changing.
        "text": content.replace("\x00", "\ufffd"),
        "model": model if isinstance(model, str) else requested_model,
        "finishReason": finish_reason,
        "usage": {
            "promptTokens": _count(usage.get("prompt_tokens")),
            "completionTokens": _count(usage.get("completion_tokens")),
            "totalTokens": _count(usage.get("total_tokens")),
        },
    }


def _not_a_completion(response: outbound.OutboundResponse, problem: str) -> NodeFailure:
    return NodeFailure(
        f"AI endpoint answered {response.status} with something other than a chat "
        f"completion: {problem}."
    )


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _excerpt(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= EXCERPT_CHARS else flat[: EXCERPT_CHARS - 1] + "…"


NODE_TYPE = register(
    NodeType(
        type="ai.generate",
        category="AI",
        label="Generate text with AI",
        description="Ask a chat model on an OpenAI-compatible endpoint (OpenAI, Ollama, "
        "vLLM, …) for an answer to a prompt; output its text and token usage.",
        config_model=AiGenerateConfig,
        run=run,
        secret_fields=("apiKeySecret",),
    )
)
