export function escapeHtml(value) {
  return String(value ?? "")
    .replace(/&/g, "&amp;")
    .replace(/</g, "&lt;")
    .replace(/>/g, "&gt;")
    .replace(/"/g, "&quot;")
    .replace(/'/g, "&#39;");
}

// How long ago an ISO time was, as kubectl's AGE column says it: 45s, 3m, 2h, 5d.
// A work's phase as the page writes it: "Pending (Queued)" while Kueue holds its Job.
export function phaseLabel(phase, queued) {
  return queued ? `${phase} (${queued})` : phase;
}

export function age(iso, now = Date.now()) {
  if (!iso) return "-";
  const seconds = Math.max(0, Math.floor((now - Date.parse(iso)) / 1000));
  if (seconds < 120) return `${seconds}s`;
  if (seconds < 7200) return `${Math.floor(seconds / 60)}m`;
  if (seconds < 172800) return `${Math.floor(seconds / 3600)}h`;
  return `${Math.floor(seconds / 86400)}d`;
}

export function time(iso) {
  return iso ? new Date(iso).toLocaleString() : "-";
}

export function clock(iso) {
  return iso ? new Date(iso).toLocaleTimeString() : "-";
}

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export async function getJson(path) {
  const response = await fetch(path, { headers: { Accept: "application/json" } });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new ApiError(response.status, body.error || response.statusText);
  return body;
}

// A write of the page's own: JSON, with the token that only a page able to read api/config has.
export async function postJson(path, body, csrfToken) {
  const response = await fetch(path, {
    method: "POST",
    headers: { Accept: "application/json", "Content-Type": "application/json", "X-DAGFlow-CSRF": csrfToken },
    body: JSON.stringify(body),
  });
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) throw new ApiError(response.status, answer.error || response.statusText);
  return answer;
}
