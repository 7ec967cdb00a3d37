// The dashboard page (docs/dashboard.md): the state in the URL, and what it shows for
// that state, all from the Stats API (api.js) in the site's zone (periods.js).
//
// The state is site, period (and from/to for a custom range), what it is compared
// with (the previous period, a year earlier, nothing), the graph's metric, the filters, the property broken down and each card's tab,
// and whether imported data is included (on by default, `imports=off`; the toggle is
// shown for a site with imported data only). Every change is a new
// history entry (pushState), so the back button undoes it and a bookmark or a shared
// URL opens the same view; popstate draws the state of the entry gone back to.
// Each part (the metrics row, the graph's section, the current visitors, a card)
// gets `data-loaded` when its numbers are in (panels.js), for the benchmark and tests.

import { client, refused, aborted } from "./api.js";
import { change, date, h, metric as show, METRICS } from "./format.js";
import { clear, draw, series } from "./graph.js";
import { CARDS, dimensionName, load, valueName } from "./panels.js";
import { COMPARES, DEFAULT_COMPARE, DEFAULT_PERIOD, PERIODS, resolve, validDate } from "./periods.js";

const config = JSON.parse(document.getElementById("picolytics-config").textContent);
const csrfMeta = document.querySelector('meta[name="csrf-token"]');
const skew = Date.parse(config.now) - Date.now(); // the server's clock, not the browser's
const now = () => Date.now() + skew;
const REFRESH_MS = 30 * 1000;
const MAIN_METRICS = ["visitors", "visits", "pageviews", "views_per_visit", "bounce_rate", "visit_duration"];
// The metrics the graph can show (views_per_visit is answered without a dimension only).
const GRAPHABLE = ["visitors", "visits", "pageviews", "bounce_rate", "visit_duration", "conversion_rate"];
const FILTER = /^(visit|event):[a-z_]+(:.+)?$/;

const api = client({
  base: config.base,
  csrf: csrfMeta ? csrfMeta.content : "",
  onUnauthorized: () => {
    if (config.mode === "private") {
      const next = location.pathname + location.search;
      location.assign(`/dashboard/login?next=${encodeURIComponent(next)}`);
    } else {
      app.replaceChildren(h("p", { class: "failed", role: "alert" },
        "This shared link no longer works: it was revoked, or its password has changed."));
    }
  },
});

// -- the state and the URL ----------------------------------------------------------------

function readState(search) {
  const params = new URLSearchParams(search);
  const domains = config.sites.map((s) => s.domain);
  const site = domains.includes(params.get("site")) ? params.get("site") : domains[0];
  const period = PERIODS.includes(params.get("period")) ? params.get("period") : DEFAULT_PERIOD;
  const metric = GRAPHABLE.includes(params.get("metric")) ? params.get("metric") : "visitors";
  const compare = COMPARES.includes(params.get("compare")) ? params.get("compare") : DEFAULT_COMPARE;
  const filters = [];
  for (const item of params.getAll("f")) {
    const at = item.indexOf("=");
    const dimension = item.slice(0, at);
    if (at > 0 && FILTER.test(dimension) && !filters.some(([d]) => d === dimension)) {
      filters.push([dimension, item.slice(at + 1)]);
    }
  }
  const tabs = {};
  for (const card of CARDS) {
    const wanted = params.get(card.id);
    if (card.tabs.some((t) => t.id === wanted)) tabs[card.id] = wanted;
  }
  return {
    site, period, compare, metric, filters, tabs, imports: params.get("imports") !== "off",
    from: params.get("from") || "", to: params.get("to") || "", prop: params.get("prop") || "",
  };
}

function search(state) {
  const params = new URLSearchParams();
  if (config.mode === "private") params.set("site", state.site);
  params.set("period", state.period);
  if (state.period === "custom") {
    params.set("from", state.from);
    params.set("to", state.to);
  }
  if (state.compare !== DEFAULT_COMPARE) params.set("compare", state.compare);
  if (!state.imports) params.set("imports", "off");
  if (state.metric !== "visitors") params.set("metric", state.metric);
  for (const [dimension, value] of state.filters) params.append("f", `${dimension}=${value}`);
  if (state.prop) params.set("prop", state.prop);
  for (const [card, tab] of Object.entries(state.tabs)) params.set(card, tab);
  if (config.embed) params.set("embed", "true");
  return `?${params}`;
}

let state = readState(location.search);

/** A new state and its history entry; `redraw` the parts it changes (all by default). */
function go(changes, redraw = render) {
  state = { ...state, ...changes };
  history.pushState(null, "", search(state));
  redraw();
}

window.addEventListener("popstate", () => {
  state = readState(location.search);
  render();
});

// -- the page's parts ---------------------------------------------------------------------

