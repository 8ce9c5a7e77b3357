// The dr-gateway dashboard: asks /api/v1/overview for the fleet's figures every refresh_s
// seconds (the server says how often) and redraws the tables. Plain DOM, no libraries; data
// goes in as text only (textContent), never as markup.
"use strict";

(function () {
  const OVERVIEW_URL = "/api/v1/overview";
  const RETRY_S = 5;

  function el(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }

  function row(cells, data) {
    const tr = document.createElement("tr");
    for (const [key, value] of Object.entries(data || {})) tr.dataset[key] = value;
    for (const cell of cells) tr.appendChild(cell instanceof Node ? cell : el("td", cell));
    return tr;
  }

  function number(value, digits) {
    if (value === null || value === undefined) return "\u2013";
    return Number(value).toFixed(digits);
  }

  function percent(value) {
    return value === null || value === undefined ? "\u2013" : (100 * value).toFixed(0) + " %";
  }

  function when(iso) {
    if (!iso) return "\u2013";
    return iso.replace("T", " ").replace(/(\.\d+)?Z$/, "");
  }

  function shortId(id) {
    return id.length > 12 ? id.slice(0, 12) + "\u2026" : id;
  }

  function kwh(value) {
    // Energy with two decimals while small, whole kWh once large [kWh].
    if (value === null || value === undefined) return "\u2013";
    return number(value, Math.abs(value) < 100 ? 2 : 0);
  }

  function fill(tableId, rows) {
    // Replace a table's rows; its "none" note shows when there are none.
    document.querySelector("#" + tableId + " tbody").replaceChildren(...rows);
    document.getElementById(tableId + "-empty").hidden = rows.length > 0;
  }

  function setText(id, text) {
    document.getElementById(id).textContent = text;
  }

  function bars(site) {
    // Renewable power against load, both on the scale of the larger of the two and of the
    // site's maximum facility power.
    const cell = el("td", null, "bars");
    const scale = Math.max(site.it_power_max_kw * site.pue, site.renewable_kw || 0,
      site.load_kw || 0, 1e-9);
    for (const [kind, value] of [["renewable", site.renewable_kw], ["load", site.load_kw]]) {
      const track = el("div", null, "track");
      const bar = el("div", null, "bar " + kind);
      bar.style.width = (100 * Math.max(0, value || 0) / scale).toFixed(1) + "%";
      bar.title = kind + " " + number(value, 2) + " kW";
      track.appendChild(bar);
      cell.appendChild(track);
    }
    return cell;
  }

  function renderSites(sites, energy) {
    const rows = sites.map((site) => {
      const e = energy.by_site[site.site_id] || {};
      return row([
        site.site_id,
        el("td", site.online ? "online" : "offline", site.online ? "ok" : "bad"),
        bars(site),
        number(site.renewable_kw, 1),
        number(site.load_kw, 1),
        site.gpus_free === null ? "\u2013" : site.gpus_free + " / " + site.gpus_total,
        site.jobs_running,
        kwh(e.renewable_used_kwh),
        kwh(e.grid_kwh),
        kwh(e.curtailed_kwh),
        kwh(e.captured_surplus_kwh),
        percent(e.renewable_share),
        when(site.last_status_at),
      ], { siteId: site.site_id, online: String(site.online) });
    });
    fill("sites", rows);
  }

  function progress(migration, states) {
    const cell = el("td", null, "progress");
    const steps = states.filter((s) => s !== "aborted");
    const at = steps.indexOf(migration.state);
    steps.forEach((state, i) => {
      const step = el("span", state.replace("_", " "), "step");
      if (i < at) step.classList.add("done");
      if (i === at) step.classList.add("current");
      cell.appendChild(step);
    });
    return cell;
  }

  function renderMigrations(migrations) {
    const inFlight = migrations.in_flight.map((m) => row([
      el("td", shortId(m.migration_id), "id"),
      m.job_id,
      m.source_site_id,
      m.target_site_id,
      el("td", m.state, "state"),
      progress(m, migrations.states),
      when(m.state_times[m.state]),
      number(m.checkpoint_gb, 1),
      m.event_ref ? m.reason + " (" + m.event_ref + ")" : m.reason,
    ], { migrationId: m.migration_id, state: m.state }));
    fill("migrations-in-flight", inFlight);
    setText("migrations-in-flight-count", String(inFlight.length));

    const recent = migrations.recent.map((m) => row([
      el("td", shortId(m.migration_id), "id"),
      m.job_id,
      m.source_site_id,
      m.target_site_id,
      el("td", m.state, m.state === "completed" ? "ok" : "bad"),
      when(m.state_times[m.state]),
      number(m.downtime_s, 0),
      number(m.migration_kwh, 3),
      m.error || m.reason,
    ], { migrationId: m.migration_id, state: m.state }));
    fill("migrations-recent", recent);
  }

  function renderJobs(jobs) {
    const rows = jobs.map((j) => row([
      j.job_id,
      j.site_id || "\u2013",
      j.state,
      j.gpus,
      number(j.power_kw, 2),
      number(j.checkpoint_gb, 1),
      number(j.work_remaining_gpu_h, 1),
      j.migratable ? "yes" : "no",
      when(j.arrived_at_site_at),
    ], { jobId: j.job_id, state: j.state }));
    fill("jobs", rows);
  }

  function renderEvents(events) {
    const rows = events.map((e) => row([
      e.vtn_id,
      e.event_id + (e.modification_number ? " #" + e.modification_number : ""),
      e.status,
      e.signals.join(", "),
      e.resource_ids.length ? e.resource_ids.join(", ") : "all",
      when(e.start_at),
      when(e.end_at),
      el("td", e.opt || "\u2013", e.opt === "optIn" ? "ok" : (e.opt ? "bad" : "")),
      e.reason || "\u2013",
      e.sent_at ? "yes" : (e.opt ? "not yet" : "\u2013"),
    ], { eventId: e.event_id, opt: e.opt || "" }));
    fill("events", rows);
  }

  function renderSummary(data) {
    const online = data.sites.filter((s) => s.online).length;
    setText("sites-online", online + " / " + data.sites.length);
    setText("captured-kwh", kwh(data.energy.fleet.captured_surplus_kwh) + " kWh");
    setText("captured-today-kwh", kwh(data.energy.today.captured_surplus_kwh) + " kWh");
    setText("renewable-share", percent(data.energy.fleet.renewable_share));
    setText("grid-kwh", kwh(data.energy.fleet.grid_kwh) + " kWh");
  }

  function showStatus(text, failed) {
    const status = document.getElementById("status");
    status.textContent = text;
    status.classList.toggle("bad", Boolean(failed));
  }

  async function refresh() {
    let nextS = RETRY_S;
    try {
      const response = await fetch(OVERVIEW_URL, {
        credentials: "same-origin",
        cache: "no-store",
        headers: { Accept: "application/json" },
      });
      if (response.status === 401) {
        showStatus("not signed in: open this page as /?token=YOUR_TOKEN", true);
        return; // asking again without a token cannot help
      }
      if (!response.ok) throw new Error("HTTP " + response.status);
      const data = await response.json();
      renderSummary(data);
      renderSites(data.sites, data.energy);
      renderMigrations(data.migrations);
      renderJobs(data.jobs);
      renderEvents(data.events);
      document.body.dataset.generatedAt = data.generated_at;
      showStatus("as of " + when(data.generated_at) + " UTC, every " + data.refresh_s + " s");
      nextS = data.refresh_s;
    } catch (error) {
      showStatus("could not refresh (" + error.message + "); trying again", true);
    }
    window.setTimeout(refresh, 1000 * nextS);
  }

  refresh();
})();
