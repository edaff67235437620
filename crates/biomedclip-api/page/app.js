// The search page: everything goes through the API with the token as a bearer header, so the
// database decides what is visible. Values from the server are only ever set as text, never HTML.
"use strict";

const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem("biomedclip_token") || "";
let upload = null; // {kind: "image" | "dicom", base64, name}

async function api(path, options = {}) {
  const headers = Object.assign({ Authorization: "Bearer " + token }, options.headers || {});
  const response = await fetch(path, Object.assign({}, options, { headers }));
  if (!response.ok) {
    let message = response.status + " " + response.statusText;
    try {
      const body = await response.json();
      if (body.error) message = (body.error.sqlstate ? body.error.sqlstate + ": " : "") + body.error.message;
    } catch (e) { /* not JSON */ }
    const err = new Error(message);
    err.status = response.status;
    throw err;
  }
  return response;
}

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function show(view) {
  for (const id of ["login", "search", "drift"]) $(id).hidden = id !== view;
  $("nav").hidden = view === "login";
  $("tab-search").classList.toggle("active", view === "search");
  $("tab-drift").classList.toggle("active", view === "drift");
}

async function signIn() {
  token = $("token").value.trim();
  $("login-error").textContent = "";
  try {
    const collections = await (await api("/v1/collections")).json();
    sessionStorage.setItem("biomedclip_token", token);
    const select = $("collection");
    select.replaceChildren(...collections.map((c) => { const o = el("option", c.name); o.value = c.name; return o; }));
    show("search");
  } catch (e) {
    $("login-error").textContent = "Sign-in failed: " + e.message;
    show("login");
  }
}

function signOut() {
  token = "";
  sessionStorage.removeItem("biomedclip_token");
  $("results").replaceChildren();
  show("login");
}

function readFile(file) {
  const reader = new FileReader();
  reader.onload = () => {
    const bytes = new Uint8Array(reader.result);
    const dicom = bytes.length > 132 && String.fromCharCode(...bytes.slice(128, 132)) === "DICM";
    let binary = "";
    for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
    upload = { kind: dicom ? "dicom" : "image", base64: btoa(binary), name: file.name };
    $("file-name").textContent = file.name + (dicom ? " (DICOM)" : "");
    $("window-label").hidden = !dicom;
    search();
  };
  reader.readAsArrayBuffer(file);
}

async function thumbnailInto(card, collection, id) {
  try {
    const blob = await (await api("/v1/thumbnail/" + encodeURIComponent(collection) + "/" + encodeURIComponent(id))).blob();
    const img = el("img");
    img.alt = "thumbnail of result " + id;
    img.src = URL.createObjectURL(blob);
    card.querySelector(".noimg").replaceWith(img);
  } catch (e) {
    card.querySelector(".noimg").textContent = e.status === 404 ? "no thumbnail" : "thumbnail failed";
  }
}

async function feedback(queryId, resultId, action, button) {
  try {
    await api("/v1/feedback", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ query_id: queryId, result_id: resultId, action }) });
    button.parentElement.querySelector(".fb").textContent = action === "relevant" ? "marked relevant" : "marked wrong";
  } catch (e) {
    button.parentElement.querySelector(".fb").textContent = "feedback failed: " + e.message;
  }
}

async function search(event) {
  if (event) event.preventDefault();
  const collection = $("collection").value;
  const text = $("query-text").value.trim();
  let query;
  if (upload) {
    query = upload.kind === "dicom" ? { dicom: upload.base64, window: $("window").value || "auto" } : { image: upload.base64 };
  } else if (text) {
    query = { text };
  } else {
    $("search-status").textContent = "Type a query or drop a file.";
    return;
  }
  $("search-status").textContent = "Searching…";
  const results = $("results");
  results.replaceChildren();
  try {
    const k = Math.max(1, Math.min(100, parseInt($("k").value, 10) || 12));
    const body = await (await api("/v1/search", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ collection, query, k }) })).json();
    $("search-status").textContent = body.results.length + " results" + (upload ? " for " + upload.name : "");
    for (const r of body.results) {
      const card = el("div", null, "card");
      card.dataset.id = r.id;
      card.append(el("div", "…", "noimg"));
      const meta = el("dl");
      for (const [k, v] of [["rank", r.rank], ["id", r.id], ["distance", r.distance.toFixed(4)], ...Object.entries(r.display)]) {
        meta.append(el("dt", k), el("dd", v === null ? "–" : typeof v === "object" ? JSON.stringify(v) : v));
      }
      card.append(meta);
      if (body.query_id !== null) {
        const row = el("div");
        const good = el("button", "Relevant", "relevant");
        const bad = el("button", "Wrong", "wrong");
        good.onclick = () => feedback(body.query_id, r.id, "relevant", good);
        bad.onclick = () => feedback(body.query_id, r.id, "wrong", bad);
        row.append(good, bad, el("span", "", "fb"));
        card.append(row);
      }
      results.append(card);
      thumbnailInto(card, collection, r.id);
    }
  } catch (e) {
    $("search-status").textContent = "Search failed: " + e.message;
    if (e.status === 401) signOut();
  } finally {
    upload = null;
  }
}

