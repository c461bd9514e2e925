// The corteza dashboard: live loss chart, status cards and recent events.
// The token comes from the URL fragment (#token=...), which browsers never send;
// it travels only as "Authorization: Bearer" on this page's own requests.
import { LossChart } from "./chart.js";
import { readEvents } from "./sse.js";

const TOKEN_KEY = "corteza.token";
const MAX_EVENTS = 20; // rows in the recent events list
const POLL_MS = 2000; // /status and /metricas
const RETRY_MS = [1000, 2000, 4000, 8000, 15000]; // event stream reconnection
const MESSAGES = {
  badToken:
    "The token in this link is not accepted by the server. Use the link the server printed.",
  noToken:
    "This server needs a token. Open the link the server printed (it ends with #token=...).",
};
const TRENDS = {
  mejorando: "improving",
  empeorando: "worsening",
  estable: "steady",
  sin_datos: "too early",
};

const $ = (id) => document.getElementById(id);

const state = {
  token: readToken(),
  lastId: 0, // Last-Event-ID: 0 replays everything the server still holds
  streaming: false,
  polling: false, // the server has no event stream: the chart follows /status
  stopped: false,
  abort: null,
  pollTimer: null,
  best: null,
  events: [],
};
const chart = new LossChart($("chart"));

class AuthError extends Error {}

function readToken() {
  const fromLink = new URLSearchParams(location.hash.slice(1)).get("token");
  if (fromLink) {
    try {
      sessionStorage.setItem(TOKEN_KEY, fromLink);
    } catch {
      // storage off: the token lives in memory only
    }
    // Out of the address bar, so it is not copied or shown on a shared screen.
    history.replaceState(null, "", location.pathname + location.search);
    return fromLink;
  }
  try {
    return sessionStorage.getItem(TOKEN_KEY);
  } catch {
    return null;
  }
}

// -------------------------------------------------------------------- requests

async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  if (state.token) headers.set("Authorization", `Bearer ${state.token}`);
  const response = await fetch(path, { ...options, headers, cache: "no-store" });
  if (response.status === 401) {
    refused();
    throw new AuthError(response.statusText);
  }
  return response;
}

async function errorMessage(response) {
  const body = await response.json().catch(() => null);
  return (body && body.error) || `HTTP ${response.status}`;
}

async function apiJson(path, options) {
  const response = await api(path, options);
  if (!response.ok) throw new Error(await errorMessage(response));
  return response.json();
}

function refused() {
  const banner = $("auth-error");
  banner.textContent = state.token ? MESSAGES.badToken : MESSAGES.noToken;
  banner.hidden = false;
  setConnection("unauthorized", "not authorised");
  state.stopped = true;
  if (state.abort) state.abort.abort();
  clearTimeout(state.pollTimer);
}

function setConnection(name, text) {
  const pill = $("connection");
  pill.dataset.state = name;
  pill.textContent = text;
}

