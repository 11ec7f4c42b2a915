"""Print the schema in SDL: ``python -m schema > schema.graphql``."""

from strawberry.printer import print_schema

from schema import schema

print(print_schema(schema))