const app = document.getElementById("app");
const hidden = new Set(); // card tabs the API refused, per filters (panels.js)
const parts = {
  period: h("p", { class: "period-label", id: "period-label" }),
  realtime: h("p", { class: "realtime", id: "realtime", "aria-live": "polite" }),
  chips: h("ul", { class: "chips", id: "chips" }),
  metrics: h("ul", { class: "metrics", id: "metrics" }),
  graphHeading: h("h2", { id: "graph-h" }, "Graph"),
  graph: h("div", { class: "graph", id: "graph", role: "img", "aria-label": "Graph" }),
  graphTable: h("table", { class: "graph-table", id: "graph-table" }),
  cards: new Map(CARDS.map((card) => [card.id, h("section", {
    class: "card", id: `card-${card.id}`, "aria-labelledby": `card-${card.id}-h`,
  })])),
};
const filtersSection = h("section", { class: "filters", id: "filters", "aria-label": "Filters", hidden: true },
  h("h2", { class: "sr-only" }, "Filters"), parts.chips);
const graphNote = h("div", { id: "graph-note" });
const graphSection = h("section", { class: "graph-section", id: "graph-section", "aria-labelledby": "graph-h" },
  parts.graphHeading, graphNote, parts.graph,
  h("details", {}, h("summary", {}, "The graph's numbers as a table"), parts.graphTable));

function layout() {
  if (!config.sites.length) {
    app.replaceChildren(h("p", { class: "empty" },
      "No site has sent an event yet. Add the tracker to a page (see the README), then come back."));
    app.removeAttribute("aria-busy");
    return false;
  }
  app.replaceChildren(
    h("div", { class: "status" }, parts.period, parts.realtime),
    filtersSection,
    h("section", { class: "metrics-section", "aria-labelledby": "metrics-h" },
      h("h2", { id: "metrics-h", class: "sr-only" }, "Metrics"), parts.metrics),
    graphSection,
    h("div", { class: "cards" }, [...parts.cards.values()]),
  );
  return true;
}

function siteZone() {
  return config.sites.find((s) => s.domain === state.site).timezone;
}

/** The `include` of every query: imported data while the site has some and it is on. */
function include(extra = {}) {
  const site = config.sites.find((s) => s.domain === state.site);
  return site.imports && state.imports ? { ...extra, imports: true } : extra;
}

/** A note under a part whose query left imported data out (the API's meta says why). */
function importsNote(answer) {
  const reason = answer && answer.meta ? answer.meta.imports_skip_reason : null;
  const text = IMPORTS_NOTES[reason];
  return text ? h("p", { class: "imports-note", role: "note" }, text) : null;
}

// -- controls -----------------------------------------------------------------------------

const siteSelect = document.getElementById("site");
const periodSelect = document.getElementById("period");
const compareSelect = document.getElementById("compare");
// What the previous numbers are called, in the graph's legend and in words.
const COMPARED = { previous: "the previous period", year: "a year earlier" };
const customRange = document.getElementById("custom-range");
const importsControl = document.getElementById("imports-control");
const importsBox = document.getElementById("imports");
// Why imported data is not in a part, in words (the reasons a user can act on).
const IMPORTS_NOTES = {
  unsupported_query: "Imported data is left out here: it cannot be filtered or broken down this way.",
  unsupported_interval: "Imported data is left out here: it has days, not hours.",
};
const fromInput = document.getElementById("from");
const toInput = document.getElementById("to");

if (siteSelect) {
  siteSelect.addEventListener("change", () => go({ site: siteSelect.value, filters: [], prop: "" }));
}
periodSelect.addEventListener("change", () => {
  if (periodSelect.value !== "custom") {
    go({ period: periodSelect.value });
    return;
  }
  customRange.hidden = false;
  const range = resolve(state, siteZone(), now());
  fromInput.value = state.from || (range ? range.first : "");
  toInput.value = state.to || (range ? range.last : "");
  fromInput.focus();
});
compareSelect.addEventListener("change", () => go({ compare: compareSelect.value }));
importsBox.addEventListener("change", () => go({ imports: importsBox.checked }));
document.getElementById("apply-range").addEventListener("click", () => {
  const from = fromInput.value;
  const to = toInput.value;
  if (validDate(from) && validDate(to) && from <= to) go({ period: "custom", from, to });
  else toInput.setCustomValidity("The range must start on or before its last day.");
  toInput.reportValidity();
});
toInput.addEventListener("input", () => toInput.setCustomValidity(""));

function syncControls() {
  if (siteSelect) siteSelect.value = state.site;
  periodSelect.value = state.period;
  compareSelect.value = state.compare;
  importsControl.hidden = !config.sites.find((s) => s.domain === state.site).imports;
  importsBox.checked = state.imports;
  customRange.hidden = state.period !== "custom";
  if (state.period === "custom") {
    fromInput.value = state.from;
    toInput.value = state.to;
  }
  document.getElementById("title").textContent = state.site;
  document.title = `${state.site} · picolytics`;
}

