// The dashboard's panels: cards of breakdowns, each with tabs (Top pages, Entry pages,
// ...), one Stats API v2 query per shown tab. A row is a button: it filters every
// panel by its value. A tab the API refuses (400, even with visitors alone) is hidden,
// and so is a card with no tab left; "Download CSV" asks for up to EXPORT_ROWS rows.
// A tab whose query left imported data out (meta.imports_skip_reason) says so in a note.
// A card's `data-loaded` says its load has ended and how ("rows", "empty", "idle",
// "hidden", "failed"): absent while it loads (scripts/bench_dashboard.py waits on it).

import { refused, aborted } from "./api.js";
import { countryName, csv, h, metric as show, METRICS } from "./format.js";

const ROWS = 10;
const EXPORT_ROWS = 1000;

// What a filter on a dimension is called on its chip (and in a table's column).
export const DIMENSIONS = {
  "event:page": "Page",
  "visit:entry_page": "Entry page",
  "visit:exit_page": "Exit page",
  "visit:source": "Source",
  "visit:channel": "Channel",
  "visit:referrer": "Referrer",
  "visit:utm_medium": "UTM medium",
  "visit:utm_source": "UTM source",
  "visit:utm_campaign": "UTM campaign",
  "visit:utm_content": "UTM content",
  "visit:utm_term": "UTM term",
  "visit:country": "Country",
  "visit:region_name": "Region",
  "visit:city_name": "City",
  "visit:browser": "Browser",
  "visit:browser_version": "Browser version",
  "visit:os": "Operating system",
  "visit:os_version": "OS version",
  "visit:device": "Device",
  "event:goal": "Goal",
  "event:name": "Event",
};

export function dimensionName(dimension) {
  if (dimension.startsWith("event:props:")) return `Property ${dimension.slice(12)}`;
  return DIMENSIONS[dimension] || dimension;
}

export function valueName(dimension, value) {
  return dimension === "visit:country" ? countryName(value) : value;
}

function tab(id, label, dimensions, extra = {}) {
  return { id, label, dimensions, ...extra };
}

// Channels are asked like the rest (docs/channels.md); a tab the Stats API refuses
// hides itself at its first click (load, below).
export const CARDS = [
  { id: "sources", title: "Sources", tabs: [
    tab("sources", "Sources", ["visit:source"]),
    tab("channels", "Channels", ["visit:channel"]),
    tab("referrers", "Referrers", ["visit:referrer"]),
    tab("utm_medium", "UTM medium", ["visit:utm_medium"]),
    tab("utm_source", "UTM source", ["visit:utm_source"]),
    tab("utm_campaign", "UTM campaign", ["visit:utm_campaign"]),
    tab("utm_content", "UTM content", ["visit:utm_content"]),
    tab("utm_term", "UTM term", ["visit:utm_term"]),
  ] },
  { id: "pages", title: "Pages", tabs: [
    tab("top", "Top pages", ["event:page"], { metrics: ["visitors", "pageviews"] }),
    tab("entry", "Entry pages", ["visit:entry_page"], {
      metrics: ["visitors", "visits"], names: { visits: "Entrances" } }),
    tab("exit", "Exit pages", ["visit:exit_page"], {
      metrics: ["visitors", "visits"], names: { visits: "Exits" } }),
  ] },
  { id: "locations", title: "Locations", tabs: [
    tab("countries", "Countries", ["visit:country"]),
    tab("regions", "Regions", ["visit:region_name"]),
    tab("cities", "Cities", ["visit:city_name"]),
  ] },
  { id: "devices", title: "Devices", tabs: [
    tab("browsers", "Browsers", ["visit:browser"]),
    tab("browser_versions", "Browser versions", ["visit:browser", "visit:browser_version"]),
    tab("os", "Operating systems", ["visit:os"]),
    tab("os_versions", "OS versions", ["visit:os", "visit:os_version"]),
    tab("devices", "Devices", ["visit:device"]),
  ] },
  { id: "goals", title: "Goals and events", tabs: [
    tab("goals", "Goals", ["event:goal"], {
      metrics: ["visitors", "events", "conversion_rate"],
      names: { visitors: "Uniques", events: "Total", conversion_rate: "Conversion rate" } }),
    // The Stats API names pageviews "pageview" under event:name, as Plausible does.
    tab("events", "Custom events", ["event:name"], {
      metrics: ["visitors", "events"], filters: [["is_not", "event:name", ["pageview"]]] }),
  ] },
  { id: "props", title: "Properties", property: true, tabs: [
    tab("prop", "Property", null, { metrics: ["visitors", "events"] }),
  ] },
];

