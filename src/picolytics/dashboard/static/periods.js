// The dashboard's periods, in the site's time zone: which days (or, for realtime and
// "today so far", which instants) each one asks the Stats API for, the period it is
// compared with, and the bucket of its graph.
//
// Dates are "YYYY-MM-DD" strings of local days; arithmetic on them runs in UTC, where
// a day is always 24 hours. Named periods match the Stats API's own (docs/api-v2.md):
// "7d" is the 7 days before today, "6mo" the 6 whole months before this one.
//
// The comparison (state.compare) is the previous period, the same period a year
// earlier, or none. A year earlier is the query layer's rule (stats/engine.py,
// comparison_period): the same local days, or wall-clock times, a year before, and
// 29 February is the 28th. It is applied to each shown day, the last one included.

export const PERIODS = [
  "realtime", "day", "yesterday", "7d", "30d", "month", "lastmonth", "6mo", "12mo", "custom",
];
export const DEFAULT_PERIOD = "30d";
export const COMPARES = ["previous", "year", "off"];
export const DEFAULT_COMPARE = "previous";
const DATE = /^\d{4}-\d{2}-\d{2}$/;
const MINUTE = 60 * 1000;
const DAY = 24 * 60 * MINUTE;
const MAX_DAYS = 3660; // the query layer's bound on a period

function parts(tz, ms) {
  const format = new Intl.DateTimeFormat("en-US", {
    timeZone: tz, hourCycle: "h23", year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit",
  });
  const out = {};
  for (const part of format.formatToParts(new Date(ms))) out[part.type] = Number(part.value);
  return out;
}

function pad(n, width = 2) {
  return String(n).padStart(width, "0");
}

/** The local date of the instant `ms` in zone `tz`. */
export function localDate(tz, ms) {
  const p = parts(tz, ms);
  return `${pad(p.year, 4)}-${pad(p.month)}-${pad(p.day)}`;
}

function offset(tz, ms) {
  const p = parts(tz, ms);
  const wall = Date.UTC(p.year, p.month - 1, p.day, p.hour, p.minute, p.second);
  return wall - Math.floor(ms / 1000) * 1000;
}

/** The instant a local date starts in zone `tz` (its first second, across DST too). */
export function localMidnight(date, tz) {
  return localInstant(date, 0, tz);
}

/** The instant of the wall-clock time `date` + `clockMs` in zone `tz`. */
function localInstant(date, clockMs, tz) {
  const guess = toUtc(date) + clockMs;
  let ms = guess - offset(tz, guess);
  const again = guess - offset(tz, ms);
  if (again !== ms) ms = again;
  return ms;
}

/** The same local date a year before; 29 February is the 28th. */
export function yearBefore(date) {
  const [y, m, d] = date.split("-").map(Number);
  return `${pad(y - 1, 4)}-${pad(m)}-${pad(m === 2 && d === 29 ? 28 : d)}`;
}

/** The same wall-clock time in zone `tz` a year before the instant `ms`. */
function instantYearBefore(ms, tz) {
  const p = parts(tz, ms);
  const clock = ((p.hour * 60 + p.minute) * 60 + p.second) * 1000 + (ms % 1000);
  return localInstant(yearBefore(localDate(tz, ms)), clock, tz);
}

/** A date range of the API (two dates, or two ISO instants) a year before. */
function rangeYearBefore(range, tz) {
  if (DATE.test(range[0])) return range.map(yearBefore);
  return range.map((instant) => iso(instantYearBefore(Date.parse(instant), tz)));
}

function toUtc(date) {
  const [y, m, d] = date.split("-").map(Number);
  return Date.UTC(y, m - 1, d);
}

function fromUtc(ms) {
  const d = new Date(ms);
  return `${pad(d.getUTCFullYear(), 4)}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())}`;
}

export function addDays(date, n) {
  return fromUtc(toUtc(date) + n * DAY);
}

export function daysIn(from, to) {
  return Math.round((toUtc(to) - toUtc(from)) / DAY) + 1;
}

function monthStart(date) {
  return date.slice(0, 8) + "01";
}

/** The same day `n` months away, clamped to the month's last day (31 Mar - 1 = 29 Feb). */
export function addMonths(date, n) {
  const [y, m, d] = date.split("-").map(Number);
  const first = new Date(Date.UTC(y, m - 1 + n, 1));
  const last = new Date(Date.UTC(first.getUTCFullYear(), first.getUTCMonth() + 1, 0));
  first.setUTCDate(Math.min(d, last.getUTCDate()));
  return fromUtc(first.getTime());
}

