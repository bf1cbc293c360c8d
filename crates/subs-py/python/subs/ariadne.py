"""subs for an Ariadne executable schema.

    from ariadne import make_executable_schema
    import subs.ariadne

    schema = make_executable_schema(type_defs, query, mutation, subscription)
    engine = subs.ariadne.engine(schema, topics={"serviceUpdated": "services"})

subs reads the SDL from the schema, queries and mutations sent to subs (over
the WebSocket or GraphQL over HTTP) run on Ariadne's executor, and each root
field of `Subscription` gets its events from subs:

- a field in `topics` (or with neither a topic nor a `source`) listens on its
  topic (default: its own name); Ariadne's `@subscription.field` resolver,
  `(event, info, **arguments)`, runs once per group of identical
  subscriptions per event;
- a field with an Ariadne `@subscription.source` generator and no topic is a
  per-subscription stream fed by that generator (`obj` is None), each value
  passed through the field's resolver if it has one.

`info` is a `subs.Info`, not graphql-core's `GraphQLResolveInfo`: it has
`arguments`, `variables`, `principal`, `context` (a dict with `principal`
and `init_payload`). Ariadne is not a dependency of subs: install it yourself.
"""

from __future__ import annotations

import inspect
from typing import Any, AsyncIterator, Callable, Dict, Mapping, Optional

from graphql import GraphQLSchema, print_schema

from ._engine import Engine
from ._native import Context, Principal

ContextValue = Callable[[Principal], Any]


async def _settled(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


def _resolver(resolve: Callable[..., Any]) -> Callable[..., Any]:
    """Ariadne's `(obj, info, **arguments)` resolver as a subs resolver."""
    if inspect.iscoroutinefunction(resolve):

        async def resolve_async(event: Any, info: Context, **arguments: Any) -> Any:
            return await resolve(event, info, **arguments)

        return resolve_async

    def resolve_sync(event: Any, info: Context, **arguments: Any) -> Any:
        return resolve(event, info, **arguments)

    return resolve_sync


def _stream(source: Callable[..., Any], resolve: Optional[Callable[..., Any]]) -> Callable[..., AsyncIterator[Any]]:
    """Ariadne's `(obj, info, **arguments)` source generator as a subs stream."""

    async def stream(info: Context, **arguments: Any) -> AsyncIterator[Any]:
        generator = await _settled(source(None, info, **arguments))
        try:
            async for value in generator:
                yield value if resolve is None else await _settled(resolve(value, info, **arguments))
        finally:
            aclose = getattr(generator, "aclose", None)
            if aclose is not None:
                await aclose()

    return stream


def engine(
    schema: GraphQLSchema,
    *,
    topics: Optional[Mapping[str, str]] = None,
    context_value: Optional[ContextValue] = None,
    **options: Any,
) -> Engine:
    """A `subs.Engine` serving `schema` (an Ariadne executable schema).

    `topics` maps `Subscription` fields to the topic they listen on (add
    argument filters with `engine.bind(field, filters=...)`); `context_value`
    builds Ariadne's context value for a query or mutation from the
    principal (default: `{"principal": principal}`); `options` go to
    `subs.Engine` (`broker`, `resolver_timeout`, ...)."""
    topics = dict(topics or {})
    subs_engine = Engine(schema=print_schema(schema), **options)
    subscription = schema.subscription_type
    fields = subscription.fields if subscription is not None else {}
    unknown = sorted(set(topics) - set(fields))
    if unknown:
        raise ValueError(f"`Subscription` has no field `{unknown[0]}`")
    for name, field in fields.items():
        source = field.subscribe
        if source is not None and name not in topics:
            subs_engine.stream(name)(_stream(source, field.resolve))
        elif field.resolve is not None:
            subs_engine.subscription(name, topic=topics.get(name))(_resolver(field.resolve))
        else:
            subs_engine.bind(name, topic=topics.get(name))

    from ariadne import graphql

    make_context = context_value or (lambda principal: {"principal": principal})

    @subs_engine.execute
    async def execute(document: str, variables: Dict[str, Any], operation_name: Optional[str], principal: Principal) -> Any:
        _, result = await graphql(
            schema,
            {"query": document, "variables": variables, "operationName": operation_name},
            context_value=make_context(principal),
        )
        return result

    return subs_engine


__all__ = ["engine"]
