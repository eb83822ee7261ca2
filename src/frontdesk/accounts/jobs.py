"""What the accounts domain does with the HIS event feed: cards the hospital voids or
merges are marked, so every page shows them as such and no feature uses them."""

from __future__ import annotations

from frontdesk.accounts import service
from frontdesk.his import events
from frontdesk.his.port import EventType


@events.on(EventType.card_voided.value)
async def card_voided(ctx: events.EventContext) -> None:
    await service.mark_card(
        ctx.session, card_no=str(ctx.event.data.get("card_no", "")), status="invalid"
    )


@events.on(EventType.card_merged.value)
async def card_merged(ctx: events.EventContext) -> None:
    into = ctx.event.data.get("merged_into")
    await service.mark_card(
        ctx.session,
        card_no=str(ctx.event.data.get("card_no", "")),
        status="merged",
        merged_into=str(into) if into else None,
    )