function notify(text, isError = false) {
  const notice = $("notice");
  notice.textContent = text;
  notice.classList.toggle("error", isError);
  notice.hidden = false;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// ---------------------------------------------------------------- event stream

async function follow() {
  let attempt = 0;
  while (!state.stopped) {
    try {
      state.abort = new AbortController();
      const response = await api("v1/events", {
        headers: { Accept: "text/event-stream", "Last-Event-ID": String(state.lastId) },
        signal: state.abort.signal,
      });
      if (response.status === 404) {
        state.polling = true; // an older server: the chart follows /status instead
        setConnection("polling", "polling");
        return;
      }
      if (!response.ok || !response.body) throw new Error(await errorMessage(response));
      setConnection("live", "live");
      state.streaming = true;
      attempt = 0;
      for await (const message of readEvents(response)) receive(message);
    } catch (error) {
      if (error instanceof AuthError || state.stopped) return;
    }
    state.streaming = false;
    setConnection("reconnecting", "reconnecting…");
    await sleep(RETRY_MS[Math.min(attempt, RETRY_MS.length - 1)]);
    attempt += 1;
  }
}

function receive(message) {
  let event;
  try {
    event = JSON.parse(message.data);
  } catch {
    return;
  }
  const id = Number(message.id ?? event.id);
  // An id at or below the last one means a restarted server: ids begin again at 1.
  if (Number.isFinite(id)) state.lastId = id;
  const type = event.type || message.event;
  if (type === "batch_trained") {
    addPoint(event.step, event.loss);
    setText("card-step", formatInt(event.step));
    setText("card-rate", formatRate(event.samples_per_second));
  } else if (type === "feedback") {
    showFeedback(event.success_rate, event.received);
  }
  remember(type, event);
}

function addPoint(step, loss) {
  if (!Number.isFinite(step) || !Number.isFinite(loss)) return;
  chart.add(step, loss);
  showBest(loss);
  setText("last-loss", `last ${loss.toFixed(4)} at step ${formatInt(step)}`);
}

// ----------------------------------------------------------- cards and events

function setText(id, text) {
  $(id).textContent = text;
}

const formatInt = (n) => (Number.isFinite(n) ? n.toLocaleString("en-US") : "–");
const formatRate = (n) => (Number.isFinite(n) ? n.toFixed(1) : "–");
const formatLoss = (n) => (Number.isFinite(n) ? n.toFixed(4) : "–");

function formatBytes(n) {
  if (!Number.isFinite(n)) return "–";
  const units = ["B", "KB", "MB", "GB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function showBest(loss) {
  if (Number.isFinite(loss) && (state.best === null || loss < state.best)) {
    state.best = loss;
    setText("card-best", loss.toFixed(4));
  }
}

function showFeedback(rate, received) {
  setText("card-feedback", received ? `${(rate * 100).toFixed(0)}%` : "–");
  setText("card-feedback-count", `${formatInt(received || 0)} received`);
}

function showStatus(status) {
  const s = status.estadisticas;
  setText("card-step", formatInt(s.step ?? s.total_batches));
  setText("card-rate", formatRate(s.samples_per_second));
  showBest(s.best_loss);
  setText("card-device", s.dispositivo);
  setText("card-device-name", [s.device_name, s.device].filter(Boolean).join(" · "));
  setText("card-precision", s.precision ? `precision ${s.precision}` : "");
  const d = status.distributed;
  setText(
    "card-ranks",
    d ? `${d.world_size} ranks · ${d.backend} · ${d.nodes} node${d.nodes === 1 ? "" : "s"}` : "",
  );
  const onGpu = String(s.device || s.dispositivo).toLowerCase().startsWith("cuda");
  setText("card-gpu", onGpu ? `${s.gpu_memoria_mb.toFixed(0)} MB` : "–");
  let reserved = "no GPU";
  if (onGpu) {
    reserved = Number.isFinite(s.gpu_memory_reserved_mb)
      ? `${s.gpu_memory_reserved_mb.toFixed(0)} MB reserved · peak ${(s.peak_memory_mb ?? 0).toFixed(0)} MB`
      : "";
  }
  setText("card-gpu-reserved", reserved);
  showFeedback(s.feedback.tasa_exito, s.feedback.recibido);
  setText(
    "footer",
    `corteza ${status.version || ""} · protocol ${status.protocol || "?"} · ` +
      `torch ${status.torch_version} · ${formatInt(s.total_muestras)} samples trained`,
  );
  if (state.polling) addPoint(s.step, s.last_loss);
}

function describe(type, e) {
  switch (type) {
    case "batch_trained":
      return `step ${formatInt(e.step)} · loss ${formatLoss(e.loss)} · ` +
        `${formatRate(e.samples_per_second)} samples/s`;
    case "feedback":
      return `${e.validated ? "validated" : "not validated"} · success rate ` +
        `${(e.success_rate * 100).toFixed(0)}% of ${formatInt(e.received)}`;
    case "checkpoint_saved":
      return `${e.name} at step ${formatInt(e.step)} · ${formatBytes(e.bytes)} · ${e.reason}`;
    case "loss_improved":
      return `best loss ${formatLoss(e.loss)} at step ${formatInt(e.step)}` +
        (Number.isFinite(e.previous_best) ? ` (was ${formatLoss(e.previous_best)})` : "");
    case "run_started":
      return `run ${e.run_id}`;
    case "run_finished":
      return `run ${e.run_id} · ${formatInt(e.batches)} batches · last loss ` +
        formatLoss(e.last_loss);
    case "job_queued":
    case "job_started":
      return `job ${e.job_id}` + (e.resumed_at ? ` resumed at batch ${formatInt(e.resumed_at)}` : "");
    case "job_epoch":
      return `job ${e.job_id} · epoch ${e.epoch + 1}/${e.epochs}` +
        (e.holdout_auc == null ? "" : ` · holdout ROC-AUC ${e.holdout_auc.toFixed(4)}`) +
        (e.improved ? " · best" : "");
    case "job_finished":
      return `job ${e.job_id} · ${e.state} (${e.stop_reason}) · ${formatInt(e.samples)} samples`;
    case "stalled":
      return `no batch for ${Math.round(e.idle_seconds)} s (step ${formatInt(e.last_step)})`;
    default: {
      const { id, type: _, time, ...rest } = e;
      return JSON.stringify(rest);
    }
  }
}

function remember(type, event) {
  const newest = state.events[0];
  if (type === "batch_trained" && newest && newest.type === type) {
    // Consecutive batches share one row, so they do not push everything else out.
    newest.count += 1;
    newest.event = event;
  } else {
    state.events.unshift({ type, event, count: 1 });
    state.events.length = Math.min(state.events.length, MAX_EVENTS);
  }
  const rows = state.events.map(({ type, event, count }) => {
    const row = document.createElement("li");
    const time = document.createElement("span");
    time.className = "time";
    time.textContent = Number.isFinite(event.time)
      ? new Date(event.time * 1000).toLocaleTimeString("en-GB")
      : "";
    const label = document.createElement("span");
    label.className = "type";
    label.dataset.type = type;
    label.textContent = count > 1 ? `${type} ×${count}` : type;
    const text = document.createElement("span");
    text.textContent = describe(type, event);
    row.append(time, label, text);
    return row;
  });
  $("events").replaceChildren(...rows);
}

// ------------------------------------------------------------------------ jobs

// The running job (else the newest): dataset, epoch, cursor, and each epoch's holdout score.
async function pollJobs() {
  const response = await api("v1/jobs");
  if (!response.ok) return; // an older server has no jobs
  const { jobs } = await response.json();
  const job = jobs.find((j) => j.state === "running") || jobs[jobs.length - 1];
  $("job-panel").hidden = !job;
  if (!job) return;
  const name = job.dataset_name || job.spec.dataset.slice(0, 16);
  setText("job-title", `${job.id} · ${job.state} · ${name}`);
  const epoch = Math.min(job.epoch + 1, job.spec.epochs);
  setText(
    "job-progress",
    `epoch ${epoch}/${job.spec.epochs} · batch ${formatInt(job.cursor)}/` +
      `${formatInt(job.total_batches)} · ${formatInt(job.samples_trained)} samples` +
      (job.best_auc == null ? "" : ` · best holdout ROC-AUC ${job.best_auc.toFixed(4)}`),
  );
  const rows = job.epochs_scored.map((e) => {
    const row = document.createElement("tr");
    const cells = [
      `${e.epoch + 1}${e.epoch === job.best_epoch ? " *" : ""}`,
      formatLoss(e.train_loss),
      e.holdout_auc == null ? "–" : e.holdout_auc.toFixed(4),
      formatLoss(e.holdout_loss),
    ];
    row.append(...cells.map((text) => Object.assign(document.createElement("td"), { textContent: text })));
    return row;
  });
  $("job-epochs").tBodies[0].replaceChildren(...rows);
}

async function poll() {
  try {
    const [status, metrics] = await Promise.all([apiJson("status"), apiJson("metricas")]);
    await pollJobs();
    showStatus(status);
    setText("card-trend", TRENDS[metrics.tendencia] || metrics.tendencia);
    if (state.polling) setConnection("polling", "polling");
  } catch (error) {
    if (error instanceof AuthError) return;
    if (!state.streaming) setConnection("offline", "server unreachable");
  }
  if (!state.stopped) state.pollTimer = setTimeout(poll, POLL_MS);
}

// --------------------------------------------------------------------- buttons

async function saveCheckpoint() {
  notify("Saving a checkpoint…");
  const body = await apiJson("v1/checkpoint", { method: "POST" });
  notify(`Saved checkpoint ${body.checkpoint} at step ${formatInt(body.step)}.`);
}

async function downloadModel() {
  const latest = await api("v1/checkpoint");
  if (latest.status === 404) throw new Error("No checkpoint saved yet: press Save checkpoint.");
  if (!latest.ok) throw new Error(await errorMessage(latest));
  const { checkpoint } = await latest.json();
  const name = "model.safetensors";
  const response = await api(`v1/checkpoint/files/${name}`);
  if (!response.ok) throw new Error(await errorMessage(response));
  // A link cannot carry the Authorization header: fetch, then save the Blob.
  const blob = await response.blob();
  const url = URL.createObjectURL(blob);
  const link = document.createElement("a");
  link.href = url;
  link.download = `${checkpoint}-${name}`;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
  notify(`Downloaded ${link.download} (${formatBytes(blob.size)}); ` +
    "corteza pull fetches the whole checkpoint.");
}

function bind(id, action) {
  const button = $(id);
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      await action();
    } catch (error) {
      if (!(error instanceof AuthError)) notify(error.message, true);
    } finally {
      button.disabled = false;
    }
  });
}

// ----------------------------------------------------------------------- start

addEventListener("hashchange", () => {
  if (new URLSearchParams(location.hash.slice(1)).has("token")) location.reload();
});
bind("save-checkpoint", saveCheckpoint);
bind("download-model", downloadModel);
poll();
follow();
