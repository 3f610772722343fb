"use strict";
// Gantry's state board: what runs where (deploy's API), what failed (versioning's pipelines, deploy's
// last deployments), the chains and dead letters the gateway keeps; the viewer's token on every call.
const $ = (id) => document.getElementById(id);
const state = { token: "", viewer: null, services: [], source: null, refreshSoon: null, poll: null };
const MAX_EVENT_ROWS = 300;

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (key === "class") node.className = value;
    else if (key === "data") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value !== undefined && value !== null && value !== false) node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined && child !== false) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function when(iso) { return iso ? String(iso).replace("T", " ").replace(/(\.\d{3})\d*/, "$1").slice(0, 23) : ""; }
function ms(n) { return n >= 1000 ? `${(n / 1000).toFixed(3)} s` : `${n} ms`; }
function setStatus(text, cls) { $("status").textContent = text; $("status").className = cls || ""; }
function emptyRow(body, columns, text) { body.replaceChildren(el("tr", {}, el("td", { colspan: columns, class: "empty" }, text))); }

async function api(path, options = {}) {
  const headers = { Authorization: `Bearer ${state.token}`, ...(options.body ? { "Content-Type": "application/json" } : {}) };
  const response = await fetch(path, { ...options, headers });
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    const detail = body && body.detail;
    const text = Array.isArray(detail) ? detail.map((d) => d.msg || JSON.stringify(d)).join("; ") : detail;
    throw new Error(text || `the gateway answered ${response.status}`);
  }
  return body;
}

// ---- the board: matrix, failures, chains, dead letters ----

function environmentsOf(services) {
  const names = new Set();
  for (const service of services) for (const env of service.environments) names.add(env.environment);
  return [...names].sort();
}

function renderMatrix(services) {
  const table = $("matrix");
  const environments = environmentsOf(services);
  table.tHead.replaceChildren(el("tr", {}, el("th", {}, "service"), environments.map((name) => el("th", {}, name))));
  const body = table.tBodies[0];
  if (!services.length) { emptyRow(body, environments.length + 1, "No service is released anywhere yet."); return; }
  body.replaceChildren(...services.map((service) => el("tr", { data: { project: service.project, service: service.service } },
    el("td", {}, el("a", { class: "service", href: `#/service/${encodeURIComponent(service.project)}/${encodeURIComponent(service.service)}` },
      `${service.project}/${service.service}`), el("div", { class: "small" }, service.state)),
    environments.map((name) => matrixCell(service, service.environments.find((env) => env.environment === name))))));
}

function matrixCell(service, env) {
  const attrs = { class: "cell", data: { project: service.project, service: service.service, environment: env ? env.environment : "" } };
  if (!env) return el("td", { ...attrs, class: "cell none" }, "—");
  const last = env.last_deployment;
  return el("td", attrs,
    track(env.stable, "stable"), track(env.canary, "canary"),
    !env.stable && !env.canary ? el("div", { class: "small" }, "released, not running") : null,
    last ? el("div", { class: "small" }, `last: ${last.action} ${last.version} `,
      el("span", { class: `state-${last.state}` }, last.state), ` · ${last.trigger} by ${last.by} · ${when(last.created_at)}`) : null,
    env.auto_deploy ? el("span", { class: "badge" }, "auto-deploy") : null);
}

function track(t, kind) {
  if (!t) return null;
  const counts = t.available === null || t.available === undefined ? `${t.replicas} desired` : `${t.available}/${t.desired ?? t.replicas} available`;
  return el("div", { class: `track-${kind}` },
    el("span", { class: `version ${kind}` }, t.version), kind === "canary" ? el("span", { class: "badge canary" }, "canary") : null,
    " ", el("span", { class: "small replicas" }, counts), " ", el("span", { class: `small state-${t.state}` }, t.state));
}

function renderFailedDeployments(services) {
  const body = $("failed-deployments");
  const failed = [];
  for (const service of services) for (const env of service.environments) {
    if (env.last_deployment && env.last_deployment.state === "failed") failed.push([service, env.last_deployment]);
  }
  if (!failed.length) { emptyRow(body, 5, "None."); return; }
  body.replaceChildren(...failed.map(([service, d]) => el("tr", { class: "failed-deployment" },
    el("td", {}, `${service.project}/${service.service}`), el("td", {}, d.environment), el("td", { class: "mono" }, d.version),
    el("td", { class: "failed" }, d.message || "failed"), el("td", { class: "time" }, when(d.finished_at || d.created_at)))));
}

