// Line charts as plain SVG: no library, no canvas, a text summary beside every chart.
"use strict";

(function () {
  const SVG = "http://www.w3.org/2000/svg";
  const WIDTH = 640, HEIGHT = 220, LEFT = 52, RIGHT = 12, TOP = 10, BOTTOM = 28;

  function el(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // Round numbers for an axis from lo to hi: about `count` of them.
  function ticks(lo, hi, count) {
    if (!(hi > lo)) return [lo];
    const raw = (hi - lo) / count;
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) || raw;
    const out = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(+v.toPrecision(12));
    return out;
  }

  function fmt(v) {
    if (!Number.isFinite(v)) return "—";
    const a = Math.abs(v);
    if (a !== 0 && (a < 0.001 || a >= 1e6)) return v.toExponential(2);
    return +v.toPrecision(4) + "";
  }

  // series: [{name, points: [[x, y], ...]}]; returns a <figure> with the SVG, a legend and a caption.
  function lineChart({ title, series, xLabel, yLabel, summary, yMin, yMax, xMin, xMax }) {
    const figure = document.createElement("figure");
    figure.className = "chart";
    const all = series.flatMap((s) => s.points).filter((p) => Number.isFinite(p[1]));
    const caption = document.createElement("figcaption");
    caption.textContent = summary || describe(title, series);
    const svg = el("svg", { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: "img", "aria-label": caption.textContent });
    svg.appendChild(el("title", {}, title));
    if (all.length === 0) {
      svg.appendChild(el("text", { x: WIDTH / 2, y: HEIGHT / 2, "text-anchor": "middle" }, "no data yet"));
    } else {
      let [x0, x1] = [Math.min(...all.map((p) => p[0])), Math.max(...all.map((p) => p[0]))];
      let [y0, y1] = [Math.min(...all.map((p) => p[1])), Math.max(...all.map((p) => p[1]))];
      if (yMin !== undefined) y0 = Math.min(y0, yMin);
      if (yMax !== undefined) y1 = Math.max(y1, yMax);
      if (xMin !== undefined) x0 = Math.min(x0, xMin);
      if (xMax !== undefined) x1 = Math.max(x1, xMax);
      if (x1 === x0) { x0 -= 1; x1 += 1; }
      if (y1 === y0) {
        if (yMin !== undefined && y0 === yMin) y1 = y0 + 1;
        else { const pad = Math.abs(y0) * 0.1 || 1; y0 -= pad; y1 += pad; }
      }
      const sx = (x) => LEFT + ((x - x0) / (x1 - x0)) * (WIDTH - LEFT - RIGHT);
      const sy = (y) => HEIGHT - BOTTOM - ((y - y0) / (y1 - y0)) * (HEIGHT - TOP - BOTTOM);
      for (const t of ticks(y0, y1, 4)) {
        svg.appendChild(el("line", { class: "axis", x1: LEFT, x2: WIDTH - RIGHT, y1: sy(t), y2: sy(t) }));
        svg.appendChild(el("text", { x: LEFT - 6, y: sy(t) + 4, "text-anchor": "end" }, fmt(t)));
      }
      for (const t of ticks(x0, x1, 6)) {
        svg.appendChild(el("text", { x: sx(t), y: HEIGHT - BOTTOM + 16, "text-anchor": "middle" }, fmt(t)));
      }
      if (xLabel) svg.appendChild(el("text", { x: WIDTH - RIGHT, y: HEIGHT - 2, "text-anchor": "end" }, xLabel));
      if (yLabel) svg.appendChild(el("text", { x: 4, y: TOP + 2, "dominant-baseline": "hanging" }, yLabel));
      series.forEach((s, i) => {
        const pts = s.points.filter((p) => Number.isFinite(p[1]));
        if (pts.length === 0) return;
        const d = pts.map((p, j) => `${j ? "L" : "M"}${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join("");
        svg.appendChild(el("path", { class: `line s${i % 4}`, d }));
        if (pts.length === 1) svg.appendChild(el("circle", { class: `line s${i % 4}`, cx: sx(pts[0][0]), cy: sy(pts[0][1]), r: 3 }));
      });
    }
    figure.appendChild(svg);
    if (series.length > 1) figure.appendChild(legend(series));
    figure.appendChild(caption);
    return figure;
  }

  function legend(series) {
    const list = document.createElement("ul");
    list.className = "legend";
    series.forEach((s, i) => {
      const item = document.createElement("li");
      const key = el("svg", { viewBox: "0 0 24 8", "aria-hidden": "true" });
      key.appendChild(el("line", { class: `line s${i % 4}`, x1: 0, x2: 24, y1: 4, y2: 4 }));
      item.append(key, " " + s.name);
      list.appendChild(item);
    });
    return list;
  }

  // "title: name last L (min M, max X) over N points; ..."
  function describe(title, series) {
    const parts = series.map((s) => {
      const ys = s.points.map((p) => p[1]).filter(Number.isFinite);
      if (ys.length === 0) return `${s.name}: no data`;
      return `${s.name}: last ${fmt(ys[ys.length - 1])} (min ${fmt(Math.min(...ys))}, max ${fmt(Math.max(...ys))}) over ${ys.length} points`;
    });
    return `${title}. ${parts.join("; ")}.`;
  }

  window.FleetCharts = { lineChart, fmt };
})();
