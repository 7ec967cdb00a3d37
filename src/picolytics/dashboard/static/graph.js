// The main graph: one metric over the period's buckets, and the period it is compared
// with (the previous one, or a year earlier) as a dashed second line, drawn by uPlot
// (static/vendor/, the global `uPlot`).
//
// The x axis is the bucket's index, labelled by the bucket: the two periods line up
// by position (first day with first day), not by date. Buckets still to come (the
// rest of today or of the month) have no value, so the line stops at now. The
// graph's numbers are also in a table under it, for screen readers and copying.

import { bucket, h, metric as show, METRICS } from "./format.js";

let plot = null;
let observer = null;

function color(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || "#444";
}

/** Values of the answer by bucket label, in the order of `labels`; null after `now`. */
export function series(answer, labels, now) {
  const byLabel = new Map(answer.results.map((row) => [row.dimensions[0], row.metrics[0]]));
  return labels.map((label) => (now && label > now ? null : byLabel.get(label) ?? 0));
}

export function clear(container) {
  if (plot) plot.destroy();
  plot = null;
  if (observer) observer.disconnect();
  observer = null;
  container.replaceChildren();
}

/**
 * Draw `current` (and `previous`) values of `name` over `labels` into `container`;
 * `table` gets the same numbers as rows.
 */
export function draw(container, table, {
  name, labels, previousLabels, current, previous, interval, previousName = "the previous period",
}) {
  const before = previousName.charAt(0).toUpperCase() + previousName.slice(1);
  clear(container);
  const label = METRICS[name].label;
  const shownLabels = labels.map((text) => bucket(text, interval));
  const data = [labels.map((_, index) => index), current];
  const lines = [
    { label: "Bucket", value: (u, i) => (i === null || i === undefined ? "—" : shownLabels[i] ?? "") },
    {
      label: "This period", stroke: color("--accent"), fill: color("--accent-fill"), width: 2,
      value: (u, v) => show(name, v), points: { show: labels.length < 40 },
    },
  ];
  if (previous) {
    data.push(labels.map((_, index) => (index < previous.length ? previous[index] : null)));
    lines.push({
      label: before, stroke: color("--muted"), width: 1.5, dash: [6, 4],
      value: (u, v) => show(name, v), points: { show: false },
    });
  }
  const text = color("--text");
  const grid = { stroke: color("--grid"), width: 1 };
  const options = {
    width: Math.max(280, container.clientWidth),
    height: 260,
    scales: {
      x: { time: false },
      y: { range: (u, min, max) => [0, max > 0 ? max * 1.1 : 1] }, // counts start at zero
    },
    series: lines,
    legend: { live: true },
    cursor: { drag: { x: false, y: false } },
    axes: [
      {
        stroke: text, grid, ticks: grid, space: 60,
        values: (u, splits) => splits.map((i) => (Number.isInteger(i) ? shownLabels[i] ?? "" : "")),
        incrs: [1, 2, 3, 4, 6, 7, 12, 14, 24, 30, 60],
      },
      { stroke: text, grid, ticks: grid, size: 60, values: (u, splits) => splits.map((v) => show(name, v)) },
    ],
  };
  plot = new uPlot(options, data, container);
  container.setAttribute("aria-label", summary(label, current, previous, previousName));
  observer = new ResizeObserver(() => {
    if (plot) plot.setSize({ width: Math.max(280, container.clientWidth), height: 260 });
  });
  observer.observe(container);
  fill(table, name, labels, previousLabels, current, previous, before);
}

function summary(label, current, previous, previousName) {
  const total = (values) => values.reduce((sum, v) => sum + (v || 0), 0);
  const points = current.filter((v) => v !== null).length;
  let text = `${label} over ${points} buckets, highest ${Math.max(0, ...current.map((v) => v || 0))}`;
  if (previous) text += `; ${previousName}, highest ${Math.max(0, ...previous.map((v) => v || 0))}`;
  return text + `. Totals of the buckets: ${total(current)}. The table below lists every bucket.`;
}

function fill(table, name, labels, previousLabels, current, previous, before) {
  const head = h("tr", {}, h("th", { scope: "col" }, "Bucket"),
    h("th", { scope: "col" }, METRICS[name].label),
    previous ? h("th", { scope: "col" }, before) : null);
  const rows = labels.map((label, index) => h("tr", {},
    h("th", { scope: "row" }, label),
    h("td", {}, show(name, current[index])),
    previous ? h("td", {}, `${show(name, previous[index])} (${previousLabels[index] ?? ""})`) : null));
  table.replaceChildren(h("thead", {}, head), h("tbody", {}, rows));
}
