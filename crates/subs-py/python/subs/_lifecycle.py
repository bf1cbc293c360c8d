"""Starting and stopping engines with the application: the lifespan helper
for FastAPI and Starlette."""

from __future__ import annotations

from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any, AsyncContextManager, AsyncIterator, Callable, Optional

if TYPE_CHECKING:
    from ._engine import Engine

Lifespan = Callable[[Any], AsyncContextManager[Any]]


def lifespan(*engines: "Engine", then: Optional[Lifespan] = None) -> Lifespan:
    """A lifespan for `FastAPI(lifespan=...)` / `Starlette(lifespan=...)`:
    starts each engine on the application's loop at startup (a networked
    broker connects then, within the engine's `broker_timeout`; a failure
    stops the startup with its message) and closes them at shutdown.

        app = FastAPI(lifespan=subs.lifespan(engine))

    `then` is the application's own lifespan, entered once the engines run
    (its state, if it yields one, is the app's state)."""

    @asynccontextmanager
    async def run(app: Any) -> AsyncIterator[Any]:
        async with AsyncExitStack() as stack:
            for engine in engines:
                await stack.enter_async_context(engine)
            if then is None:
                yield None
            else:
                yield await stack.enter_async_context(then(app))

    return run


__all__ = ["lifespan"]
