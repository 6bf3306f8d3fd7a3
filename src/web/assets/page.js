// camqtt's web page: devices with their newest pictures and a timeline, kept live by the
// server-sent events of api/stream. Every URL is relative (Home Assistant ingress).
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const devices = new Map(); // id -> summary
const categories = new Set();
// Events that arrived live while the timeline was being read: kept when the answer lands.
let arrivedWhileLoading = null;

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k.startsWith("data-")) e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const c of children) if (c != null) e.append(c);
  return e;
}

function when(rfc3339) {
  if (!rfc3339) return "";
  const d = new Date(rfc3339);
  return isNaN(d) ? rfc3339 : d.toLocaleString();
}

function view(src, caption) {
  const dlg = $("#viewer");
  $("img", dlg).src = src;
  $(".caption", dlg).textContent = caption;
  if (!dlg.open) dlg.showModal();
}

function deviceCard(d) {
  const badge = el("span", { class: "badge " + (d.available ? "on" : "off") }, d.available ? "online" : "offline");
  const pics = el("div", { class: "pictures" });
  for (const [category, url] of Object.entries(d.latest || {})) {
    categories.add(category);
    const img = el("img", { class: "latest", "data-category": category, src: url, alt: `${d.name}: ${category}`, loading: "lazy" });
    img.addEventListener("click", () => view(url, `${d.name} · ${category}`));
    pics.append(el("figure", {}, img, el("figcaption", {}, category)));
  }
  const last = d.last_event
    ? el("p", {}, d.last_event.description, " ", el("span", { class: "when" }, when(d.last_event.time)))
    : el("p", { class: "when" }, d.last_seen ? "seen " + when(d.last_seen) : "no event yet");
  return el("article", { class: "device", "data-device": d.id },
    el("h2", {}, d.name, badge), el("div", { class: "id" }, d.id), last, pics);
}

function upsertDevice(d) {
  devices.set(d.id, d);
  const card = deviceCard(d);
  const old = $(`article.device[data-device="${CSS.escape(d.id)}"]`);
  if (old) old.replaceWith(card);
  else $("#devices").append(card);
  refreshFilters();
}

function refreshFilters() {
  const form = $("#filters");
  for (const [name, values] of [["device", [...devices.keys()]], ["category", [...categories]]]) {
    const select = form.elements[name];
    const have = new Set([...select.options].map((o) => o.value));
    for (const v of values.sort()) {
      if (!have.has(v)) select.append(el("option", { value: v }, name === "device" ? (devices.get(v)?.name ?? v) : v));
    }
  }
}

function eventItem(r) {
  categories.add(r.category);
  const name = devices.get(r.device)?.name ?? r.name ?? r.device;
  const image = (r.images || [])[0];
  const src = image ? "archive/" + image.file.split("/").map(encodeURIComponent).join("/") : null;
  const li = el("li", { class: "event " + (r.priority || ""), "data-device": r.device, "data-category": r.category },
    src ? el("img", { src, alt: r.category, loading: "lazy" }) : null,
    el("div", {}, el("strong", {}, r.description || r.category), el("br"),
      el("span", { class: "when" }, `${name} · ${r.category} · ${when(r.time)}`)));
  li.addEventListener("click", () => {
    const latest = devices.get(r.device)?.latest?.[r.category];
    const url = src || latest;
    if (url) view(url, `${name} · ${r.description || r.category} · ${when(r.time)}`);
  });
  return li;
}

function filters() {
  const form = $("#filters");
  const q = new URLSearchParams();
  for (const name of ["device", "category"]) if (form.elements[name].value) q.set(name, form.elements[name].value);
  for (const name of ["since", "until"]) {
    const v = form.elements[name].value;
    if (v) q.set(name, new Date(v).toISOString());
  }
  return q;
}

function matches(r) {
  const q = filters();
  if (q.get("device") && q.get("device") !== r.device) return false;
  if (q.get("category") && q.get("category") !== r.category) return false;
  if (q.get("until") && new Date(r.time) > new Date(q.get("until"))) return false;
  return !(q.get("since") && new Date(r.time) < new Date(q.get("since")));
}

// How recent a device summary is: an answer to api/devices read while live updates arrived
// must not replace a newer card.
function version(d) {
  return [d.last_seen || "", d.last_event?.received || ""].sort().pop();
}

async function loadDevices() {
  const res = await fetch("api/devices", { credentials: "same-origin" });
  if (!res.ok) return;
  for (const d of await res.json()) {
    const have = devices.get(d.id);
    if (!have || version(d) >= version(have)) upsertDevice(d);
  }
}

const key = (r) => [r.received, r.device, r.category, r.description].join("|");

async function loadEvents() {
  const q = filters();
  q.set("limit", "100");
  arrivedWhileLoading = [];
  try {
    const res = await fetch("api/events?" + q, { credentials: "same-origin" });
    if (!res.ok) return;
    const records = await res.json();
    const known = new Set(records.map(key));
    const missed = arrivedWhileLoading.filter((r) => !known.has(key(r)));
    $("#timeline").replaceChildren(...[...missed.reverse(), ...records].map(eventItem));
    refreshFilters();
  } finally {
    arrivedWhileLoading = null;
  }
}

function connect() {
  const es = new EventSource("api/stream");
  const status = $("#status");
  es.onopen = () => { document.body.dataset.live = "connected"; status.textContent = "live"; };
  es.onerror = () => { document.body.dataset.live = "reconnecting"; status.textContent = "reconnecting…"; };
  // Sent first on every (re)connection: what changed while the stream was down is read again.
  es.addEventListener("hello", () => { loadDevices(); loadEvents(); });
  es.addEventListener("resync", () => { loadDevices(); loadEvents(); });
  es.addEventListener("device", (m) => upsertDevice(JSON.parse(m.data).device));
  es.addEventListener("removed", (m) => {
    const id = JSON.parse(m.data).id;
    devices.delete(id);
    $(`article.device[data-device="${CSS.escape(id)}"]`)?.remove();
  });
  es.addEventListener("event", (m) => {
    const u = JSON.parse(m.data);
    upsertDevice(u.device);
    if (!matches(u.record)) return;
    arrivedWhileLoading?.push(u.record);
    $("#timeline").prepend(eventItem(u.record));
  });
}

document.addEventListener("DOMContentLoaded", () => {
  $("#filters").addEventListener("submit", (e) => { e.preventDefault(); loadEvents(); });
  connect();
});
