"""FastAPI dependencies shared by every router: the request's session and the container.

One request, one transaction: the session commits when the route returns without error and
rolls back otherwise. Services never commit.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    provider = request.app.state.session_provider
    async with provider() as session:
        yield session


def get_container(request: Request) -> Any:
    return request.app.state.container


SessionDep = Annotated[AsyncSession, Depends(get_session)]
ContainerDep = Annotated[Any, Depends(get_container)]
