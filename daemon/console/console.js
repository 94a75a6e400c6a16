// stanzad hub console: login, then the device table kept current by the
// server-sent events of /console/events. No framework, no build step.
"use strict";

const $ = (id) => document.getElementById(id);
let stream = null;

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const k of kids) e.append(k);
  return e;
}

function when(epoch) {
  return epoch ? new Date(epoch * 1000).toLocaleString() : "never";
}

function ruleText(r) {
  const who = r.range === "all" || r.range === "All" ? "everyone" : `${r.range} ${r.remote}`;
  let t = `${r.allow ? "allow" : "deny"} ${r.kind} from ${who}`;
  if (r.nodes) t += ` (nodes ${r.nodes})`;
  if (r.fields !== undefined) t += ` (fields ${r.fields || "none"})`;
  return t;
}

function row(d) {
  const readings = el("td", { class: "readings" });
  for (const f of d.readings) {
    readings.append(el("span", { class: "reading", "data-name": f.name },
      el("b", {}, f.name), " ", el("span", { class: "value" }, f.value),
      f.unit ? " " + f.unit : ""));
  }
  if (d.readings_time) readings.append(el("div", { class: "stamp" }, "at " + d.readings_time));
  else if (!d.readings.length) readings.append(d.online ? "waiting for a read-out" : "none");
  const rules = el("td", { class: "rules" });
  for (const r of d.rules) rules.append(el("div", { class: "rule " + (r.allow ? "allow" : "deny") }, ruleText(r)));
  if (!d.rules.length) rules.append("none");
  return el("tr", { "data-jid": d.jid },
    el("td", {}, d.jid, el("div", { class: "tags" }, d.tags),
      d.owner ? el("div", { class: "owner" }, "owner " + d.owner) : ""),
    el("td", { class: "state " + (d.online ? "online" : "offline") }, d.online ? "online" : "offline"),
    el("td", { class: "last-seen" }, d.online ? "now" : when(d.last_seen)),
    readings, rules);
}

function render(snap) {
  const body = $("devices").tBodies[0];
  body.replaceChildren(...snap.devices.map(row));
  const online = snap.devices.filter((d) => d.online).length;
  $("summary").textContent = `${snap.devices.length} devices, ${online} online` +
    (snap.truncated ? ` (first ${snap.devices.length} of ${snap.total})` : "");
}

function showLogin(message) {
  if (stream) stream.close();
  stream = null;
  $("devices-view").hidden = true;
  $("logout").hidden = true;
  $("who").textContent = "";
  $("login-form").hidden = false;
  $("login-error").textContent = message || "";
}

function live(on) {
  $("live").textContent = on ? "live" : "reconnecting";
  $("live").classList.toggle("on", on);
}

async function showDevices(user) {
  const r = await fetch("api/devices", { credentials: "same-origin" });
  if (r.status === 401) return showLogin("");
  if (!r.ok) return showLogin(`The server answered ${r.status}.`);
  render(await r.json());
  $("login-form").hidden = true;
  $("devices-view").hidden = false;
  $("logout").hidden = false;
  if (user) $("who").textContent = user;
  stream = new EventSource("events");
  stream.addEventListener("open", () => live(true));
  stream.addEventListener("devices", (e) => render(JSON.parse(e.data)));
  stream.addEventListener("logout", () => showLogin("Your session ended; log in again."));
  stream.addEventListener("error", async () => {
    live(false);
    // A closed stream is retried by the browser; a lost login is not worth retrying.
    const check = await fetch("api/devices", { credentials: "same-origin" });
    if (check.status === 401) showLogin("Your session ended; log in again.");
  });
}

$("login-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  $("login-error").textContent = "";
  const r = await fetch("login", {
    method: "POST", credentials: "same-origin", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ user: $("user").value, password: $("password").value }),
  });
  $("password").value = "";
  const body = await r.json().catch(() => ({}));
  if (!r.ok) return showLogin(body.error || `Login failed (${r.status}).`);
  showDevices(body.user);
});

$("logout").addEventListener("click", async () => {
  await fetch("logout", { method: "POST", credentials: "same-origin",
    headers: { "Content-Type": "application/json" }, body: "{}" });
  showLogin("Logged out.");
});

showDevices(null);
