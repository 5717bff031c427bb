// The dashboard: the flows of a namespace, and a flow's DAG with a side panel for a work. Routes live
// in the URL's fragment: #/ns/NAMESPACE, #/ns/NAMESPACE/flows/FLOW, #/ns/NAMESPACE/flows/FLOW/runs/N.
// One server-sent event stream per page brings every change of the namespace's flows.
import { drawGraph } from "./graph.js";
import { ApiError, age, clock, escapeHtml, getJson, phaseLabel, postJson, time } from "./util.js";

const view = document.getElementById("view");
const live = document.getElementById("live");
const namespaceInput = document.getElementById("namespace");
let page = null; // the page shown: {close()}
let defaultNamespace = "default";
let csrfToken = ""; // from api/config: sent back with each decision on a gate

function route() {
  const parts = location.hash.replace(/^#\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
  if (parts[0] !== "ns" || !parts[1]) return { namespace: defaultNamespace };
  const [, namespace, section, flow, runs, run] = parts;
  if (section === "flows" && flow) return { namespace, flow, run: runs === "runs" ? Number(run) : null };
  return { namespace };
}

function show() {
  if (page) page.close();
  const where = route();
  namespaceInput.value = where.namespace;
  document.body.dataset.ready = "";
  page = where.flow ? flowPage(where) : flowsPage(where);
}

// The namespace's live stream: `handlers` get the snapshot, each flow's change and deletions.
function subscribe(namespace, handlers) {
  const source = new EventSource(`api/namespaces/${encodeURIComponent(namespace)}/stream`);
  const state = (name) => {
    live.dataset.state = name;
    live.textContent = name;
  };
  state("connecting");
  source.addEventListener("open", () => state("live"));
  source.addEventListener("snapshot", (event) => {
    state("live");
    handlers.snapshot(JSON.parse(event.data));
  });
  source.addEventListener("flow", (event) => handlers.flow(JSON.parse(event.data)));
  source.addEventListener("deleted", (event) => handlers.deleted(JSON.parse(event.data)));
  source.addEventListener("forbidden", () => {
    source.close();
    state("closed");
    handlers.forbidden();
  });
  source.addEventListener("error", () => {
    if (source.readyState === EventSource.CLOSED) state("closed");
    else state("reconnecting");
  });
  return () => {
    source.close();
    state("closed");
  };
}

function denied(error, namespace) {
  const message =
    error instanceof ApiError && (error.status === 403 || error.status === 401)
      ? `You may not read DAGFlows in namespace ${namespace}.`
      : `Could not read namespace ${namespace}: ${error.message}`;
  view.innerHTML = `<p class="error" data-role="error">${escapeHtml(message)}</p>`;
  document.body.dataset.ready = "error";
}

function phaseBadge(phase, queued) {
  const mark = queued ? ` data-queued="${escapeHtml(queued)}"` : "";
  return `<span class="phase" data-phase="${escapeHtml(phase)}"${mark}>${escapeHtml(phaseLabel(phase, queued))}</span>`;
}

// How many works of the flow wait for Kueue to admit their Jobs, when any do.
function queuedCount(queued) {
  return queued ? `<span class="queued" data-role="queued">${queued} queued</span>` : "";
}

// How many gates of the flow wait for someone's approval, when any do.
function waitingCount(waiting) {
  return waiting ? `<span class="waiting" data-role="waiting">${waiting} waiting for approval</span>` : "";
}

function progressBar(done, total) {
  const percent = total ? Math.round((100 * done) / total) : 0;
  return (
    `<span class="progress" title="${done}/${total}"><span class="bar"><span data-percent="${percent}"></span>` +
    `</span><span class="count">${done}/${total}</span></span>`
  );
}

// The bars' widths, set through the DOM: the Content-Security-Policy refuses inline style attributes.
function sizeBars(root) {
  for (const bar of root.querySelectorAll(".progress .bar span[data-percent]")) {
    bar.style.width = `${bar.dataset.percent}%`;
  }
}

// -- the flows of a namespace -------------------------------------------------------------------

function flowsPage({ namespace }) {
  const rows = new Map();
  let closed = false;
  view.innerHTML = `<h1>Flows in ${escapeHtml(namespace)}</h1><div id="flows">loading…</div>`;
  const render = () => {
    if (closed) return;
    const target = document.getElementById("flows");
    if (!rows.size) {
      target.innerHTML = `<p class="empty">No DAGFlow in namespace ${escapeHtml(namespace)}.</p>`;
      return;
    }
    const body = [...rows.values()]
      .sort((a, b) => a.name.localeCompare(b.name))
      .map(
        (row) =>
          `<tr data-flow="${escapeHtml(row.name)}">` +
          `<td><a href="#/ns/${encodeURIComponent(namespace)}/flows/${encodeURIComponent(row.name)}">` +
          `${escapeHtml(row.name)}</a></td>` +
          `<td>${phaseBadge(row.phase)}</td><td>${progressBar(row.done, row.total)}${queuedCount(row.queued)}${waitingCount(row.waiting)}</td>` +
          `<td>${escapeHtml(row.schedule || "-")}${row.suspended ? " (suspended)" : ""}</td>` +
          `<td>${row.lastRun ? `#${row.lastRun.number} ${phaseBadge(row.lastRun.phase || "-")}` : "-"}</td>` +
          `<td>${row.endpoint ? `<code>${escapeHtml(row.endpoint)}</code>` : "-"}</td>` +
          `<td title="${escapeHtml(row.createdAt || "")}">${age(row.createdAt)}</td></tr>`,
      )
      .join("");
    target.innerHTML =
      `<table class="flows"><thead><tr><th>NAME</th><th>PHASE</th><th>PROGRESS</th><th>SCHEDULE</th>` +
      `<th>LAST RUN</th><th>ENDPOINT</th><th>AGE</th></tr></thead><tbody>${body}</tbody></table>`;
    sizeBars(target);
  };
  const unsubscribe = subscribe(namespace, {
    snapshot({ flows, error }) {
      if (error) return denied(new Error(error), namespace);
      rows.clear();
      for (const flow of flows) rows.set(flow.name, flow);
      render();
      document.body.dataset.ready = "flows";
    },
    flow(update) {
      rows.set(update.name, update);
      render();
    },
    deleted({ name }) {
      rows.delete(name);
      render();
    },
    forbidden: () => denied(new ApiError(403, "forbidden"), namespace),
  });
  // The stream is refused with 403 before it opens: ask once to tell why.
  getJson(`api/namespaces/${encodeURIComponent(namespace)}/flows`).catch((error) => {
    unsubscribe();
    if (!closed) denied(error, namespace);
  });
  const timer = setInterval(render, 30000); // ages
  return {
    close() {
      closed = true;
      clearInterval(timer);
      unsubscribe();
    },
  };
}

// -- one flow -----------------------------------------------------------------------------------

// What the layout depends on: the works, their kinds and their dependencies.
function shape(graph) {
  return JSON.stringify([graph.nodes.map((node) => [node.id, node.kind]), graph.edges]);
}

function flowPage({ namespace, flow, run }) {
  const started = performance.now();
  window.dagflowTimings = undefined;
  const base = `api/namespaces/${encodeURIComponent(namespace)}/flows/${encodeURIComponent(flow)}`;
  const link = (n) => `#/ns/${encodeURIComponent(namespace)}/flows/${encodeURIComponent(flow)}${n ? `/runs/${n}` : ""}`;
  let closed = false;
  let drawing = null;
  let graph = null;
  let selected = null;
  let gone = false; // deleted while the page showed it
  let unsubscribe = () => {};
  view.innerHTML =
    `<section class="flow"><div class="flow-head" id="flow-head">loading ${escapeHtml(flow)}…</div>` +
    `<div class="flow-body"><div class="canvas" id="canvas"></div>` +
    `<aside class="panel" id="panel" hidden></aside></div>` +
    `<div class="legend">${["Pending", "Waiting", "Running", "Succeeded", "Failed", "Skipped", "Serving", "Stopped", "NotRun"]
      .map((phase) => `<span class="phase" data-phase="${phase}">${phase}</span>`)
      .join("")}</div></section>`;

  const head = (g) => {
    const runs = g.runs.length ? g.runs : [{ number: g.run || 1 }];
    const options = runs
      .slice()
      .reverse()
      .map(
        (r) =>
          `<option value="${r.number}" ${r.number === g.shownRun ? "selected" : ""}>` +
          `run ${r.number}${r.trigger ? ` (${escapeHtml(r.trigger)})` : ""}${r.number === g.run ? " · current" : ""}</option>`,
      )
      .join("");
    document.getElementById("flow-head").innerHTML =
      `<h1><a href="#/ns/${encodeURIComponent(namespace)}">${escapeHtml(namespace)}</a> / ${escapeHtml(g.name)}</h1>` +
      `<span data-role="flow-phase">${phaseBadge(g.phase)}</span>${progressBar(g.done, g.total)}${queuedCount(g.queued)}${waitingCount(g.waiting)}` +
      `<label class="runs">run <select id="run">${options}</select></label>` +
      (g.endpoint ? `<code class="endpoint">${escapeHtml(g.endpoint)}</code>` : "") +
      (g.message ? `<p class="message">${escapeHtml(g.message)}</p>` : "");
    sizeBars(document.getElementById("flow-head"));
    document.getElementById("run").addEventListener("change", (event) => {
      const chosen = Number(event.target.value);
      location.hash = link(chosen === g.run ? null : chosen);
    });
  };

  const load = async () => {
    const fetched = await getJson(`${base}${run ? `?run=${run}` : ""}`);
    if (closed) return;
    const drawStart = performance.now();
    const reshaped = !graph || shape(graph) !== shape(fetched);
    graph = fetched;
    document.getElementById("canvas").classList.remove("gone");
    head(graph);
    if (reshaped) {
      drawing = drawGraph(document.getElementById("canvas"), graph, (work) => openPanel(work));
      if (selected) drawing.select(selected);
    } else {
      // The same works and dependencies (a new run, a status that moved on): recolour, no new layout.
      drawing.update(Object.fromEntries(graph.nodes.map((node) => [node.id, node])));
    }
    // The page's first graph: how long the fetch took from the page's start, and the drawing.
    window.dagflowTimings ??= {
      works: graph.nodes.length,
      fetchMs: Math.round(drawStart - started),
      layoutAndDrawMs: Math.round(performance.now() - drawStart),
      ...drawing.timings,
    };
    document.body.dataset.ready = "graph";
  };

  // Each request for a work's details is numbered: an answer older than the one shown is dropped.
  let asked = 0;
  let shown = 0;
  const openPanel = async (work) => {
    const panel = document.getElementById("panel");
    // The work shown already (a change of the flow asks for its details again): its details stay
    // until the new ones arrive, rather than blinking to "loading…".
    const again = selected === work && !panel.hidden && panel.dataset.work === work;
    selected = work;
    if (drawing) drawing.select(work);
    const number = ++asked;
    if (!again) {
      shown = number - 1;
      panel.hidden = false;
      panel.dataset.work = work;
      panel.dataset.loaded = "";
      panel.innerHTML = `<h2>${escapeHtml(work)}</h2><p>loading…</p>`;
    }
    try {
      const details = await getJson(`${base}/works/${encodeURIComponent(work)}${run ? `?run=${run}` : ""}`);
      if (closed || selected !== work || number < shown) return;
      shown = number;
      // A gate's form the reader is filling in stays as it is while the gate still waits for them:
      // the flow's other works move on and the panel is drawn again meanwhile.
      const form = again ? panel.querySelector(".approval") : null;
      const keepForm = form && form.querySelector("input") && details.approval && details.approval.waiting && details.approval.mayDecide;
      panel.innerHTML = panelMarkup(details);
      panel.dataset.loaded = "1";
      panel.querySelector("button.close").addEventListener("click", () => {
        panel.hidden = true;
        selected = null;
        drawing && drawing.select(null);
      });
      panel.querySelector("button.logs").addEventListener("click", () => showLogs(work, panel));
      if (keepForm) {
        panel.querySelector(".approval").replaceWith(form);
      } else {
        for (const button of panel.querySelectorAll(".approval button[data-decision]")) {
          button.addEventListener("click", () => decide(work, button.dataset.decision, panel));
        }
      }
    } catch (error) {
      if (closed || selected !== work || number < shown) return;
      shown = number;
      panel.dataset.loaded = "";
      panel.innerHTML = `<h2>${escapeHtml(work)}</h2><p class="error">${escapeHtml(error.message)}</p>`;
    }
  };

  // Approve or reject a waiting gate with the reader's own identity; the API server records who.
  const decide = async (work, decision, panel) => {
    const form = panel.querySelector(".approval");
    const answer = form.querySelector(".answer");
    // A rejection sets no parameters: only an approval carries what was typed in.
    const params =
      decision === "Approved"
        ? Object.fromEntries(
            [...form.querySelectorAll("input[data-param]")].filter((input) => input.value !== "").map((input) => [input.dataset.param, input.value]),
          )
        : {};
    const message = form.querySelector("input[data-role=words]").value || undefined;
    for (const button of form.querySelectorAll("button")) button.disabled = true;
    answer.textContent = "sending…";
    try {
      await postJson(`${base}/works/${encodeURIComponent(work)}/decision`, { decision, params, message }, csrfToken);
      answer.dataset.state = "sent";
      answer.textContent = `${decision === "Approved" ? "Approval" : "Rejection"} sent.`;
    } catch (error) {
      answer.dataset.state = "refused";
      answer.textContent = error.message;
      for (const button of form.querySelectorAll("button")) button.disabled = false;
    }
  };

  const showLogs = async (work, panel) => {
    const target = panel.querySelector(".logs-output");
    target.textContent = "loading…";
    try {
      const logs = await getJson(`${base}/works/${encodeURIComponent(work)}/logs${run ? `?run=${run}` : ""}`);
      const note = logs.note ? `<p class="muted archive-note">${escapeHtml(logs.note)}</p>` : "";
      target.innerHTML = logs.pods.length
        ? note +
          logs.pods
            .map(
              (pod) =>
                `<h4>${escapeHtml(pod.pod)}${pod.archived ? " (archived)" : ""}</h4>` +
                (pod.error
                  ? `<p class="muted">no logs: ${escapeHtml(pod.error)}</p>`
                  : `<pre>${escapeHtml(pod.lines.join("\n"))}</pre>`),
            )
            .join("")
        : `<p class="muted">No pod in run ${logs.run}.</p>${note}`;
    } catch (error) {
      target.textContent = error.message;
    }
  };

  const refresh = () => load().catch((error) => !closed && denied(error, namespace));
  load()
    .then(() => {
      if (closed) return;
      unsubscribe = subscribe(namespace, {
        snapshot({ flows }) {
          const mine = flows.find((f) => f.name === flow);
          if (mine) this.flow(mine);
        },
        flow(update) {
          if (update.name !== flow || !graph) return;
          // A new generation may have other works: fetch the graph again. Anything else, a new run
          // included, is in the update itself (a big flow's graph is a megabyte to fetch again).
          // So may a flow deleted and made again under this name: it is another flow (another uid).
          if (gone || update.uid !== graph.uid || update.generation !== graph.generation) {
            gone = false;
            return refresh();
          }
          const newRun = update.run !== graph.run;
          const runs = graph.runs.map((r) => (update.lastRun && r.number === update.lastRun.number ? { ...r, ...update.lastRun } : r));
          if (update.lastRun && !runs.some((r) => r.number === update.lastRun.number)) runs.push({ ...update.lastRun });
          graph = { ...graph, ...update, runs, nodes: graph.nodes, edges: graph.edges };
          if (!run) graph.shownRun = update.run;
          head(graph);
          if (!run || run === update.run) {
            // A run begins with every work Pending until its status lists it.
            const pending = newRun ? Object.fromEntries(graph.nodes.map((node) => [node.id, { phase: "Pending" }])) : {};
            drawing.update({ ...pending, ...update.works });
            if (selected) openPanel(selected);
          }
        },
        deleted({ name }) {
          if (name !== flow) return;
          // The page stays: a flow made again under this name is drawn on it as it appears.
          gone = true;
          document.getElementById("flow-head").innerHTML =
            `<p class="error" data-role="deleted">DAGFlow ${escapeHtml(flow)} was deleted.</p>`;
          document.getElementById("canvas").classList.add("gone");
        },
        forbidden: () => denied(new ApiError(403, "forbidden"), namespace),
      });
    })
    .catch((error) => !closed && denied(error, namespace));
  return {
    close() {
      closed = true;
      unsubscribe();
    },
  };
}

function field(name, label, value) {
  return `<dt>${label}</dt><dd data-field="${name}">${value}</dd>`;
}

function approvalMarkup(a) {
  if (!a) return "";
  const question = a.question ? `<p>${escapeHtml(a.question)}</p>` : "";
  if (a.decision) {
    const values = a.values ? ` (${Object.entries(a.values).map(([k, v]) => `${escapeHtml(k)}=${escapeHtml(v)}`).join(", ")})` : "";
    const words = a.words ? `: ${escapeHtml(a.words)}` : "";
    return (
      `<div class="approval" data-role="approval">${question}<p data-role="decision">${escapeHtml(a.decision)} by ` +
      `<b>${escapeHtml(a.by)}</b> at ${escapeHtml(time(a.decidedAt))}${values}${words}</p></div>`
    );
  }
  if (!a.waiting) return `<div class="approval" data-role="approval">${question}<p class="muted">A gate: it waits for approval once its dependencies allow it.</p></div>`;
  if (!a.mayDecide) {
    return `<div class="approval" data-role="approval">${question}<p class="muted" data-role="not-approver">Waits for approval. You may not approve it.</p></div>`;
  }
  const inputs = a.params
    .map((name) => `<label>${escapeHtml(name)} <input data-param="${escapeHtml(name)}" placeholder="the run's value"></label>`)
    .join("");
  return (
    `<div class="approval" data-role="approval">${question}${inputs}` +
    `<label>words <input data-role="words" placeholder="why (optional)"></label>` +
    `<button data-decision="Approved" class="approve">Approve</button>` +
    `<button data-decision="Rejected" class="reject">Reject</button><p class="answer" data-role="answer"></p></div>`
  );
}

function panelMarkup(d) {
  const pods = d.pods.length
    ? `<table class="pods"><thead><tr><th>pod</th><th>node</th><th>phase</th></tr></thead><tbody>` +
      d.pods
        .map(
          (p) =>
            `<tr><td>${escapeHtml(p.name)}${p.index != null ? ` [${escapeHtml(p.index)}]` : ""}</td>` +
            `<td data-field="node">${escapeHtml(p.node || "-")}</td><td>${escapeHtml(p.phase || "-")}</td></tr>`,
        )
        .join("") +
      `</tbody></table>`
    : `<p class="muted">No pod.</p>`;
  const events = d.events.length
    ? `<table class="events"><tbody>` +
      d.events
        .map(
          (e) =>
            `<tr data-type="${escapeHtml(e.type)}"><td class="when">${escapeHtml(clock(e.time))}<br>` +
            `<b>${escapeHtml(e.reason)}</b></td><td><span class="muted">${escapeHtml(e.object)}</span><br>` +
            `${escapeHtml(e.message)}${e.count > 1 ? ` (×${e.count})` : ""}</td></tr>`,
        )
        .join("") +
      `</tbody></table>`
    : `<p class="muted">No Event.</p>`;
  const outputs =
    d.outputs != null
      ? `<pre>${escapeHtml(JSON.stringify(d.outputs, null, 2))}</pre>`
      : d.outputsConfigMap
        ? `in ConfigMap <code>${escapeHtml(d.outputsConfigMap)}</code> (key outputs.json)`
        : "-";
  const instances =
    d.instances != null
      ? `${d.counts ? Object.entries(d.counts).map(([k, v]) => `${escapeHtml(k)} ${v}`).join(", ") : ""} of ${d.instances}`
      : null;
  return (
    `<button class="close" title="close">×</button><h2>${escapeHtml(d.name)}</h2>` +
    `<p>${phaseBadge(d.phase, d.queued)} <span class="muted">${escapeHtml(d.kind || "")} · run ${d.run}</span></p>` +
    approvalMarkup(d.approval) +
    `<dl>` +
    field("job", d.kind === "serve" ? "Deployment" : "Job", d.job ? `<code>${escapeHtml(d.job)}</code>` : "-") +
    field("attempts", "Attempts", escapeHtml(d.attempts ?? "-")) +
    (instances ? field("instances", "Instances", instances) : "") +
    field("started", "Started", escapeHtml(time(d.startedAt))) +
    field("finished", "Finished", escapeHtml(time(d.finishedAt))) +
    field("message", "Message", escapeHtml(d.message || "-")) +
    (d.endpoint ? field("endpoint", "Endpoint", `<code>${escapeHtml(d.endpoint)}</code>`) : "") +
    field("outputs", "Outputs", outputs) +
    field("depends", "Depends on", escapeHtml(d.dependsOn.join(", ") || "-")) +
    `</dl><h3>Pods</h3><div data-field="pods">${pods}</div>` +
    `<h3>Events</h3><div data-field="events">${events}</div>` +
    `<h3>Logs</h3><button class="logs">Show logs</button><div class="logs-output" data-field="logs"></div>`
  );
}

document.getElementById("namespace-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const value = namespaceInput.value.trim();
  if (value) location.hash = `#/ns/${encodeURIComponent(value)}`;
});
window.addEventListener("hashchange", show);
// A link to a namespace's page needs no default namespace: it is shown at once, not after it.
const named = /^#\/?ns\/[^/]/.test(location.hash);
if (named) show();
getJson("api/config")
  .then((config) => {
    defaultNamespace = config.namespace || "default";
    csrfToken = config.csrfToken || "";
  })
  .catch(() => {})
  .finally(() => named || show());
