"""The Flowdeck GraphQL schema: every query and mutation, with the request limits."""

from __future__ import annotations

import strawberry
from graphql import ASTValidationRule, GraphQLError
from strawberry.extensions import (
    AddValidationRules,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    ParserCache,
    QueryDepthLimiter,
    ValidationCache,
)
from strawberry.schema.config import StrawberryConfig
from strawberry.tools import merge_types
from strawberry.types import ExecutionContext

from app.settings import Settings, get_settings
from schema.auth import RequireSignIn
from schema.errors import ErrorPolicy
from schema.node_tests.mutations import NodeTestMutations
from schema.observe import OperationMetrics
from schema.runs.mutations import RunMutations
from schema.runs.queries import RunQueries
from schema.runs.subscriptions import RunSubscriptions
from schema.schedules.mutations import ScheduleMutations
from schema.secrets.mutations import SecretMutations
from schema.strings import StorableStrings
from schema.templates.mutations import TemplateMutations
from schema.templates.queries import TemplateQueries
from schema.webhooks.mutations import WebhookMutations
from schema.workflows.mutations import WorkflowMutations
from schema.workflows.queries import WorkflowQueries
from schema.workspaces.mutations import WorkspaceMutations
from schema.workspaces.queries import WorkspaceQueries

Query = merge_types("Query", (WorkspaceQueries, WorkflowQueries, RunQueries, TemplateQueries))
Mutation = merge_types(
    "Mutation",
    (
        WorkflowMutations,
        RunMutations,
        TemplateMutations,
        WorkspaceMutations,
        SecretMutations,
        WebhookMutations,
        ScheduleMutations,
        NodeTestMutations,
    ),
)


class FlowdeckSchema(strawberry.Schema):
    """Strawberry's schema without its per-error traceback logging.

    Expected errors (not found, bad input) are not faults; unexpected ones are logged once,
    with the request id, by ErrorPolicy.
    """

    # The validation rules the request limits add (depth, aliases), for the compiled path.
    limit_rules: tuple[type[ASTValidationRule], ...] = ()

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        return None


def build_schema(settings: Settings) -> strawberry.Schema:
    """The schema with the configured limits on depth, aliases and tokens."""
    # The limiters make a new rule class on every instantiation, and the validation cache is
    # keyed by the rule classes: build them once, or every request misses the cache.
    limits = [
        *QueryDepthLimiter(max_depth=settings.max_query_depth).validation_rules,
        *MaxAliasesLimiter(max_alias_count=settings.max_aliases).validation_rules,
    ]
    built = FlowdeckSchema(
        query=Query,
        mutation=Mutation,
        subscription=RunSubscriptions,
        config=StrawberryConfig(disable_field_suggestions=not settings.development),
        extensions=[
            OperationMetrics,
            ErrorPolicy,
            RequireSignIn,
            StorableStrings,
            lambda: AddValidationRules(limits),
            lambda: MaxTokensLimiter(max_token_count=settings.max_tokens),
            lambda: ParserCache(maxsize=256),
            lambda: ValidationCache(maxsize=256),
        ],
    )
    built.limit_rules = tuple(limits)
    return built


schema = build_schema(get_settings())
