"""The ``flow.delay`` node: wait, then pass the input on.

The wait is measured from when the step first started, so a retried or resumed step does not
wait again. A short remaining wait is slept; a longer one releases the worker: the node
raises ``ReleaseUntil`` and the executor runs it again at the wake-up time.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import Field

from app.engine.nodes.base import (
    NodeConfig,
    NodeContext,
    NodeOutcome,
    NodeType,
    ReleaseUntil,
    register,
)

#: Remaining waits up to this long are slept in the worker; longer ones release it.
RELEASE_AFTER_SECONDS = 30.0
MAX_DELAY_SECONDS = 30 * 24 * 3600


class FlowDelayConfig(NodeConfig):
    """The configuration of a ``flow.delay`` node."""

    seconds: float = Field(
        gt=0,
        le=MAX_DELAY_SECONDS,
        description="How long to wait, in seconds (at most 30 days).",
    )


async def run(ctx: NodeContext, config: FlowDelayConfig, input: Any) -> NodeOutcome:
    """Wait until the delay since the step started is over, then pass the input on."""
    started = ctx.step_started_at
    if started.tzinfo is None:
        started = started.replace(tzinfo=UTC)
    wake_at = started + timedelta(seconds=config.seconds)
    remaining = (wake_at - datetime.now(UTC)).total_seconds()
    if remaining > RELEASE_AFTER_SECONDS:
        raise ReleaseUntil(wake_at)
    if remaining > 0:
        await asyncio.sleep(remaining)
    return NodeOutcome(input)


NODE_TYPE = register(
    NodeType(
        type="flow.delay",
        category="Flow",
        label="Delay",
        description="Wait for a while (up to 30 days), then pass the input on; long waits "
        "free the worker.",
        config_model=FlowDelayConfig,
        run=run,
    )
)