function renderPipelines(pipelines) {
  const body = $("pipelines");
  if (!pipelines.length) { emptyRow(body, 5, "None."); return; }
  body.replaceChildren(...pipelines.map((p) => {
    const jobs = p.stages.flatMap((stage) => stage.jobs.filter((job) => job.latest && job.status === "failed").map((job) => `${stage.name}: ${job.name}`));
    return el("tr", { class: "failed-pipeline" }, el("td", {}, `${p.project}/${p.service}`),
      el("td", { class: "mono" }, p.url ? el("a", { href: p.url }, `#${p.pipeline_id}`) : `#${p.pipeline_id}`),
      el("td", { class: "mono" }, p.ref), el("td", { class: "failed" }, jobs.join(", ") || p.status),
      el("td", { class: "time" }, when(p.finished_at || p.updated_at)));
  }));
}

function renderChains(chains, box = $("chains")) {
  if (!chains.length) { box.replaceChildren(el("p", { class: "empty" }, "No chain yet.")); return; }
  box.replaceChildren(...chains.map((chain) => {
    const span = Math.max(chain.duration_ms, 1);
    let previous = 0;
    const hops = chain.hops.map((hop) => {
      const left = (previous / span) * 100, width = Math.max(((hop.at_ms - previous) / span) * 100, 0.4);
      const row = el("div", { class: `hop${hop.failed ? " failed" : ""}`, data: { topic: hop.topic }, title: hop.summary },
        el("span", { class: "label" }, `${hop.type}${hop.summary ? " · " + hop.summary : ""}`),
        el("div", { class: "track" }, el("div", { class: "bar", style: `left:${left}%;width:${Math.min(width, 100 - left)}%` })),
        el("span", { class: "when" }, `+${ms(hop.at_ms)} · ${when(hop.time).slice(11)}`));
      previous = hop.at_ms;
      return row;
    });
    return el("div", { class: `chain${chain.failed ? " failed" : ""}`, data: { correlation: chain.correlation_id } },
      el("div", { class: "chain-head" }, el("strong", {}, chain.project ? `${chain.project}/${chain.service}` : "(no service)"),
        el("span", { class: "mono small" }, chain.correlation_id), el("span", { class: "small" }, `${chain.hops.length} hop${chain.hops.length === 1 ? "" : "s"} in ${ms(chain.duration_ms)}, from ${when(chain.started_at)}`),
        chain.failed ? el("span", { class: "badge bad" }, "failed") : null),
      hops);
  }));
}

function renderDeadLetters(letters) {
  const body = $("dead-letters");
  if (!letters.length) { emptyRow(body, 5, "None."); return; }
  const mayDecide = state.viewer && state.viewer.may_decide_dead_letters;
  body.replaceChildren(...letters.map((d) => {
    const address = `dlq/${encodeURIComponent(d.topic)}/${d.partition}/${d.offset}`;
    const decision = d.decision ? `${d.decision} by ${d.decided_by}` : mayDecide
      ? el("span", { class: "actions" }, el("button", { class: "quiet", onclick: () => decide(`${address}/retry`, "POST") }, "Retry"),
        el("button", { class: "danger", onclick: () => decide(address, "DELETE") }, "Discard"))
      : "waiting for an org admin";
    return el("tr", { class: "dead-letter" }, el("td", { class: "time" }, when(d.failed_at)), el("td", { class: "mono" }, d.original_topic, d.consumer ? el("div", { class: "small" }, `given up by ${d.consumer}`) : null),
      el("td", {}, el("strong", {}, d.headline), el("ul", { class: "errors" }, d.errors.map((e) => el("li", {}, e)))),
      el("td", { class: "small" }, d.event_type || "", d.correlation_id ? el("div", { class: "mono" }, d.correlation_id.slice(0, 8)) : null),
      el("td", {}, decision));
  }));
}

async function decide(path, method) {
  try { await api(path, { method }); } catch (error) { alert(error.message); }
  refresh();
}

async function loadBoard() {
  const parts = await Promise.allSettled([
    api("api/deploy/services?limit=500").then((services) => { state.services = services; renderMatrix(services); renderFailedDeployments(services); }),
    api("api/versioning/pipelines?status=failed&limit=20").then(renderPipelines),
    api("chains?limit=20").then(renderChains),
    api("dlq?limit=50").then(renderDeadLetters),
  ]);
  const failed = parts.filter((p) => p.status === "rejected").map((p) => p.reason.message);
  if (failed.length) setStatus(failed[0], "down");
  if (state.viewer && state.viewer.reads_every_project) loadAudit();
}

// ---- a service's page: its environments, history and the actions its viewer may take ----

