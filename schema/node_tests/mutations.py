"""nodeTest: run one node once, as a run would, and record nothing."""

from __future__ import annotations

import strawberry

from app.errors import InputErrors
from app.services import node_tests as node_test_service
from schema.context import Info
from schema.errors import UserError, user_errors
from schema.ids import decode_id
from schema.node_tests.inputs import NodeTestInput
from schema.node_tests.types import NodeTestResult


@strawberry.type(description="The outcome of the node's one attempt, or why it could not run.")
class NodeTestPayload:
    result: NodeTestResult | None = strawberry.field(description="Null on user errors.")
    user_errors: list[UserError] = strawberry.field(description="Expected failures.")


@strawberry.type
class NodeTestMutations:
    @strawberry.mutation(
        description="Run one node of a workflow version once, with the sandbox, outbound "
        "guard, secrets and timeout of a run (members and above); records no run."
    )
    async def node_test(self, info: Info, input: NodeTestInput) -> NodeTestPayload:
        ctx = info.context
        workflow_id = decode_id("Workflow", input.workflow_id)
        from_run_id = decode_id("Run", input.from_run_id) if input.from_run_id else None
        principal = await ctx.principal()
        # The node may wait on its upstream for up to its timeout: give the request's
        # connection back first (the service reads what it needs in a short session).
        await ctx.close()
        given = input.input is not strawberry.UNSET
        try:
            result = await node_test_service.run_node_once(
                ctx.runtime.sessions,
                principal=principal,
                keyring=ctx.runtime.keyring,
                settings=ctx.runtime.settings,
                policy=ctx.runtime.graph_policy,
                workflow_id=workflow_id,
                node_id=input.node_id,
                version=input.version,
                input=input.input if given else None,
                input_given=given,
                from_run_id=from_run_id,
            )
        except InputErrors as error:
            return NodeTestPayload(result=None, user_errors=user_errors(error))
        return NodeTestPayload(result=NodeTestResult.from_model(result), user_errors=[])
