from sqlalchemy.ext.asyncio import AsyncEngine

from frontdesk.core import migrate


async def test_oa_models_match_the_migrations(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        await conn.run_sync(migrate.check_on)  # raises when a model has no migration
