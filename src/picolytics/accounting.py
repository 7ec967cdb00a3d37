"""The closed sets of reasons an event is refused, dropped or counted as a bot, and
the counters that account for every accepted event.

Metric label values come from these sets only, so they stay bounded; a reason that
is not in them is a type error, not a silently missing series. The accounting rule
(docs/guarantees.md): accepted = written + queued + dropped after acceptance.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Final, Literal, get_args

# Why a request is refused before its event is accepted (ingest/endpoint.py).
RejectReason = Literal[
    "invalid",
    "unsupported_type",
    "too_large",
    "too_slow",
    "rate_limited",
    "unknown_site",
    "queue_full",
    "no_salt",
]
# Why an event is not stored as human traffic although its request was fine.
FilteredReason = Literal["bot"]
# Why an accepted event is lost: a row the database refuses, or the shutdown deadline.
LossReason = Literal["bad_row", "shutdown"]
DropReason = Literal[RejectReason, FilteredReason, LossReason]
DROP_REASONS: Final[tuple[DropReason, ...]] = get_args(DropReason)
LOSS_REASONS: Final[tuple[LossReason, ...]] = get_args(LossReason)

# How a client was recognised as a bot (enrich/agents.py); stored in bot_counts.reason.
BotReason = Literal["empty_ua", "crawler_list", "parser_spider"]
BOT_REASONS: Final[tuple[BotReason, ...]] = get_args(BotReason)


@dataclass
class PipelineStats:
    """Counters the metrics export; every event ends in exactly one of them."""

    accepted: int = 0
    written: int = 0
    dropped: Counter[DropReason] = field(default_factory=Counter)
    batches: int = 0
    database_errors: int = 0

    def dropped_after_acceptance(self) -> int:
        return sum(self.dropped[reason] for reason in LOSS_REASONS)
