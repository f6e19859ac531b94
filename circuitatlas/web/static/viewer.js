// circuitatlas viewer: filters and sorting on a layer page, the circuit page's controls and
// kernels, and the direct/expanded switch on a neuron page. No external code.
"use strict";

function layerFilters() {
  const form = document.getElementById("filters"), tiles = document.getElementById("tiles");
  if (!form || !tiles) return;
  const all = Array.from(tiles.children);
  const params = new URLSearchParams(location.search);
  for (const el of form.elements) if (el.name && params.has(el.name)) el.value = params.get(el.name);
  function apply() {
    const f = Object.fromEntries(new FormData(form));
    const minSel = parseFloat(f.selectivity);
    let shown = 0;
    for (const t of all) {
      const d = t.dataset;
      const ok = (!f.branch || d.branch === f.branch)
        && (!f.cluster || d.clusters.split("\n").includes(f.cluster))
        && (!f.motif || (f.motif === "*" ? d.motifs.trim() !== "" : d.motifs.split(" ").includes(f.motif)))
        && (isNaN(minSel) || (d.selectivity !== "" && parseFloat(d.selectivity) >= minSel));
      t.hidden = !ok;
      if (ok) shown++;
    }
    const key = f.sort || "channel";
    const value = (t) => { const v = t.dataset[key]; return v === "" ? -Infinity : parseFloat(v); };
    const sorted = all.slice().sort((a, b) => key === "channel" ? value(a) - value(b) : value(b) - value(a));
    for (const t of sorted) tiles.appendChild(t);
    document.getElementById("shown").textContent = `${shown} of ${all.length} units`;
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(f)) if (v && !(k === "sort" && v === "channel")) q.set(k, v);
    history.replaceState(null, "", q.toString() ? `?${q}` : location.pathname);
  }
  form.addEventListener("input", apply);
  form.addEventListener("change", apply);
  form.addEventListener("submit", (e) => { e.preventDefault(); apply(); });
  apply();
}

function circuitControls() {
  const form = document.getElementById("circuit-form");
  if (!form) return;
  const slider = document.getElementById("min-rel"), shown = document.getElementById("min-rel-shown");
  slider.addEventListener("input", () => { shown.textContent = slider.value; });
  form.addEventListener("change", () => form.submit());
  const svg = document.querySelector(".diagram svg.circuit");
  if (svg) {  // fit the page's width, but never below 3/4 of natural size (then scroll, target centred)
    svg.style.minWidth = `${Math.round(svg.viewBox.baseVal.width * 0.75)}px`;
    const box = svg.parentElement;
    box.scrollLeft = (box.scrollWidth - box.clientWidth) / 2;
  }
  const panel = document.getElementById("kernel-panel");
  const edges = JSON.parse(document.getElementById("circuit-edges").textContent).edges;
  const detail = document.getElementById("edge-detail");
  document.querySelectorAll(".diagram g.edge").forEach((g) => {
    g.addEventListener("click", () => {
      document.querySelectorAll(".diagram g.edge.selected").forEach((e) => e.classList.remove("selected"));
      g.classList.add("selected");
      const e = edges[Number(g.dataset.edge)];
      const unit = (uid) => uid.slice(uid.indexOf("/") + 1);
      detail.querySelector(".edge-title").textContent = `${unit(e.source)} → ${unit(e.target)}`;
      detail.querySelector(".edge-kernel").replaceChildren(e.kernel ? kernelSvg(e.kernel, 16) : document.createTextNode(""));
      detail.querySelector(".edge-meta").textContent =
        `sum ${e.sum.toPrecision(4)} · ${e.rel_in >= 0 ? "+" : ""}${e.rel_in.toFixed(2)} of the target's strongest input`
        + (e.kernel ? ` · ${e.kernel.length}×${e.kernel[0].length}` : "");
      detail.hidden = false;
      panel.querySelector(".hint").hidden = true;
    });
  });
}

// A kernel as a grid of cells: blue positive, red negative, white 0, on its own largest |value|
// (the colours of drawing.py's weight_colour).
function kernelSvg(kernel, cell) {
  const ns = "http://www.w3.org/2000/svg", h = kernel.length, w = kernel[0].length;
  const scale = Math.max(...kernel.flat().map(Math.abs)) || 1;
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "kernel");
  svg.setAttribute("width", w * cell);
  svg.setAttribute("height", h * cell);
  kernel.forEach((row, i) => row.forEach((v, j) => {
    const t = Math.min(1, Math.abs(v) / scale), [r, g, b] = v >= 0 ? [33, 102, 172] : [178, 24, 43];
    const rect = document.createElementNS(ns, "rect");
    rect.setAttribute("x", j * cell); rect.setAttribute("y", i * cell);
    rect.setAttribute("width", cell); rect.setAttribute("height", cell);
    rect.setAttribute("fill", `rgb(${[r, g, b].map((c) => Math.round(255 + (c - 255) * t)).join(",")})`);
    const title = document.createElementNS(ns, "title");
    title.textContent = v.toPrecision(4);
    rect.appendChild(title);
    svg.appendChild(rect);
  }));
  return svg;
}

function partnerSwitches() {
  document.querySelectorAll(".switch").forEach((sw) => {
    const side = sw.dataset.switch;
    sw.querySelectorAll("button").forEach((b) => b.addEventListener("click", () => {
      sw.querySelectorAll("button").forEach((x) => x.classList.toggle("on", x === b));
      document.querySelectorAll(`.partners[data-side="${side}"]`).forEach((p) => { p.hidden = p.dataset.kind !== b.dataset.kind; });
    }));
  });
}

document.addEventListener("DOMContentLoaded", () => { layerFilters(); circuitControls(); partnerSwitches(); });
