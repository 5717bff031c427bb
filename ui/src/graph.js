// A flow's DAG: laid out by dagre, drawn as SVG, coloured by phase through CSS (data-phase).
import dagre from "@dagrejs/dagre";
import { escapeHtml, phaseLabel } from "./util.js";

const NODE_WIDTH = 200;
const NODE_HEIGHT = 46;
// About how many characters of a work's name fit in its box in the bold 13px font; wide letters
// may need more room, so the name is also clipped to the box.
const NAME_CHARS = 20;
const LABEL_INSET = 12;
// network-simplex gives the tidiest ranks but grows fast with the graph; longest-path stays quick.
// Above the same size the works of a rank keep dagre's first order, without its crossing-reduction
// sweeps: they take about a third of the layout of a 2,000-work flow, and what they tidy there is
// not readable at the zoom that shows the whole graph anyway.
const TIDY_LAYOUT_LIMIT = 300;
// Below this many screen pixels per unit of the drawing a work's 13px name would be under 4px: the
// labels are not drawn then (zoom in to read them). Painting thousands of illegible labels is what
// makes each frame of a big graph slow.
const LABEL_MIN_SCALE = 4 / 13;

export function layout(nodes, edges) {
  const big = nodes.length > TIDY_LAYOUT_LIMIT;
  const g = new dagre.graphlib.Graph();
  g.setGraph({
    rankdir: "LR",
    nodesep: 14,
    ranksep: 56,
    marginx: 24,
    marginy: 24,
    ranker: big ? "longest-path" : "network-simplex",
  });
  g.setDefaultEdgeLabel(() => ({}));
  for (const node of nodes) g.setNode(node.id, { width: NODE_WIDTH, height: NODE_HEIGHT });
  for (const [from, to] of edges) g.setEdge(from, to);
  dagre.layout(g, { disableOptimalOrderHeuristic: big });
  return g;
}

export function subLabel(node) {
  const parts = [node.kind];
  if (node.kind === "matrix") {
    const total = node.instances ?? "?";
    const done = node.counts ? node.counts.Succeeded || 0 : null;
    parts.push(done === null ? `×${total}` : `${done}/${total}`);
  }
  if (node.gpu) parts.push(`${node.gpu} GPU`);
  if (node.phase) parts.push(phaseLabel(node.phase, node.queued));
  if (node.cached === "all") parts.push("cached");
  else if (node.cached === "some") parts.push(`${node.cachedInstances} cached`);
  return parts.join(" · ");
}

function nodeMarkup(node, position) {
  const x = position.x - NODE_WIDTH / 2;
  const y = position.y - NODE_HEIGHT / 2;
  const name = escapeHtml(node.id);
  // A name longer than the box holds is cut with an ellipsis; the whole name is the node's tooltip.
  const shown = escapeHtml(node.id.length > NAME_CHARS ? `${node.id.slice(0, NAME_CHARS - 1)}…` : node.id);
  const stack =
    node.kind === "matrix"
      ? `<rect class="stack" x="6" y="-6" width="${NODE_WIDTH}" height="${NODE_HEIGHT}" rx="7"/>`
      : "";
  return (
    `<g class="node" tabindex="0" role="button" data-work="${name}" data-kind="${node.kind}" ` +
    `data-phase="${escapeHtml(node.phase || "Pending")}" data-instances="${node.instances ?? ""}" ` +
    (node.queued ? `data-queued="${escapeHtml(node.queued)}" ` : "") +
    (node.cached ? `data-cached="${escapeHtml(node.cached)}" ` : "") +
    `transform="translate(${x},${y})">${stack}` +
    `<rect class="box" width="${NODE_WIDTH}" height="${NODE_HEIGHT}" rx="7"/>` +
    `<title>${name}</title><text class="name" x="${LABEL_INSET}" y="19" clip-path="url(#in-box)">${shown}</text>` +
    `<text class="sub" x="12" y="36">${escapeHtml(subLabel(node))}</text></g>`
  );
}

function edgeMarkup(from, to, points) {
  const d = points.map((p, i) => `${i ? "L" : "M"}${p.x.toFixed(1)},${p.y.toFixed(1)}`).join("");
  return `<path class="edge" data-from="${escapeHtml(from)}" data-to="${escapeHtml(to)}" d="${d}"/>`;
}