function monthEnd(date) {
  return addDays(monthStart(addMonths(monthStart(date), 1)), -1);
}

function iso(ms) {
  return new Date(ms).toISOString();
}

export function validDate(text) {
  if (!DATE.test(text || "")) return false;
  return fromUtc(toUtc(text)) === text;
}

/** A graph bucket for a span of `days` local days. */
function bucket(days) {
  if (days <= 1) return "time:hour";
  if (days <= 40) return "time:day";
  return days > 366 ? "time:month" : "time:week";
}

function days(from, to) {
  return [from, to];
}

/**
 * What a period asks for: `current` and `previous` are date ranges of the Stats API
 * (two dates, or two ISO instants) for the numbers and their change; `currentGraph`
 * and `previousGraph` those of the graph's two lines (whole periods, where "today"
 * and "month to date" compare with the previous one up to the same point only);
 * `interval` the graph's bucket, null for no graph; `first` and `last` the local
 * dates shown; `today` the site's. Null for a custom range that is not one.
 * With `state.compare` "year" the two previous ranges are a year before the current
 * ones ("today so far" up to the same time); with "off" both are null.
 */
export function resolve(state, tz, now) {
  const result = current(state, tz, now);
  if (!result || !state.compare || state.compare === "previous") return result;
  if (state.compare === "off") return { ...result, previous: null, previousGraph: null };
  const previous = state.period === "day"
    ? [iso(localMidnight(yearBefore(result.today), tz)), iso(instantYearBefore(now, tz))]
    : rangeYearBefore(result.current, tz);
  const previousGraph = result.currentGraph ? rangeYearBefore(result.currentGraph, tz) : null;
  return { ...result, previous, previousGraph };
}

function current(state, tz, now) {
  const today = localDate(tz, now);
  const yesterday = addDays(today, -1);
  switch (state.period) {
    case "realtime": {
      const current = [iso(now - 30 * MINUTE), iso(now)];
      const previous = [iso(now - 60 * MINUTE), iso(now - 30 * MINUTE)];
      return {
        current, previous, currentGraph: null, previousGraph: null, interval: null,
        first: today, last: today, today,
      };
    }
    case "day": {
      const start = localMidnight(today, tz);
      const before = localMidnight(yesterday, tz);
      const previous = [iso(before), iso(Math.max(before, before + (now - start)))];
      return {
        current: days(today, today), previous, currentGraph: days(today, today),
        previousGraph: days(yesterday, yesterday), interval: "time:hour",
        first: today, last: today, today,
      };
    }
    case "yesterday":
      return span(today, yesterday, yesterday, addDays(yesterday, -1), addDays(yesterday, -1));
    case "7d":
    case "30d": {
      const n = state.period === "7d" ? 7 : 30;
      const first = addDays(today, -n);
      return span(today, first, yesterday, addDays(today, -2 * n), addDays(today, -n - 1));
    }
    case "month": {
      const before = addMonths(today, -1);
      const previous = days(monthStart(before), before);
      const result = span(today, monthStart(today), today, previous[0], previous[1]);
      result.currentGraph = days(monthStart(today), monthEnd(today));
      result.previousGraph = days(monthStart(before), monthEnd(before));
      result.interval = "time:day"; // the graph is the whole month, days to come too
      return result;
    }
    case "lastmonth": {
      const last = addMonths(today, -1);
      const before = addMonths(today, -2);
      return span(today, monthStart(last), monthEnd(last), monthStart(before), monthEnd(before));
    }
    case "6mo":
    case "12mo": {
      const n = state.period === "6mo" ? 6 : 12;
      const first = monthStart(addMonths(today, -n));
      const last = addDays(monthStart(today), -1);
      const before = monthStart(addMonths(today, -2 * n));
      const result = span(today, first, last, before, addDays(first, -1));
      result.interval = "time:month";
      return result;
    }
    case "custom": {
      if (!validDate(state.from) || !validDate(state.to) || state.from > state.to) return null;
      const n = daysIn(state.from, state.to);
      if (n > MAX_DAYS) return null;
      return span(today, state.from, state.to, addDays(state.from, -n), addDays(state.from, -1));
    }
    default:
      return null;
  }
}

function span(today, first, last, previousFirst, previousLast) {
  return {
    current: days(first, last),
    previous: days(previousFirst, previousLast),
    currentGraph: days(first, last),
    previousGraph: days(previousFirst, previousLast),
    interval: bucket(daysIn(first, last)),
    first,
    last,
    today,
  };
}