/** The card's tab to show: the state's, unless it is hidden; null when all are. */
function shownTab(card, ctx) {
  const open = card.tabs.filter((t) => !ctx.hidden.has(hiddenKey(card, t, ctx)));
  return open.find((t) => t.id === ctx.tabs[card.id]) || open[0] || null;
}

function hiddenKey(card, t, ctx) {
  return `${card.id}.${t.id}|${ctx.filterKey}|${card.property ? ctx.prop : ""}`;
}

function dimensionsOf(t, ctx) {
  return t.dimensions || [`event:props:${ctx.prop}`];
}

function metricsOf(t, ctx) {
  return t.metrics || ["visitors", ctx.goal ? "conversion_rate" : "percentage"];
}

function body(t, ctx, metrics, limit) {
  return {
    site_id: ctx.site,
    metrics,
    date_range: ctx.range.current,
    dimensions: dimensionsOf(t, ctx),
    filters: [...ctx.filters, ...(t.filters || [])],
    pagination: { limit },
    include: ctx.include,
  };
}

/** The tab's rows: its own metrics, or visitors alone when the API refuses those. */
async function ask(t, ctx, limit) {
  const metrics = metricsOf(t, ctx);
  try {
    return { metrics, answer: await ctx.api.query(body(t, ctx, metrics, limit), ctx.signal) };
  } catch (error) {
    if (!refused(error) || metrics.length === 1) throw error;
    const alone = ["visitors"];
    return { metrics: alone, answer: await ctx.api.query(body(t, ctx, alone, limit), ctx.signal) };
  }
}

function header(t, ctx, metrics) {
  const dimensions = dimensionsOf(t, ctx);
  const first = t.dimensions ? dimensionName(dimensions[dimensions.length - 1]) : ctx.prop;
  const column = t.dimensions && dimensions.length > 1 ? t.label.replace(/s$/, "") : first;
  return [column, ...metrics.map((m) => (t.names && t.names[m]) || METRICS[m].short)];
}

function label(t, ctx, row) {
  const dimensions = dimensionsOf(t, ctx);
  return row.dimensions.map((v, i) => valueName(dimensions[i], v)).join(" ");
}

function table(card, t, ctx, metrics, answer) {
  const names = header(t, ctx, metrics);
  const dimensions = dimensionsOf(t, ctx);
  const top = Math.max(1, ...answer.results.map((row) => row.metrics[0] || 0));
  const rows = answer.results.map((row) => {
    const text = label(t, ctx, row);
    const pairs = dimensions.map((d, i) => [d, row.dimensions[i]]);
    const bar = h("span", { class: "bar", "aria-hidden": "true" });
    bar.style.setProperty("--share", String(Math.round(((row.metrics[0] || 0) / top) * 100)));
    const button = h("button", { type: "button", class: "row-filter", onclick: () => ctx.addFilter(pairs) },
      h("span", { class: "sr-only" }, "Filter by "), text);
    return h("tr", {}, h("th", { scope: "row" }, bar, button),
      ...row.metrics.map((v, i) => h("td", { class: "num" }, show(metrics[i], v))));
  });
  return h("table", { class: "rows" },
    h("caption", { class: "sr-only" }, `${t.label}, ${names.slice(1).join(", ")}`),
    h("thead", {}, h("tr", {}, names.map((n, i) => h("th", { scope: "col", class: i ? "num" : null }, n)))),
    h("tbody", {}, rows));
}