// -- filters ------------------------------------------------------------------------------

function apiFilters() {
  return state.filters.map(([dimension, value]) => ["is", dimension, [value]]);
}

function addFilter(pairs) {
  const filters = state.filters.filter(([d]) => !pairs.some(([p]) => p === d));
  go({ filters: [...filters, ...pairs] });
}

function chips() {
  filtersSection.hidden = state.filters.length === 0;
  parts.chips.replaceChildren(...state.filters.map(([dimension, value], index) => {
    const text = `${dimensionName(dimension)} is ${valueName(dimension, value)}`;
    const remove = () => {
      go({ filters: state.filters.filter((_, i) => i !== index) });
      const next = parts.chips.querySelector("button") || document.getElementById("main");
      next.focus();
    };
    return h("li", {}, h("button", {
      type: "button", class: "chip", "aria-label": `Remove filter: ${text}`, onclick: remove,
    }, h("span", {}, text), h("span", { class: "x", "aria-hidden": "true" }, "×")));
  }));
}

// -- the numbers --------------------------------------------------------------------------

let controller = null; // aborts what the previous state still asked for
const partControllers = new Map(); // the same for one part redrawn alone: "graph", a card

/** A signal for one part: aborted by the next redraw of that part, or of everything. */
function partSignal(part) {
  if (partControllers.has(part)) partControllers.get(part).abort();
  const own = new AbortController();
  controller.signal.addEventListener("abort", () => own.abort(), { once: true });
  partControllers.set(part, own);
  return own.signal;
}

function shownMetrics() {
  const goal = state.filters.some(([d]) => d === "event:goal");
  return goal ? [...MAIN_METRICS, "conversion_rate"] : MAIN_METRICS;
}

/** The totals of `metrics` over `range`, each alone when the API refuses them together. */
async function totals(metrics, range, signal) {
  const ask = (list) => api.query({
    site_id: state.site, metrics: list, date_range: range, filters: apiFilters(), include: include(),
  }, signal).then((answer) => answer.results[0] ? answer.results[0].metrics : list.map(() => 0));
  try {
    return await ask(metrics);
  } catch (error) {
    if (!refused(error)) throw error;
    return Promise.all(metrics.map((m) => ask([m]).then(([v]) => v, (e) => {
      if (refused(e)) return null;
      throw e;
    })));
  }
}

async function loadMetrics(range, signal) {
  const metrics = shownMetrics();
  parts.metrics.setAttribute("aria-busy", "true");
  parts.metrics.removeAttribute("data-loaded");
  try {
    const [current, previous] = await Promise.all([
      totals(metrics, range.current, signal),
      range.previous ? totals(metrics, range.previous, signal) : metrics.map(() => null),
    ]);
    parts.metrics.replaceChildren(...metrics
      .map((name, i) => card(name, current[i], previous[i], Boolean(range.interval)))
      .filter(Boolean));
    parts.metrics.dataset.loaded = "rows";
  } catch (error) {
    if (aborted(error)) return;
    parts.metrics.replaceChildren(h("li", { class: "failed" }, `Could not load: ${error.message}`));
    parts.metrics.dataset.loaded = "failed";
  } finally {
    parts.metrics.removeAttribute("aria-busy");
  }
}

function card(name, value, before, withGraph) {
  if (value === null) return null; // a metric the API does not answer with these filters
  const info = METRICS[name];
  const delta = change(name, value, before);
  const content = [
    h("span", { class: "label" }, info.label),
    h("span", { class: "value" }, show(name, value)),
    delta ? h("span", { class: `change ${delta.direction} ${delta.good === true ? "good" : delta.good === false ? "bad" : ""}` },
      h("span", { "aria-hidden": "true" }, delta.text),
      h("span", { class: "sr-only" }, `, ${delta.spoken} against ${COMPARED[state.compare]}`)) : null,
  ];
  const body = withGraph && GRAPHABLE.includes(name)
    ? h("button", {
      type: "button", class: "metric-button", "aria-pressed": state.metric === name ? "true" : "false",
      onclick: () => go({ metric: name }, redrawGraph),
    }, content)
    : h("div", { class: "metric-box" }, content);
  return h("li", { class: "metric", id: `metric-${name}` }, body);
}

function range() {
  return resolve(state, siteZone(), now());
}

