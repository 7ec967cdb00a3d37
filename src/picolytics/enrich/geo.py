"""GeoIP: country, region and city of a client address, from a MaxMind-format file.

The MaxMind layout also gives the region's ISO 3166-2 code and the city's GeoNames id
(Plausible's visit:region and visit:city); DB-IP lite and the flat layout have neither.

Raw IP addresses pass through here only in memory. The exceptions raised by
`maxminddb` quote the IP, so their text is never logged.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from pathlib import Path
from typing import Any, Final

import maxminddb

from picolytics.events import UNKNOWN_LOCATION, Location
from picolytics.text import sanitize_text

logger = logging.getLogger(__name__)


# Longest stored place name; real ones are far shorter, this only bounds bad data.
_MAX_PLACE_LENGTH: Final = 128
_SUBDIVISION_CODE: Final = re.compile(r"[A-Za-z0-9]{1,3}")


class GeoLocator:
    """Looks up client addresses in a MaxMind DB file (.mmdb).

    Reads both the MaxMind/DB-IP city layout (nested `country.iso_code`,
    `subdivisions[0].names.en`, `city.names.en`, and where present
    `subdivisions[0].iso_code` and `city.geoname_id`) and the flat `@ip-location-db`
    layout (`country_code`, `state1`, `city`). Country-only databases work too.

    GeoIP is optional: with no file, or one that cannot be opened, a single warning is
    logged and every lookup answers UNKNOWN_LOCATION. Lookups never raise.
    """

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._reader: Any = None  # maxminddb.Reader (no usable type stubs)
        self._ipv4_only = False
        self._warned_corrupt = False
        if path is None:
            logger.warning("GeoIP disabled: no database file configured; locations stay empty")
            return
        try:
            self._reader = maxminddb.open_database(path, maxminddb.MODE_AUTO)
        except (OSError, ValueError, maxminddb.InvalidDatabaseError) as exc:
            logger.warning(
                "GeoIP disabled: cannot open database %s (%s); locations stay empty",
                path,
                _describe_error(exc),
            )
            return
        metadata = self._reader.metadata()
        self._ipv4_only = metadata.ip_version == 4
        logger.info(
            "GeoIP database %s opened (type %s, IPv%d, built %d)",
            path,
            metadata.database_type,
            metadata.ip_version,
            metadata.build_epoch,
        )

    @property
    def available(self) -> bool:
        """True while a database is open and answering lookups."""
        return self._reader is not None

    def close(self) -> None:
        """Release the database; later lookups answer UNKNOWN_LOCATION."""
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()

    def lookup(self, ip: str) -> Location:
        """Location of one address; UNKNOWN_LOCATION if unknown or not an address."""
        reader = self._reader
        if reader is None:
            return UNKNOWN_LOCATION
        try:
            record = reader.get(ip)
        except ValueError:
            # Not an address, or IPv6 asked of an IPv4-only file (the flat files
            # come split in -ipv4 and -ipv6 halves).
            record = self._lookup_mapped(reader, ip)
        except TypeError:
            return UNKNOWN_LOCATION
        except maxminddb.InvalidDatabaseError:
            self._warn_corrupt()
            return UNKNOWN_LOCATION
        return _location_from_record(record)

    def _lookup_mapped(self, reader: Any, ip: str) -> object:
        """Retry an IPv4-mapped IPv6 address (::ffff:a.b.c.d) as plain IPv4."""
        if not self._ipv4_only:
            return None
        try:
            mapped = ipaddress.IPv6Address(ip).ipv4_mapped
        except ValueError:
            return None
        if mapped is None:
            return None
        try:
            return reader.get(mapped)
        except (ValueError, maxminddb.InvalidDatabaseError):
            self._warn_corrupt()
            return None

    def _warn_corrupt(self) -> None:
        # Once per file: a broken file would otherwise log on every request.
        if not self._warned_corrupt:
            self._warned_corrupt = True
            logger.warning(
                "GeoIP database %s has corrupt records; those lookups stay empty", self._path
            )


def _describe_error(exc: BaseException) -> str:
    """Short reason for an open failure (OSError text names no client data)."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return type(exc).__name__


def _location_from_record(record: object) -> Location:
    if not isinstance(record, dict):
        return UNKNOWN_LOCATION
    if "country_code" in record:  # flat @ip-location-db layout
        location = Location(
            _country_code(record.get("country_code")),
            _place(record.get("state1")),
            _place(record.get("city")),
        )
    else:  # MaxMind GeoIP2/GeoLite2 and DB-IP layout
        country = _country_code(_dig(record, "country", "iso_code"))
        subdivisions = record.get("subdivisions")
        location = Location(
            country,
            _subdivision(subdivisions),
            _place(_dig(record, "city", "names", "en")),
            _region_code(country, subdivisions),
            _geoname_id(_dig(record, "city", "geoname_id")),
        )
    # One shared object for "nothing known" keeps identity checks cheap for callers.
    return UNKNOWN_LOCATION if location == UNKNOWN_LOCATION else location


def _dig(record: dict[str, Any], *keys: str) -> object:
    value: object = record
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _subdivision(subdivisions: object) -> str:
    """Name of the largest subdivision (English), else its code."""
    if not isinstance(subdivisions, list) or not subdivisions:
        return ""
    first = subdivisions[0]
    if not isinstance(first, dict):
        return ""
    return _place(_dig(first, "names", "en")) or _place(first.get("iso_code"))


def _region_code(country: str, subdivisions: object) -> str:
    """ISO 3166-2 code of the largest subdivision ("US-CA"), "" without a valid one."""
    if not country or not isinstance(subdivisions, list) or not subdivisions:
        return ""
    first = subdivisions[0]
    code = first.get("iso_code") if isinstance(first, dict) else None
    # ISO 3166-2 subdivision parts are 1-3 ASCII letters or digits.
    if isinstance(code, str) and _SUBDIVISION_CODE.fullmatch(code):
        return f"{country}-{code.upper()}"
    return ""


def _geoname_id(value: object) -> str:
    """A city's GeoNames id as text ("2643743"), "" without a positive integer."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return str(value)
    return ""


def _country_code(value: object) -> str:
    if isinstance(value, str) and len(value) == 2 and value.isascii() and value.isalpha():
        return value.upper()
    return ""


def _place(value: object) -> str:
    return sanitize_text(value, _MAX_PLACE_LENGTH) if isinstance(value, str) else ""
