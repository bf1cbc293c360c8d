"""subs for a `strawberry.Schema`.

    import strawberry
    import subs.strawberry

    schema = strawberry.Schema(query=Query, mutation=Mutation, subscription=Subscription)
    engine = subs.strawberry.engine(schema, topics={"serviceUpdated": "services"})

subs reads the SDL from the schema, queries and mutations sent to subs (over
the WebSocket or GraphQL over HTTP) run on Strawberry's executor
(`schema.execute`), and each root field of `Subscription` gets its events
from subs:

- a field in `topics` listens on that topic: each event (a dict, as
  published) is the field's value, to which each subscriber's selection set
  is applied; add a resolver with `@engine.subscription(field)` to transform
  it, once per group of identical subscriptions;
- any other field is a per-subscription stream fed by the Strawberry
  subscription generator itself, called with the field's arguments under
  their Python names and `info` (a `subs.Info`, not `strawberry.Info`: it
  has `arguments`, `variables`, `principal`, `context`); the values it yields
  (Strawberry objects, enums, lists, dicts) are sent as the client selected.

Input-type arguments reach a generator as dicts. Strawberry is not a
dependency of subs: install it yourself.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, AsyncIterator, Callable, Dict, Mapping, Optional

import strawberry

from ._engine import Engine
from ._native import Context, Principal

ContextValue = Callable[[Principal], Any]


def _plain(value: Any, schema: strawberry.Schema) -> Any:
    """A value a Strawberry resolver returns, as plain JSON-like data keyed
    by GraphQL names."""
    definition = getattr(value, "__strawberry_definition__", None)
    if definition is not None:
        convert = schema.config.name_converter
        return {
            convert.get_graphql_name(field): _plain(getattr(value, field.python_name), schema)
            for field in definition.fields
            if field.base_resolver is None
        }
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, (list, tuple)):
        return [_plain(item, schema) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item, schema) for key, item in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain(dataclasses.asdict(value), schema)
    return value


def _stream(field: Any, schema: strawberry.Schema) -> Callable[..., AsyncIterator[Any]]:
    resolver = field.base_resolver
    names = {schema.config.name_converter.from_argument(a): a.python_name for a in field.arguments}
    info_name = resolver.info_parameter.name if resolver.info_parameter is not None else None
    takes_self = resolver.self_parameter is not None
    function = resolver.wrapped_func

    async def stream(info: Context, **arguments: Any) -> AsyncIterator[Any]:
        keywords: Dict[str, Any] = {names.get(name, name): value for name, value in arguments.items()}
        if info_name is not None:
            keywords[info_name] = info
        generator = function(None, **keywords) if takes_self else function(**keywords)
        try:
            async for value in generator:
                yield _plain(value, schema)
        finally:
            await generator.aclose()

    return stream


def engine(
    schema: strawberry.Schema,
    *,
    topics: Optional[Mapping[str, str]] = None,
    context_value: Optional[ContextValue] = None,
    **options: Any,
) -> Engine:
    """A `subs.Engine` serving `schema` (a `strawberry.Schema`).

    `topics` maps `Subscription` fields (GraphQL names) to the topic they
    listen on (add argument filters with `engine.bind(field, filters=...)`);
    `context_value` builds Strawberry's context value for a query or
    mutation from the principal (default: `{"principal": principal}`);
    `options` go to `subs.Engine` (`broker`, `resolver_timeout`, ...)."""
    topics = dict(topics or {})
    subs_engine = Engine(schema=schema.as_str(), **options)
    root = schema._schema.subscription_type
    subscription = schema.get_type_by_name(root.name) if root is not None else None
    fields = {schema.config.name_converter.get_graphql_name(f): f for f in getattr(subscription, "fields", [])}
    unknown = sorted(set(topics) - set(fields))
    if unknown:
        raise ValueError(f"`Subscription` has no field `{unknown[0]}`")
    for name, field in fields.items():
        if name in topics:
            subs_engine.bind(name, topic=topics[name])
        elif field.base_resolver is not None:
            subs_engine.stream(name)(_stream(field, schema))

    make_context = context_value or (lambda principal: {"principal": principal})

    @subs_engine.execute
    async def execute(document: str, variables: Dict[str, Any], operation_name: Optional[str], principal: Principal) -> Any:
        result = await schema.execute(
            document,
            variable_values=variables,
            operation_name=operation_name,
            context_value=make_context(principal),
        )
        response: Dict[str, Any] = {"data": result.data}
        if result.errors:
            response["errors"] = [error.formatted for error in result.errors]
        return response

    return subs_engine


__all__ = ["engine"]