async function loadService(project, service) {
  $("service-title").replaceChildren(`${project}/${service}`, el("a", { href: "#/", class: "small" }, "back to the board"));
  const box = $("environments");
  let detail;
  try { detail = await api(`api/deploy/services/${encodeURIComponent(project)}/${encodeURIComponent(service)}`); } catch (error) {
    box.replaceChildren(el("p", { class: "error" }, error.message)); return;
  }
  const mayAct = state.viewer && state.viewer.may_deploy;
  $("service-note").textContent = mayAct ? "" : "Read-only: deploying, rolling back, scaling and canary decisions need the deploy-admin or org-admin role.";
  box.replaceChildren(...detail.environments.map((env) => environmentPanel(project, service, env, mayAct)));
  const path = `api/versioning/projects/${encodeURIComponent(project)}/services/${encodeURIComponent(service)}/pipelines?limit=10`;
  api(path).then((pipelines) => renderServicePipelines(pipelines)).catch((error) => emptyRow($("service-pipelines"), 5, error.message));
  api("chains?limit=100").then((chains) => renderChains(chains.filter((c) => c.project === project && c.service === service).slice(0, 10), $("service-chains")))
    .catch((error) => $("service-chains").replaceChildren(el("p", { class: "error" }, error.message)));
}

function renderServicePipelines(pipelines) {
  const body = $("service-pipelines");
  if (!pipelines.length) { emptyRow(body, 5, "No pipeline yet."); return; }
  body.replaceChildren(...pipelines.map((p) => el("tr", { class: `pipeline ${p.status === "failed" ? "failed-pipeline" : ""}` },
    el("td", { class: "mono" }, `#${p.pipeline_id}`), el("td", { class: "mono" }, p.ref), el("td", { class: p.status === "failed" ? "failed" : p.status === "success" ? "succeeded" : "" }, p.status),
    el("td", { class: "mono" }, p.version || p.no_version_reason || ""), el("td", { class: "time" }, when(p.finished_at || p.updated_at)))));
}

function environmentPanel(project, service, env, mayAct) {
  return el("div", { class: "env", data: { environment: env.environment } },
    el("h3", {}, env.environment, " ", el("span", { class: "small" }, `namespace ${env.namespace}`)),
    track(env.stable, "stable") || el("div", { class: "small" }, "nothing runs here"), track(env.canary, "canary"),
    mayAct ? actions(project, service, env) : null,
    el("table", {}, el("thead", {}, el("tr", {}, ["when", "action", "version", "track", "trigger", "by", "state", "message"].map((h) => el("th", {}, h)))),
      el("tbody", {}, env.deployments.map((d) => el("tr", { class: "deployment" }, el("td", { class: "time" }, when(d.created_at)), el("td", {}, d.action),
        el("td", { class: "mono" }, d.version), el("td", {}, d.track), el("td", {}, d.trigger), el("td", {}, d.by),
        el("td", { class: `state-${d.state}` }, d.state), el("td", { class: "small" }, d.message))))));
}

function actions(project, service, env) {
  const base = `api/deploy/environments/${encodeURIComponent(env.environment)}/projects/${encodeURIComponent(project)}/services/${encodeURIComponent(service)}`;
  const versions = el("select", { "aria-label": "version" }, env.versions.map((v) => el("option", { value: v.version }, v.version)));
  const replicas = el("input", { type: "number", min: "1", value: String(env.stable ? env.stable.replicas : 1), size: "3", "aria-label": "replicas" });
  const act = (label, path, method, body, cls) => el("button", { class: cls ?? "quiet", "data-action": label, onclick: () => run(path, method, body && body()) }, label);
  return el("div", { class: "actions" },
    versions, act("Deploy", "api/deploy/deployments", "POST", () => ({ project, service, environment: env.environment, version: versions.value }), ""),
    act("Rollback", `${base}/rollback`, "POST"),
    replicas, act("Scale", `${base}/replicas`, "PUT", () => ({ replicas: Number(replicas.value) })),
    env.canary ? act("Promote canary", `${base}/canary/promote`, "POST") : null,
    env.canary ? act("Abort canary", `${base}/canary/abort`, "POST", null, "danger") : null);
}

async function run(path, method, body) {
  try {
    const deployment = await api(path, { method, body: body ? JSON.stringify(body) : undefined });
    setStatus(`${deployment.action} ${deployment.version} to ${deployment.environment}: ${deployment.state}`, "live");
  } catch (error) { setStatus(error.message, "down"); }
  route();
}

// ---- organization roles: the audit trail and the live events ----

