"""A field that fails leaves the rest of the query whole: the other fields that waited on
the same loaded row still get it (graphql-core cancels a failed field's siblings, which must
not cancel the answer they share with healthy fields)."""

from __future__ import annotations

from tests.factories import Factory, gid
from tests.schema.workflows.test_nested_pages import with_versions

TWICE = """query($id: ID!) {
  a: workflow(id: $id) { createdBy { id } versions(first: 101) { totalCount } }
  b: workflow(id: $id) { createdBy { id } }
}"""


async def test_a_failed_field_does_not_take_a_shared_row_from_the_others(
    factory: Factory,
) -> None:
    owner = await factory.owner()
    await with_versions(factory, owner, 1, 3)
    await factory.execute("UPDATE workflows SET created_by_id = :u", u=owner.user.id)
    workflow = gid("Workflow", await factory.scalar("SELECT id FROM workflows"))
    headers = {"authorization": f"Bearer {owner.token}"}
    for _ in range(5):  # the shared future was cancelled on the second request and after
        response = await factory.client.post(
            "/graphql", json={"query": TWICE, "variables": {"id": workflow}}, headers=headers
        )
        assert response.status_code == 200
        body = response.json()
        assert body["data"] == {"a": None, "b": {"createdBy": {"id": gid("User", owner.user.id)}}}
        assert [(e["path"], e["extensions"]["code"]) for e in body["errors"]] == [
            (["a", "versions"], "BAD_USER_INPUT")
        ]
