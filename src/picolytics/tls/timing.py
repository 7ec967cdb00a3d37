"""The schedule of automatic TLS: when a certificate is due, how often to look again,
how long to wait for another instance, and the growing delay after a failure."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True)
class Timing:
    """When to look again. The defaults suit Let's Encrypt; tests shorten them."""

    # Renew once less than this fraction of the certificate's lifetime is left:
    # 30 days before expiry for a 90-day certificate.
    renew_fraction: float = 1 / 3
    # Wake-ups to compare expiry and the database (another instance may have renewed).
    check_interval: timedelta = timedelta(hours=1)
    # While another instance holds the issuance lock.
    wait_for_other: timedelta = timedelta(seconds=15)
    # After a failure: doubling from retry_min up to retry_max (the defaults stay under
    # Let's Encrypt's failed-validation limit).
    retry_min: timedelta = timedelta(minutes=5)
    retry_max: timedelta = timedelta(hours=4)
    # How long one order may take (validation and finalisation polling).
    order_timeout: timedelta = timedelta(seconds=90)
    network_timeout_s: int = 15

    def retry_delay(self, failures: int) -> timedelta:
        """The wait after `failures` failures in a row: retry_min, doubling, at most
        retry_max. Doubled step by step rather than retry_min * 2 ** n, which overflows
        timedelta after 40 failures (a week at the 4-hour cap) and would end the loop."""
        delay = min(self.retry_min, self.retry_max)
        for _ in range(failures - 1):
            if delay >= self.retry_max - delay:  # doubling reaches the cap
                return self.retry_max
            delay *= 2
        return delay


def describe(span: timedelta) -> str:
    """A wait, for a log line: "0.5 s", "240 min"."""
    seconds = span.total_seconds()
    return f"{seconds:.3g} s" if seconds < 120 else f"{seconds / 60:.0f} min"
