"""Compiled reads: the builder's hot queries answered without per-field GraphQL execution.

A query document whose every field is one this package knows (``types.py``: workflows, their
versions and pages of versions, users, workspaces and their pages of workflows) is compiled
once into a plan (``plan.py``): for each object level, the columns its selection needs and,
for each field, either a function of the row or a batch loader that reads every parent's
children in one statement (the lean reads of ``app/services/reads.py``). Executing the plan
builds the response's ``data`` in selection order, with the same values Strawberry's
resolvers give, and no resolver, extension hook or per-field coercion in between.

Anything else (another field, a directive, an abstract type, a mutation, a document that
does not validate, a variable that does not coerce, a token that does not sign in, an
object that is not found, a value its field's type cannot show) makes the plan decline, and
the request takes the general path, which answers it (errors included) exactly as before.
A database fault is the one error answered here: 503, as the general path answers a sign-in
the database failed, so that the request does not wait for the database twice. The compiled path
is therefore only ever a faster way to give an answer the general path would have given:
``tests/schema/test_compiled.py`` runs every compilable document both ways and compares.
"""
