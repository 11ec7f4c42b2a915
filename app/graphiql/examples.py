"""The example operations GraphiQL opens with: the builder contract's, one tab each.

Each operation is copied from ``tests/contract/builder.graphql`` (a test keeps them equal and
valid against the schema), in the order a first session needs them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

TOKEN_HEADERS = '{"Authorization": "Bearer fdk_…"}'

USER_ERROR_FIELDS = """
fragment UserErrorFields on UserError {
  field
  code
  message
}
"""


@dataclass(frozen=True)
class Tab:
    """One GraphiQL tab: a document, its variables and headers (JSON text)."""

    query: str
    variables: str = ""
    headers: str = ""

    def as_graphiql(self) -> dict[str, str]:
        """The tab as GraphiQL's ``defaultTabs`` entries take it."""
        return {"query": self.query, "variables": self.variables, "headers": self.headers}


def _variables(**values: object) -> str:
    return json.dumps(values, indent=2, ensure_ascii=False)


TABS = (
    Tab(
        query="""# Flowdeck: the builder's operations, one per tab.
# Run one with Ctrl-Enter or the ▶ button.
#
# Sign in first: open the Headers tab under this editor
# and put your API token there:
#   {"Authorization": "Bearer fdk_…"}
# `flowdeck serve` prints one on its first start;
# `flowdeck token create` makes another.
# Every tab uses the token you entered last.
#
# The tabs, in the order of a first session:
#   Viewer           your workspaces and their ids
#   Templates        the gallery (start with Hello)
#   TemplateClone    a workflow from a template
#   WorkflowExecute  run it
#   RunProgress      every event of the run, live
#   RunDetail        the run and its steps
#   WorkflowList     the workspace's workflows
# Docs: the book icon on the left. SDL: /schema.graphql

query Viewer {
  viewer {
    id
    email
    name
    memberships { role workspace { id name } }
  }
}
""",
        headers=TOKEN_HEADERS,
    ),
    Tab(
        query="""# The built-in gallery and the workspace's own
# templates. workspaceId: an id from Viewer's memberships.

query Templates($workspaceId: ID!) {
  templates(workspaceId: $workspaceId) {
    id name description category source graph
  }
}
""",
        variables=_variables(workspaceId="a workspace id from Viewer"),
    ),
    Tab(
        query="""# input: { templateId, workspaceId, name? }
# → a new workflow at version 1 with the template's graph;
# the template is unchanged.

mutation TemplateClone($input: TemplateCloneInput!) {
  templateClone(input: $input) {
    workflow { id name currentVersion { number graph } }
    userErrors { ...UserErrorFields }
  }
}
"""
        + USER_ERROR_FIELDS,
        variables=_variables(
            input={
                "templateId": "the id of the Hello template from Templates",
                "workspaceId": "a workspace id from Viewer",
                "name": "My first workflow",
            }
        ),
    ),
    Tab(
        query="""# input: { workflowId, input?: JSON, version?: Int,
#          idempotencyKey?: String }
# Runs the current version unless `version` is given.
# Returns once the run is durable; then watch it in the
# RunProgress tab with the run's id.

mutation WorkflowExecute($input: WorkflowExecuteInput!) {
  workflowExecute(input: $input) {
    run { id status trigger queuedAt version { number } }
    userErrors { ...UserErrorFields }
  }
}
"""
        + USER_ERROR_FIELDS,
        variables=_variables(
            input={"workflowId": "a workflow id from TemplateClone", "input": {"name": "Ada"}}
        ),
    ),
    Tab(
        query="""# Every event of the run after `afterSeq` (all of them
# when null), then live events until the terminal one
# (RUN_SUCCEEDED, RUN_FAILED, RUN_CANCELLED), then it
# completes. This page lists every payload received,
# oldest first (over a WebSocket: graphql-transport-ws).

subscription RunProgress($runId: ID!, $afterSeq: Int) {
  runProgress(runId: $runId, afterSeq: $afterSeq) {
    seq type at runStatus nodeId stepStatus attempt output error
  }
}
""",
        variables=_variables(runId="a run id from WorkflowExecute"),
    ),
    Tab(
        query="""# One step per node of the version, in the graph's
# node order.

query RunDetail($id: ID!) {
  run(id: $id) {
    id status trigger input output error queuedAt startedAt finishedAt durationMs
    version { number graph }
    steps {
      nodeId nodeType status attempt startedAt finishedAt durationMs input output error
    }
  }
}
""",
        variables=_variables(id="a run id from WorkflowExecute"),
    ),
    Tab(
        query="""# Newest-updated first. `search` matches the name,
# case-insensitive.

query WorkflowList($workspaceId: ID!, $first: Int!, $after: String, $search: String) {
  workspace(id: $workspaceId) {
    id
    name
    workflows(first: $first, after: $after, search: $search) {
      totalCount
      pageInfo { hasNextPage endCursor }
      edges {
        cursor
        node {
          id
          name
          description
          isTemplate
          updatedAt
          currentVersion { number createdAt }
          schedule { enabled cron timezone nextFireAt }
          lastRun { id status queuedAt finishedAt }
        }
      }
    }
  }
}
""",
        variables=_variables(workspaceId="a workspace id from Viewer", first=20),
    ),
)
