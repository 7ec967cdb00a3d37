// How the dashboard writes numbers, dates, countries and CSV, and its one DOM helper.

const integer = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
const decimal = new Intl.NumberFormat(undefined, { maximumFractionDigits: 2 });
const oneDecimal = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });
let regions = null;
try {
  regions = new Intl.DisplayNames(["en"], { type: "region" });
} catch (error) {
  regions = null; // an old browser: countries are shown by their codes
}

export const METRICS = {
  visitors: { label: "Unique visitors", short: "Visitors" },
  visits: { label: "Total visits", short: "Visits" },
  pageviews: { label: "Total pageviews", short: "Pageviews" },
  views_per_visit: { label: "Views per visit", short: "Views per visit" },
  bounce_rate: { label: "Bounce rate", short: "Bounce rate", rate: true, lowerIsBetter: true },
  visit_duration: { label: "Visit duration", short: "Duration" },
  events: { label: "Total events", short: "Events" },
  percentage: { label: "Share of visitors", short: "%" },
  conversion_rate: { label: "Conversion rate", short: "CR", rate: true },
};

export function duration(seconds) {
  const s = Math.round(Number(seconds) || 0);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(m / 60)}h ${String(m % 60).padStart(2, "0")}m`;
}

/** A metric's value as the page shows it ("—" for none). */
export function metric(name, value) {
  if (value === null || value === undefined) return "—";
  switch (name) {
    case "bounce_rate":
    case "conversion_rate":
    case "percentage":
      return `${oneDecimal.format(value)}%`;
    case "views_per_visit":
      return decimal.format(value);
    case "visit_duration":
      return duration(value);
    default:
      return integer.format(value);
  }
}

/** The change of a metric against the previous period: {text, spoken, direction}. */
export function change(name, now, before) {
  if (now === null || now === undefined || before === null || before === undefined) return null;
  const info = METRICS[name] || {};
  let delta;
  let text;
  if (info.rate) {
    delta = Math.round((now - before) * 10) / 10;
    text = `${oneDecimal.format(Math.abs(delta))} pts`;
  } else if (before === 0) {
    if (now === 0) return { text: "0%", spoken: "no change", direction: "same" };
    delta = 100;
    text = "100%";
  } else {
    delta = Math.round(((now - before) / before) * 100);
    text = `${integer.format(Math.abs(delta))}%`;
  }
  const direction = delta > 0 ? "up" : delta < 0 ? "down" : "same";
  const good = direction === "same" ? "same" : (direction === "up") !== !!info.lowerIsBetter;
  const arrow = direction === "up" ? "↑" : direction === "down" ? "↓" : "";
  const spoken = direction === "same" ? "no change" : `${direction} ${text}`;
  return { text: `${arrow} ${text}`.trim(), spoken, direction, good };
}

export function countryName(code) {
  if (!code || code.length !== 2 || !regions) return code;
  try {
    return regions.of(code.toUpperCase()) || code;
  } catch (error) {
    return code;
  }
}

const dayFormat = new Intl.DateTimeFormat(undefined, {
  day: "numeric", month: "short", year: "numeric", timeZone: "UTC",
});

/** "10 Jan 2024" of a local date "2024-01-10". */
export function date(text) {
  return dayFormat.format(new Date(`${text}T00:00:00Z`));
}

/** A graph bucket's label, short: "09:00", "10 Jan", "Jan 2024". */
export function bucket(label, interval) {
  const [day, time] = label.split(" ");
  const at = new Date(`${day}T00:00:00Z`);
  if (interval === "time:hour") return (time || "00:00").slice(0, 5);
  if (interval === "time:month") {
    return at.toLocaleDateString(undefined, { month: "short", year: "numeric", timeZone: "UTC" });
  }
  return at.toLocaleDateString(undefined, { day: "numeric", month: "short", timeZone: "UTC" });
}

/** One CSV field; a leading = + - @ is quoted away so a spreadsheet shows, not runs, it. */
function field(value) {
  let text = value === null || value === undefined ? "" : String(value);
  if (/^[=+\-@\t\r]/.test(text) && Number.isNaN(Number(text))) text = `'${text}`;
  return /[",\r\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

export function csv(header, rows) {
  return [header, ...rows].map((row) => row.map(field).join(",")).join("\r\n") + "\r\n";
}

/** An element with attributes (on* as listeners) and children (strings are text). */
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) element.addEventListener(key.slice(2), value);
    else if (key === "text") element.textContent = value;
    else element.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    element.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return element;
}
