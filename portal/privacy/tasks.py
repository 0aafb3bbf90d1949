"""The retention of login events as a periodic task of ``portal worker``
(portal/jobs): every day at 03:17 UTC, each pool's periods are applied
(privacy.apply_retention). ``portal retention run`` does the same at once."""

from __future__ import annotations

import logging

from portal import jobs, privacy

log = logging.getLogger("portal.privacy")

tasks = jobs.Tasks()


@tasks.periodic("privacy.retention", cron="17 3 * * *")
async def retention(*, timestamp: int) -> None:
    results = await privacy.apply_retention(jobs.resources().db)
    deleted = sum(r.events_deleted for r in results)
    blanked = sum(r.events_blanked for r in results)
    log.info(
        "retention applied",
        extra={"pools": len(results), "events_deleted": deleted, "events_blanked": blanked},
    )