async function loadAudit() {
  const params = new URLSearchParams({ limit: "50" });
  if ($("audit-filter").value.trim()) params.set("environment", $("audit-filter").value.trim());
  const body = $("audit");
  let entries;
  try { entries = await api(`audit?${params}`); } catch (error) { emptyRow(body, 6, error.message); return; }
  if (!entries.length) { emptyRow(body, 6, "Nothing on record yet."); return; }
  body.replaceChildren(...entries.map((entry) => {
    const kind = entry.outcome >= 500 ? "failed" : entry.outcome >= 400 ? "refused" : "succeeded";
    return el("tr", {}, el("td", { class: "time" }, when(entry.at)), el("td", { title: entry.roles.join(", ") }, entry.actor || "(no valid token)"),
      el("td", { title: `${entry.method} ${entry.path}` }, entry.action),
      el("td", {}, Object.entries(entry.target).map(([key, value]) => `${key}=${value}`).join(" ")),
      el("td", { class: kind }, entry.outcome), el("td", {}, entry.reason || ""));
  }));
}

const seenEvents = new Set();
function addEventRow(topic, event) {
  const seen = `${topic}:${event.id || event.failed_at}`;
  if (seenEvents.has(seen)) return;
  seenEvents.add(seen);
  const rows = $("rows");
  if (rows.querySelector(".empty")) rows.replaceChildren();
  const data = event.data || {};
  const summary = topic.endsWith(".dlq") ? event.reason : [data.version, data.environment, data.state, data.action, data.message].filter(Boolean).join(" · ");
  rows.prepend(el("tr", { class: "event" }, el("td", { class: "time" }, when(event.time || event.failed_at)), el("td", { class: "mono" }, topic),
    el("td", {}, event.subject || ""), el("td", {}, summary || ""), el("td", { class: "cid", title: event.correlation_id || "" }, (event.correlation_id || "").slice(0, 8))));
  while (rows.rows.length > MAX_EVENT_ROWS) rows.deleteRow(-1);
}

function listen() {
  const source = new EventSource(`events?${new URLSearchParams({ access_token: state.token })}`);
  state.source = source;
  source.onopen = () => setStatus("live", "live");
  source.onerror = () => setStatus("disconnected, retrying…", "down");
  source.onmessage = null;
  const onEvent = (message) => { addEventRow(message.type, JSON.parse(message.data)); refreshLater(); };
  for (const name of TOPICS) source.addEventListener(name, onEvent);
}

// ---- connecting and routing ----

function refreshLater() { clearTimeout(state.refreshSoon); state.refreshSoon = setTimeout(refresh, 1500); }
function refresh() { route(); }

function route() {
  const match = location.hash.match(/^#\/service\/([^/]+)\/([^/]+)$/);
  $("board-view").hidden = Boolean(match);
  $("service-view").hidden = !match;
  if (!state.viewer) return;
  if (match) loadService(decodeURIComponent(match[1]), decodeURIComponent(match[2]));
  else loadBoard();
}

async function connect() {
  state.token = $("token").value.trim();
  localStorage.setItem("gantry.token", state.token);
  if (state.source) state.source.close();
  clearInterval(state.poll);
  if (!state.token) { setStatus("enter a token to connect", "down"); return; }
  try { state.viewer = await api("me"); } catch (error) { state.viewer = null; setStatus(error.message, "down"); return; }
  const v = state.viewer;
  $("viewer").textContent = `${v.user} · ${v.roles.join(", ")}${v.reads_every_project ? "" : " · read-only: " + v.projects.join(", ")}`;
  $("org-only").hidden = !v.reads_every_project;
  if (v.reads_every_project) {
    listen();
    api("events/recent?limit=50").then((items) => { for (const item of items) addEventRow(item.topic, item.event || {}); }).catch(() => {});
  }
  else { setStatus("read-only view, refreshed every 10 s", "live"); state.poll = setInterval(refresh, 10000); }
  route();
}

// A link may carry the token in its fragment (never sent to the server), and the view to open:
// /#token=…&view=/service/shop/web
const linked = new URLSearchParams(location.hash.slice(1));
if (linked.get("token")) {
  localStorage.setItem("gantry.token", linked.get("token"));
  history.replaceState(null, "", `${location.pathname}${location.search}#${linked.get("view") || "/"}`);
}
$("token").value = localStorage.getItem("gantry.token") || "";
$("connect").addEventListener("click", connect);
$("refresh").addEventListener("click", refresh);
$("audit-refresh").addEventListener("click", loadAudit);
$("audit-filter").addEventListener("keydown", (e) => { if (e.key === "Enter") loadAudit(); });
$("token").addEventListener("keydown", (e) => { if (e.key === "Enter") connect(); });
window.addEventListener("hashchange", route);
if ($("token").value) connect(); else route();
