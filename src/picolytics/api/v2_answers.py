"""The query layer's answers to every question of a v2 Plan (api/v2_translate.py), in
the caller's read-only snapshot (stats/engine.py `snapshot`): the main question, the
denominators of percentage and the conversion rates, and the `pageview` row of a
breakdown by `event:name` (api/event_names.py). Each statement runs under the
caller's timeout; a QueryError or a timeout propagates to the caller.
"""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection

from picolytics.api.v2_translate import Answers, Plan
from picolytics.stats.engine import run
from picolytics.stats.query import Query, Result


async def ask(connection: AsyncConnection[Any], plan: Plan, timeout_s: float) -> Answers:
    """The answers to every question of the plan, one after the other."""

    async def one(question: Query | None) -> Result | None:
        if question is None:
            return None
        return await run(connection, question, timeout_s=timeout_s)

    main = await run(connection, plan.main, timeout_s=timeout_s)
    return Answers(
        main,
        await one(plan.totals),
        await one(plan.conversion_totals),
        await one(plan.group_totals),
        await one(plan.pageviews),
    )
