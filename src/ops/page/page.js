// The operator's page: renders /status and /history. Everything that comes from the upstream
// or the config goes into the page as text (textContent, attribute values), never as markup,
// so an error message or a name cannot inject anything.
"use strict";

const REFRESH_MS = 5000;

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== undefined && v !== null) e.setAttribute(k, String(v));
  }
  for (const c of children) {
    if (c === undefined || c === null) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function svgEl(tag, attrs) {
  const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  return e;
}

function ago(seconds) {
  if (seconds === null || seconds === undefined) return "never";
  if (seconds < 120) return seconds + " s ago";
  if (seconds < 7200) return Math.round(seconds / 60) + " min ago";
  return Math.round(seconds / 3600) + " h ago";
}

function when(epoch) {
  if (!epoch) return "—";
  return new Date(epoch * 1000).toISOString().replace(".000Z", "Z");
}

function bytes(n) {
  if (n === null || n === undefined) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + units[i];
}

function row(dl, term, value, cls) {
  dl.append(el("dt", {}, term), el("dd", cls ? { class: cls } : {}, value));
}

// A line plot of serial (solid) and staleness (dashed) over the kept samples.
function plot(samples, title) {
  const fig = el("figure");
  const w = 600, h = 120, pad = 4;
  const svg = svgEl("svg", { viewBox: `0 0 ${w} ${h}`, role: "img", "aria-label": title });
  const known = samples.filter((s) => s.serial !== null);
  if (samples.length >= 2) {
    const t0 = samples[0].at, t1 = samples[samples.length - 1].at || t0 + 1;
    const x = (t) => pad + ((t - t0) / Math.max(1, t1 - t0)) * (w - 2 * pad);
    const line = (values, cls) => {
      const lo = Math.min(...values.map((v) => v[1])), hi = Math.max(...values.map((v) => v[1]));
      const y = (v) => h - pad - ((v - lo) / Math.max(1, hi - lo)) * (h - 2 * pad);
      const points = values.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
      svg.append(svgEl("polyline", { class: cls, points }));
    };
    if (known.length >= 2) line(known.map((s) => [s.at, s.serial]), "serial");
    const stale = samples.filter((s) => s.stale !== null);
    if (stale.length >= 2) line(stale.map((s) => [s.at, s.stale]), "stale");
  }
  if (samples.length < 2) {
    fig.append(el("figcaption", {}, "The plot of serial and staleness appears after a few minutes (one sample a minute, six hours kept)."));
    return fig;
  }
  const span = ago(samples[samples.length - 1].at - samples[0].at).replace(" ago", "");
  const serials = known.map((s) => s.serial);
  const range = serials.length ? ` Serial ${Math.min(...serials)} to ${Math.max(...serials)};` : "";
  const stales = samples.filter((s) => s.stale !== null).map((s) => s.stale);
  const worst = stales.length ? ` at most ${Math.max(...stales)} s without an answer.` : "";
  fig.append(svg, el("figcaption", {}, `Serial (solid) and seconds since the upstream answered (dashed), over the last ${span}.${range}${worst}`));
  return fig;
}

function lagTable(lag) {
  if (!lag || !lag.delta_requests) return el("p", {}, "No delta requests from RPs yet.");
  const bounds = Object.keys(lag.lag_at_most).sort((a, b) => a - b);
  const head = el("tr", {}, el("th", { scope: "row" }, "serials behind ≤"), ...bounds.map((b) => el("th", { scope: "col" }, b)));
  const counts = el("tr", {}, el("th", { scope: "row" }, "delta requests"), ...bounds.map((b) => el("td", {}, lag.lag_at_most[b])));
  return el("table", { "aria-label": "How far behind the RPs asking for deltas are (cumulative)" }, head, counts);
}

// In how long something runs out, or how long ago it did.
function until(seconds) {
  if (seconds < 0) return ago(-seconds).replace(" ago", "") + " ago";
  if (seconds < 7200) return "in " + Math.round(seconds / 60) + " min";
  if (seconds < 172800) return "in " + Math.round(seconds / 3600) + " h";
  return "in " + Math.round(seconds / 86400) + " days";
}

// What RPKI validation found at the last validated serial, and what runs out first.
function rpki(dl, v) {
  if (!v || v.mode === "off") {
    row(dl, "RPKI objects", "not validated (validate = \"off\")");
    return;
  }
  const last = v.last;
  if (!last) {
    row(dl, "RPKI objects", `validate = "${v.mode}": no serial validated yet`);
    return;
  }
  let text, cls = null;
  if (last.error) {
    text = `could not validate serial ${last.serial}: ${last.error}`;
    cls = "bad";
  } else if (!last.points) {
    text = `serial ${last.serial}: no manifest, so no publication point to validate`;
  } else if (!last.findings) {
    text = `serial ${last.serial}: nothing an RP would reject in ${last.points} publication point(s) (${last.points_from_anchor} from a TAL), validate = "${v.mode}"`;
  } else {
    const first = (last.details || [])[0];
    text = `serial ${last.serial}: ${last.findings} finding(s)` + (last.refused ? ", refused: the previous serial stays served" : ", published (validate = \"warn\")") +
      (first ? ` — ${first.uri}: ${first.check} (${first.detail})` : "");
    cls = last.refused ? "bad" : "warn";
  }
  if (last.pre_validate && !last.pre_validate.ok) {
    text += ` — pre_validate: ${last.pre_validate.detail}`;
    cls = "bad";
  }
  row(dl, "RPKI objects", text, cls);
  const h = v.health;
  if (!h) return;
  const counts = Object.entries(h.objects).map(([k, n]) => `${n} ${k}`).join(", ");
  row(dl, "RPKI contents", counts || "no objects");
  if (h.manifest_next_update) {
    const m = h.manifest_next_update;
    row(dl, "First manifest to expire", `${until(m.seconds_left)}: ${m.uri}`, m.seconds_left < 4 * 3600 ? (m.seconds_left < 0 ? "bad" : "warn") : null);
  }
  if (h.expiring_certificates) {
    const d = h.expiring_soonest[0];
    row(dl, "Certificates expiring", `${h.expiring_certificates} within ${Math.round(h.expiry_window_seconds / 86400)} days` + (d ? `, first ${when(d.at)}: ${d.uri}` : ""), "warn");
  }
  if (h.stale_manifests || h.missing_manifests) {
    row(dl, "Stale or missing manifests", `${h.stale_manifests} stale, ${h.missing_manifests} missing`, "bad");
  }
}

// The headline says both things an operator asks first: is every repository served, and is
// every upstream answering (a node serving its last good state is healthy for the load
// balancer, and still needs the operator).
function headline(status) {
  const repos = status.repositories || [];
  const served = repos.filter((r) => r.serial !== null && r.serial !== undefined).length;
  const failing = repos.filter((r) => r.last_error);
  const n = repos.length;
  const what = n === 1 ? "repository" : "repositories";
  let text = (status.healthy ? "Healthy: " : "Unhealthy: ") +
    (served === n ? (n === 1 ? "the repository is served" : `all ${n} repositories are served`) : `${served} of ${n} ${what} served`);
  if (failing.length) {
    const since = Math.min(...failing.map((r) => r.last_error_since || Infinity));
    text += `; ${failing.length} of ${n} upstream${n === 1 ? "" : "s"} failing` +
      (Number.isFinite(since) ? ` since ${when(since)}` : "") + " (serving the last good state)";
  } else {
    text += "; every upstream answering";
  }
  const state = !status.healthy ? "bad" : failing.length ? "warn" : "ok";
  return { state, text: text + "." };
}

function repository(r, samples) {
  const ok = !r.last_error;
  const id = "repo-" + (r.public || "").replace(/[^A-Za-z0-9]/g, "-");
  const section = el("section", { class: "repo", "aria-labelledby": id, "data-public": r.public, "data-serial": r.serial });
  section.append(el("h2", { id }, r.public));
  const state = el("p", { class: "state " + (ok ? "ok" : "bad") },
    ok ? "Current: the upstream answered " + ago(r.seconds_stale)
      : r.serial === null || r.serial === undefined ? "Upstream failing — nothing to serve yet"
      : "Upstream failing — serving the last good state");
  section.append(state);
  if (!ok) {
    section.append(el("p", { class: "error", role: "alert" },
      el("strong", {}, (r.last_error_reason || "error") + ": "), r.last_error,
      r.last_error_since ? ` (since ${when(r.last_error_since)})` : ""));
  }
  const dl = el("dl");
  row(dl, "Session", r.session_id || "—");
  row(dl, "Serial", r.serial === null ? "nothing published yet" : r.serial, r.serial === null ? "bad" : null);
  row(dl, "Upstream", r.upstream);
  row(dl, "Upstream last answered", r.last_success ? `${when(r.last_success)} (${ago(r.seconds_stale)})` : "never", r.seconds_stale > 600 ? "warn" : null);
  const history = r.delta_history;
  row(dl, "Deltas listed", !history ? "—" : history.entries ? `${history.entries} (back to serial ${history.oldest_serial})` : "none");
  row(dl, "Servable files", r.servable_files ?? "—");
  if (r.serial !== null) {
    row(dl, "Gzip variants", r.compressed_serial === r.serial ? "made for the current serial" : (r.compressed_serial === null ? "not yet" : `made for serial ${r.compressed_serial} (the current one's in progress)`));
  }
  if (r.exported_serial !== null && r.exported_serial !== undefined) row(dl, "Exported serial", r.exported_serial);
  if (r.erik_serial !== null && r.erik_serial !== undefined) row(dl, "Erik serial", r.erik_serial, r.erik_serial === r.serial ? null : "warn");
  row(dl, "Polls", `${r.polls_ok} ok, ${r.polls_failed} failed`);
  if (r.last_publish_seconds !== null && r.last_publish_seconds !== undefined) row(dl, "Last publish took", r.last_publish_seconds.toFixed(2) + " s");
  rpki(dl, r.validation);
  section.append(dl);
  section.append(plot(samples || [], "Serial and staleness of " + r.public));
  const snaps = r.rp_lag ? r.rp_lag.snapshot_downloads : null;
  section.append(el("h3", {}, "What the RPs lag"), lagTable(r.rp_lag));
  if (snaps) {
    section.append(el("p", {}, `Snapshot downloads: ${snaps.available} by clients that had a delta path, ${snaps.none} by clients behind the history, ${snaps.unknown} unknown.`));
  }
  return section;
}

// With server.admin_token set, the page is opened as /#token=<token>: the fragment never
// leaves the browser, and the data requests carry it as a bearer token.
const token = new URLSearchParams(location.hash.slice(1)).get("token");
const asked = { cache: "no-store", headers: token ? { Authorization: "Bearer " + token } : {} };

async function refresh() {
  try {
    const [status, history] = await Promise.all([
      fetch("/status", asked).then((r) => r.json()),
      fetch("/history", asked).then((r) => r.json()),
    ]);
    const samples = {};
    for (const h of history.repositories || []) samples[h.public] = h.samples;
    const main = document.getElementById("repositories");
    main.replaceChildren(...status.repositories.map((r) => repository(r, samples[r.public])));
    const overall = document.getElementById("overall");
    const h = headline(status);
    overall.className = "state " + h.state;
    overall.textContent = h.text;
    const cache = document.getElementById("cache");
    cache.replaceChildren();
    row(cache, "On disk", `${bytes(status.cache.disk_bytes)} in ${status.cache.disk_objects} objects` + (status.cache.disk_limit ? ` (limit ${bytes(status.cache.disk_limit)})` : ""));
    row(cache, "In memory", `${bytes(status.cache.memory_bytes)} in ${status.cache.memory_objects} objects`);
    row(cache, "Version", status.version);
    if (status.erik) {
      // server.erik: each FQDN's index, as an Erik client would find it.
      for (const f of status.erik.fqdns) {
        row(cache, "Erik index " + f.fqdn, `${f.partitions} partition(s), ${f.manifests} manifest(s); indexTime ${when(f.index_time)}`);
      }
      if (!status.erik.fqdns.length) row(cache, "Erik", "on; no index yet", "warn");
    }
    document.getElementById("updated").textContent = "Updated " + new Date().toISOString();
  } catch (e) {
    const overall = document.getElementById("overall");
    overall.className = "state bad";
    overall.textContent = "Cannot reach the admin listener: " + e;
  }
}

refresh();
setInterval(refresh, REFRESH_MS);