function tabs(card, current, ctx) {
  if (card.tabs.length < 2) return null;
  const buttons = card.tabs
    .filter((t) => !ctx.hidden.has(hiddenKey(card, t, ctx)))
    .map((t) => h("button", {
      type: "button", class: "tab", "aria-pressed": t === current ? "true" : "false",
      onclick: () => ctx.setTab(card.id, t.id),
    }, t.label));
  return h("div", { class: "tabs", role: "group", "aria-label": `${card.title}: show` }, buttons);
}

function propertyForm(ctx) {
  const input = h("input", {
    id: "prop-key", name: "prop", type: "text", value: ctx.prop, autocomplete: "off",
    spellcheck: "false", placeholder: "plan",
  });
  const form = h("form", { class: "prop-form", onsubmit: (event) => {
    event.preventDefault();
    ctx.setProp(input.value.trim());
  } }, h("label", { for: "prop-key" }, "Property name"), input, h("button", { type: "submit" }, "Show"));
  return form;
}

function download(card, t, ctx) {
  return async () => {
    const { metrics, answer } = await ask(t, { ...ctx, signal: undefined }, EXPORT_ROWS);
    const names = header(t, ctx, metrics);
    const dimensions = dimensionsOf(t, ctx);
    const lines = answer.results.map((row) => [...row.dimensions, ...row.metrics]);
    const extra = dimensions.length > 1 ? dimensions.slice(0, -1).map(dimensionName) : [];
    const text = csv([...extra, ...names], lines);
    const link = h("a", {
      href: URL.createObjectURL(new Blob([text], { type: "text/csv;charset=utf-8" })),
      download: `${ctx.site}-${t.id}-${ctx.range.first}-${ctx.range.last}.csv`,
    });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 10000);
  };
}

/** Fill the card's section for this state; hide it when the API answers none of it. */
export async function load(card, section, ctx) {
  section.removeAttribute("data-loaded");
  const outcome = await fill(card, section, ctx);
  if (outcome) section.dataset.loaded = outcome; // none when aborted: a newer load goes on
}

async function fill(card, section, ctx) {
  const t = shownTab(card, ctx);
  if (!t) {
    section.hidden = true;
    return "hidden";
  }
  section.hidden = false;
  const heading = h("h2", { id: `card-${card.id}-h` }, card.title);
  const top = h("div", { class: "card-head" }, heading, tabs(card, t, ctx));
  const content = h("div", { class: "card-body" });
  section.replaceChildren(...[top, card.property ? propertyForm(ctx) : null, content].filter(Boolean));
  if (card.property && !ctx.prop) {
    content.append(h("p", { class: "empty" }, "Name a custom property to break its events down by its values."));
    return "idle";
  }
  section.setAttribute("aria-busy", "true");
  content.append(h("p", { class: "loading" }, "Loading…"));
  try {
    const { metrics, answer } = await ask(t, ctx, ROWS);
    const empty = h("p", { class: "empty" }, "Nothing in this period.");
    const csvButton = h("button", { type: "button", class: "csv", onclick: download(card, t, ctx) },
      "Download CSV", h("span", { class: "sr-only" }, ` of ${t.label}`));
    const note = ctx.importsNote(answer);
    if (answer.results.length) {
      content.replaceChildren(...[note, table(card, t, ctx, metrics, answer),
        h("div", { class: "card-foot" }, csvButton)].filter(Boolean));
      return "rows";
    }
    content.replaceChildren(...[note, empty].filter(Boolean));
    return "empty";
  } catch (error) {
    if (aborted(error)) return null;
    if (refused(error)) {
      ctx.hidden.add(hiddenKey(card, t, ctx));
      return fill(card, section, ctx); // the next tab, or none
    }
    content.replaceChildren(h("p", { class: "failed", role: "status" }, `Could not load: ${error.message}`));
    return "failed";
  } finally {
    section.removeAttribute("aria-busy");
  }
}