async function loadGraph(period, signal) {
  const goal = state.filters.some(([d]) => d === "event:goal");
  const name = state.metric === "conversion_rate" && !goal ? "visitors" : state.metric;
  graphSection.removeAttribute("data-loaded");
  if (!period.interval) {
    graphSection.hidden = true;
    clear(parts.graph);
    graphSection.dataset.loaded = "hidden";
    return;
  }
  graphSection.hidden = false;
  parts.graphHeading.textContent = `${METRICS[name].label} over time`;
  const ask = (dates) => api.query({
    site_id: state.site, metrics: [name], date_range: dates, dimensions: [period.interval],
    filters: apiFilters(), include: include({ time_labels: true }),
  }, signal);
  graphSection.setAttribute("aria-busy", "true");
  try {
    const [current, previous] = await Promise.all([
      ask(period.currentGraph), period.previousGraph ? ask(period.previousGraph) : null,
    ]);
    const labels = current.meta.time_labels;
    const nowKey = period.interval === "time:hour" ? hourKey(period) : period.today;
    draw(parts.graph, parts.graphTable, {
      name, labels, interval: period.interval,
      current: series(current, labels, nowKey),
      previous: previous ? series(previous, previous.meta.time_labels, null) : null,
      previousLabels: previous ? previous.meta.time_labels : [],
      previousName: COMPARED[state.compare] || "",
    });
    graphNote.replaceChildren(...[importsNote(current)].filter(Boolean));
    graphSection.dataset.loaded = "rows";
  } catch (error) {
    if (aborted(error)) return;
    graphSection.hidden = true; // refused or failed: no graph rather than an error
    clear(parts.graph);
    graphSection.dataset.loaded = "failed";
  } finally {
    graphSection.removeAttribute("aria-busy");
  }
}

function hourKey(period) {
  const hour = new Intl.DateTimeFormat("en-US", {
    timeZone: siteZone(), hour: "2-digit", hourCycle: "h23",
  }).format(new Date(now()));
  return `${period.today} ${hour.padStart(2, "0")}:00:00`;
}

async function loadRealtime() {
  try {
    const count = await api.realtime(state.site);
    parts.realtime.replaceChildren(h("span", { class: "dot", "aria-hidden": "true" }),
      h("span", { id: "realtime-count" }, show("visitors", count)),
      count === 1 ? " current visitor" : " current visitors");
    parts.realtime.dataset.loaded = "rows";
  } catch (error) {
    if (aborted(error)) return;
    parts.realtime.replaceChildren();
    parts.realtime.dataset.loaded = "failed";
  }
}

function periodText(period) {
  const zone = siteZone();
  if (state.period === "realtime") return `The last 30 minutes, ${zone} time`;
  const days = period.first === period.last ? date(period.first) : `${date(period.first)} – ${date(period.last)}`;
  return `${days}, ${zone} time`;
}

function context(period, signal) {
  return {
    api, signal, site: state.site, range: period, filters: apiFilters(), hidden,
    include: include(), importsNote,
    filterKey: JSON.stringify(state.filters), tabs: state.tabs, prop: state.prop,
    goal: state.filters.some(([d]) => d === "event:goal"),
    addFilter,
    setTab: (cardId, tabId) => go({ tabs: { ...state.tabs, [cardId]: tabId } }, () => redrawCard(cardId)),
    setProp: (prop) => go({ prop }, () => redrawCard("props")),
  };
}

/** Everything, for a new state (or one gone back to). */
function render() {
  if (controller) controller.abort();
  controller = new AbortController();
  const signal = controller.signal;
  syncControls();
  chips();
  const period = range();
  if (!period) {
    parts.period.textContent = "Choose a range of at most 3660 days, its first day before its last.";
    return;
  }
  parts.period.textContent = periodText(period);
  const work = [loadMetrics(period, signal), loadGraph(period, partSignal("graph"))];
  for (const cardDef of CARDS) {
    const ctx = context(period, partSignal(cardDef.id));
    work.push(load(cardDef, parts.cards.get(cardDef.id), ctx));
  }
  Promise.allSettled(work).then(() => {
    if (!signal.aborted) app.removeAttribute("aria-busy");
  });
}

/** A new metric in the graph: the graph, and which metric is pressed. */
function redrawGraph() {
  const period = range();
  if (!period) return;
  for (const button of parts.metrics.querySelectorAll(".metric-button")) {
    const pressed = button.parentElement.id === `metric-${state.metric}`;
    button.setAttribute("aria-pressed", pressed ? "true" : "false");
  }
  loadGraph(period, partSignal("graph"));
}

/** A new tab or property in one card: that card. */
function redrawCard(cardId) {
  const period = range();
  const cardDef = CARDS.find((c) => c.id === cardId);
  if (period && cardDef) load(cardDef, parts.cards.get(cardId), context(period, partSignal(cardId)));
}

if (layout()) {
  history.replaceState(null, "", search(state));
  render();
  loadRealtime();
  setInterval(() => {
    if (document.hidden) return;
    loadRealtime();
    if (state.period === "realtime") render();
  }, REFRESH_MS);
}