// Draws the graph into `container`; returns the drawing, whose nodes can be recoloured in place,
// and `timings` (milliseconds spent laying out and drawing).
export function drawGraph(container, graph, onSelect) {
  const started = performance.now();
  const laidOut = layout(graph.nodes, graph.edges);
  const laidOutAt = performance.now();
  const { width, height } = laidOut.graph();
  const edges = laidOut.edges().map((e) => edgeMarkup(e.v, e.w, laidOut.edge(e).points));
  const nodes = graph.nodes.map((node) => nodeMarkup(node, laidOut.node(node.id)));
  // The container's size, read once it is empty (cheap), tells whether the whole graph fits with
  // readable labels; reading it after the drawing is in would lay out every node there and then.
  container.replaceChildren();
  const fits = scaleToFit(container.clientWidth, container.clientHeight, width, height) >= LABEL_MIN_SCALE;
  container.innerHTML =
    `<svg class="graph${fits ? "" : " far"}" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${width} ${height}" ` +
    `data-width="${width}" data-height="${height}">` +
    // In each node's own coordinates (userSpaceOnUse): the box less its inset on both sides.
    `<defs><clipPath id="in-box" clipPathUnits="userSpaceOnUse">` +
    `<rect x="${LABEL_INSET}" y="0" width="${NODE_WIDTH - 2 * LABEL_INSET}" height="${NODE_HEIGHT}"/></clipPath>` +
    `<marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" ` +
    `orient="auto-start-reverse"><path d="M0,0L10,5L0,10z"/></marker></defs>` +
    `<g class="edges">${edges.join("")}</g><g class="nodes">${nodes.join("")}</g></svg>`;
  const svg = container.querySelector("svg");
  const byId = new Map(graph.nodes.map((node) => [node.id, { ...node }]));
  const elements = new Map();
  for (const element of svg.querySelectorAll("g.node")) elements.set(element.dataset.work, element);
  enablePanZoom(svg, width, height, (target) => {
    const element = target.closest("g.node");
    if (element) onSelect(element.dataset.work);
  });
  svg.addEventListener("keydown", (event) => {
    const element = event.target.closest && event.target.closest("g.node");
    if (element && (event.key === "Enter" || event.key === " ")) onSelect(element.dataset.work);
  });
  let selected = null;
  return {
    svg,
    timings: { layoutMs: Math.round(laidOutAt - started), drawMs: Math.round(performance.now() - laidOutAt) },
    // Recolour works whose state changed: `states` maps a work to {phase, queued, instances, counts,
    // cached, cachedInstances}.
    update(states) {
      for (const [id, state] of Object.entries(states)) {
        const node = byId.get(id);
        const element = elements.get(id);
        if (!node || !element) continue;
        const next = {
          ...node, phase: state.phase, queued: state.queued, counts: state.counts,
          cached: state.cached, cachedInstances: state.cachedInstances,
        };
        if (state.instances !== undefined) next.instances = state.instances;
        if (next.phase === node.phase && next.queued === node.queued
          && JSON.stringify(next.counts) === JSON.stringify(node.counts)
          && next.instances === node.instances && next.cached === node.cached
          && next.cachedInstances === node.cachedInstances) continue;
        byId.set(id, next);
        element.dataset.phase = next.phase;
        if (next.queued) element.dataset.queued = next.queued;
        else delete element.dataset.queued;
        if (next.cached) element.dataset.cached = next.cached;
        else delete element.dataset.cached;
        element.dataset.instances = next.instances ?? "";
        element.querySelector("text.sub").textContent = subLabel(next);
      }
    },
    select(id) {
      if (selected) selected.classList.remove("selected");
      selected = elements.get(id) || null;
      if (selected) selected.classList.add("selected");
    },
  };
}

// Screen pixels per unit of a drawing of `width` x `height` shown whole in `boxWidth` x `boxHeight`.
function scaleToFit(boxWidth, boxHeight, width, height) {
  return Math.min(boxWidth / width, boxHeight / height);
}

// Drag to pan, wheel to zoom; a click without a drag selects.
function enablePanZoom(svg, width, height, onClick) {
  let box = { x: 0, y: 0, w: width, h: height };
  let drag = null;
  const apply = () => svg.setAttribute("viewBox", `${box.x} ${box.y} ${box.w} ${box.h}`);
  const scale = () => {
    const rect = svg.getBoundingClientRect();
    return Math.max(box.w / rect.width, box.h / rect.height);
  };
  svg.addEventListener("pointerdown", (event) => {
    drag = { x: event.clientX, y: event.clientY, moved: false, box: { ...box }, factor: scale() };
  });
  svg.addEventListener("pointermove", (event) => {
    if (!drag) return;
    const dx = event.clientX - drag.x;
    const dy = event.clientY - drag.y;
    if (!drag.moved && Math.abs(dx) + Math.abs(dy) < 4) return;
    if (!drag.moved) svg.setPointerCapture(event.pointerId);
    drag.moved = true;
    box = { ...drag.box, x: drag.box.x - dx * drag.factor, y: drag.box.y - dy * drag.factor };
    apply();
  });
  svg.addEventListener("pointerup", (event) => {
    if (drag && !drag.moved) onClick(event.target);
    drag = null;
  });
  svg.addEventListener(
    "wheel",
    (event) => {
      event.preventDefault();
      const rect = svg.getBoundingClientRect();
      const factor = event.deltaY > 0 ? 1.15 : 1 / 1.15;
      const s = scale();
      const px = box.x + (event.clientX - rect.left) * s;
      const py = box.y + (event.clientY - rect.top) * s;
      box = { x: px - (px - box.x) * factor, y: py - (py - box.y) * factor, w: box.w * factor, h: box.h * factor };
      svg.classList.toggle("far", scaleToFit(rect.width, rect.height, box.w, box.h) < LABEL_MIN_SCALE);
      apply();
    },
    { passive: false },
  );
}