function plot(title, days, values, color, threshold) {
  const w = 520, h = 160, pad = 30;
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("width", w); svg.setAttribute("height", h);
  svg.setAttribute("role", "img"); svg.setAttribute("aria-label", title);
  const t = document.createElementNS(ns, "text");
  t.setAttribute("x", pad); t.setAttribute("y", 14); t.textContent = title;
  svg.append(t);
  const finite = values.filter((v) => v !== null && isFinite(v));
  const max = Math.max(threshold || 0, ...finite, 1e-9);
  const x = (i) => pad + (days.length <= 1 ? 0 : (i * (w - 2 * pad)) / (days.length - 1));
  const y = (v) => h - pad - (v / max) * (h - 2 * pad);
  if (threshold) {
    const line = document.createElementNS(ns, "line");
    line.setAttribute("x1", pad); line.setAttribute("x2", w - pad);
    line.setAttribute("y1", y(threshold)); line.setAttribute("y2", y(threshold));
    line.setAttribute("stroke", "#a40000"); line.setAttribute("stroke-dasharray", "4 3");
    svg.append(line);
  }
  values.forEach((v, i) => {
    if (v === null || !isFinite(v)) return;
    const c = document.createElementNS(ns, "circle");
    c.setAttribute("cx", x(i)); c.setAttribute("cy", y(v)); c.setAttribute("r", 4); c.setAttribute("fill", color);
    const tip = document.createElementNS(ns, "title");
    tip.textContent = days[i] + ": " + v.toFixed(4);
    c.append(tip);
    svg.append(c);
    const label = document.createElementNS(ns, "text");
    label.setAttribute("x", x(i) - 18); label.setAttribute("y", h - 8); label.setAttribute("font-size", "10");
    label.textContent = days[i].slice(5);
    svg.append(label);
  });
  return svg;
}

async function loadDrift() {
  $("drift-status").textContent = "Loading…";
  const plots = $("drift-plots");
  plots.replaceChildren();
  try {
    const report = await (await api("/v1/drift?window=" + encodeURIComponent($("drift-window").value))).json();
    const names = Object.keys(report.collections);
    $("drift-status").textContent = names.length ? "Baseline " + report.baseline : "No logged searches in this window.";
    for (const name of names) {
      const c = report.collections[name];
      const days = c.days.map((d) => d.day);
      plots.append(el("h3", name + " (baseline: " + c.baseline.queries + " searches)"));
      plots.append(plot("median top-1 distance", days, c.days.map((d) => d.top1_distance.p50), "#1e4f85"));
      plots.append(plot("PSI of top-1 distances (dashed: 0.25)", days, c.days.map((d) => d.psi_top1), "#b35c00", report.thresholds.psi_major));
      const list = el("ul");
      for (const d of c.days) {
        const item = el("li", d.day + ": " + d.queries + " searches, corrections " + (100 * d.correction_rate).toFixed(1) + "%");
        if (d.flags.length) item.append(" ", el("span", d.flags.join(", "), "flag"));
        list.append(item);
      }
      plots.append(list);
    }
  } catch (e) {
    $("drift-status").textContent = "Drift report unavailable: " + e.message;
  }
  const model = $("model");
  model.replaceChildren();
  try {
    const info = await (await api("/v1/model")).json();
    const m = info.model;
    for (const [k, v] of [["model", m.name + " " + m.version], ["precision", m.precision], ["manifest SHA-256", m.manifest_sha256],
                          ["inference", m.inference], ["API", info.api.name + " " + info.api.version]]) {
      model.append(el("dt", k), el("dd", v));
    }
    for (const [file, sha] of Object.entries(m.files || {})) model.append(el("dt", file), el("dd", typeof sha === "string" ? sha : JSON.stringify(sha)));
  } catch (e) {
    model.append(el("dd", "Model information unavailable: " + e.message));
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("signin").onclick = signIn;
  $("logout").onclick = signOut;
  $("search-form").onsubmit = search;
  $("tab-search").onclick = () => show("search");
  $("tab-drift").onclick = () => { show("drift"); loadDrift(); };
  $("drift-load").onclick = loadDrift;
  $("file").onchange = (e) => { if (e.target.files[0]) readFile(e.target.files[0]); };
  const drop = $("drop");
  drop.ondragover = (e) => { e.preventDefault(); drop.classList.add("over"); };
  drop.ondragleave = () => drop.classList.remove("over");
  drop.ondrop = (e) => { e.preventDefault(); drop.classList.remove("over"); if (e.dataTransfer.files[0]) readFile(e.dataTransfer.files[0]); };
  if (token) { $("token").value = token; signIn(); } else { show("login"); }
});
