// latentserve latent explorer: no build step, no dependencies.
//
// The page and the API have different origins (ports), so the browser applies
// CORS. Requests are CORS "simple requests": a POST whose JSON body goes as
// text/plain (the handlers parse JSON whatever the text type), with no custom
// headers, so the browser sends no OPTIONS preflight. A preflight would cost a
// round trip per request and, for an unknown model, TorchServe answers it 404,
// which hides the server's message from the page. TorchServe adds the
// Access-Control-Allow-Origin of deploy/config.properties to every answer, so
// the page can read errors too. The local config has token authorization off;
// the page sends no key.
//
// Nothing here assumes an image size or mode: decode and sample answer PNGs of the
// model's own mode (grayscale or RGB) and size, which the page shows as they are
// (CSS keeps their aspect in a fixed box). The model's image shape comes from the
// points file (make_points records the server's), else from the first decoded PNG.
"use strict";

const params = new URLSearchParams(location.search);
const API = (params.get("api") || "http://127.0.0.1:8080").replace(/\/+$/, "");
const POINTS = params.get("points") || "data/fashion-vae-2d.json";
// tab10, the colours of the training figures' scatter plots
const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
const HISTORY = 8;

const $ = (id) => document.getElementById(id);
const state = { model: params.get("model"), points: null, view: null, inFlight: false, pending: null, imageShape: null };

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

async function call(operation, body) {
  const url = `${API}/predictions/${state.model}-${operation}`;
  let resp;
  try {
    resp = await fetch(url, {
      method: "POST",
      headers: { "Content-Type": "text/plain" },
      body: JSON.stringify(body),
    });
  } catch (err) {
    throw new Error(`cannot reach ${url} (is the server running, with CORS for ${location.origin}?)`);
  }
  const answer = await resp.json().catch(() => null);
  if (!resp.ok) {
    // latentserve's {"error": {code, field, message}} or TorchServe's {code, type, message}
    const ours = answer && typeof answer.error === "object";
    const e = (ours ? answer.error : answer) || {};
    const reason = (ours ? e.code : e.type) || "";
    const where = e.field && e.field !== "body" ? ` at ${e.field}` : "";
    throw new Error(`HTTP ${resp.status} ${reason}${where}: ${e.message || resp.statusText}`);
  }
  return answer;
}

const png = (b64) => `data:image/png;base64,${b64}`;

// "1×28×28 grayscale" / "3×64×64 colour", from [C, H, W]
function showShape(shape) {
  const [c, h, w] = shape;
  $("model-image").textContent = `image ${c}×${h}×${w} ${c === 1 ? "grayscale" : "colour"}`;
  $("model-image").dataset.shape = JSON.stringify(shape);
  state.imageShape = shape;
}

// a decoded PNG tells the model's size when the points file does not (its mode is
// not visible to the page: RGB PNGs of gray pixels look alike, so say "size" only)
function learnShape(img) {
  if (state.imageShape || !img.naturalWidth) return;
  $("model-image").textContent = `image ${img.naturalHeight}×${img.naturalWidth}`;
}

// ---- the plane ---------------------------------------------------------------
function makeView(points, canvas) {
  // bounds: 0.5th..99.5th percentile of each axis plus a margin, so a few far
  // outliers do not squeeze the cloud; the view is square (equal scales).
  const pct = (arr, q) => { const s = Float64Array.from(arr).sort(); return s[Math.floor(q * (s.length - 1))]; };
  const lo = [pct(points.x, 0.005), pct(points.y, 0.005)];
  const hi = [pct(points.x, 0.995), pct(points.y, 0.995)];
  const half = 0.55 * Math.max(hi[0] - lo[0], hi[1] - lo[1]);
  const cx = (lo[0] + hi[0]) / 2, cy = (lo[1] + hi[1]) / 2;
  const size = canvas.clientWidth;
  return {
    size, x0: cx - half, y0: cy - half, span: 2 * half,
    toPx(x, y) { return [((x - this.x0) / this.span) * size, (1 - (y - this.y0) / this.span) * size]; },
    toZ(px, py) { return [this.x0 + (px / size) * this.span, this.y0 + (1 - py / size) * this.span]; },
  };
}

function draw(marker) {
  const canvas = $("plane"), { points, view } = state;
  const ratio = window.devicePixelRatio || 1;
  canvas.width = view.size * ratio;
  canvas.height = view.size * ratio;
  const g = canvas.getContext("2d");
  g.setTransform(ratio, 0, 0, ratio, 0, 0);
  g.fillStyle = "#fff";
  g.fillRect(0, 0, view.size, view.size);
  // integer grid lines
  g.strokeStyle = "#eef0f3";
  g.fillStyle = "#98a2b3";
  g.font = "10px system-ui";
  for (let v = Math.ceil(view.x0); v <= view.x0 + view.span; v++) {
    const [px] = view.toPx(v, 0);
    g.beginPath(); g.moveTo(px, 0); g.lineTo(px, view.size); g.stroke();
    g.fillText(String(v), px + 2, view.size - 3);
  }
  for (let v = Math.ceil(view.y0); v <= view.y0 + view.span; v++) {
    const [, py] = view.toPx(0, v);
    g.beginPath(); g.moveTo(0, py); g.lineTo(view.size, py); g.stroke();
    g.fillText(String(v), 2, py - 2);
  }
  g.globalAlpha = 0.55;
  for (let i = 0; i < points.x.length; i++) {
    const [px, py] = view.toPx(points.x[i], points.y[i]);
    g.fillStyle = COLORS[points.label[i] % COLORS.length];
    g.fillRect(px - 1.2, py - 1.2, 2.4, 2.4);
  }
  g.globalAlpha = 1;
  if (marker) {
    const [px, py] = view.toPx(marker[0], marker[1]);
    g.strokeStyle = "#000";
    g.lineWidth = 2;
    g.beginPath(); g.arc(px, py, 7, 0, 2 * Math.PI); g.stroke();
    g.lineWidth = 1;
  }
}

function legend(classes) {
  $("legend").replaceChildren(...classes.map((name, i) => {
    const li = document.createElement("li");
    const dot = document.createElement("i");
    dot.style.background = COLORS[i % COLORS.length];
    li.append(dot, name);
    return li;
  }));
}

// ---- decoding a point ----------------------------------------------------------
// One decode request in flight at a time; while dragging, only the latest
// point waits (older ones are dropped), so the page never floods the server.
function requestDecode(z) {
  state.pending = z;
  if (!state.inFlight) pump();
}

async function pump() {
  state.inFlight = true;
  while (state.pending) {
    const z = state.pending;
    state.pending = null;
    draw(z);
    try {
      const t0 = performance.now();
      const answer = await call("decode", { instances: [{ z }], format: "png" });
      const src = png(answer.predictions[0].image_b64);
      $("decoded").onload = (e) => learnShape(e.target);
      $("decoded").src = src;
      $("decoded").dataset.z = JSON.stringify(z);
      const label = `z = (${z[0].toFixed(2)}, ${z[1].toFixed(2)})`;
      $("decoded-z").textContent = label;
      addHistory(src, label);
      setStatus(`decoded ${label} in ${(performance.now() - t0).toFixed(0)} ms`);
    } catch (err) {
      setStatus(err.message, true);
      console.error(err.message);
    }
  }
  state.inFlight = false;
}

function addHistory(src, label) {
  const img = document.createElement("img");
  img.src = src;
  img.alt = img.title = label;
  const box = $("history");
  box.prepend(img);
  while (box.children.length > HISTORY) box.lastChild.remove();
}

function pointerZ(event) {
  const rect = $("plane").getBoundingClientRect();
  return state.view.toZ(event.clientX - rect.left, event.clientY - rect.top);
}

function wirePlane() {
  const canvas = $("plane");
  let dragging = false;
  canvas.addEventListener("pointerdown", (e) => {
    dragging = true;
    canvas.setPointerCapture(e.pointerId);
    requestDecode(pointerZ(e));
  });
  canvas.addEventListener("pointermove", (e) => { if (dragging) requestDecode(pointerZ(e)); });
  const stop = () => { dragging = false; };
  canvas.addEventListener("pointerup", stop);
  canvas.addEventListener("pointercancel", stop);
}

// ---- sampling ------------------------------------------------------------------
async function sample(event) {
  if (event) event.preventDefault();
  const seed = Math.max(0, Math.floor(Number($("seed").value) || 0));
  const n = Math.min(64, Math.max(1, Math.floor(Number($("n").value) || 1)));
  const temperature = Number($("temperature").value);
  $("sample-button").disabled = true;
  try {
    const answer = await call("sample", { n, seed, temperature, format: "png" });
    $("samples").replaceChildren(...answer.predictions.map((p, i) => {
      const img = document.createElement("img");
      img.src = png(p.image_b64);
      img.alt = img.title = `sample ${i} (seed ${answer.seed})`;
      return img;
    }));
    setStatus(`sampled ${n} images with seed ${answer.seed}, temperature ${temperature}`);
  } catch (err) {
    setStatus(err.message, true);
    console.error(err.message);
  } finally {
    $("sample-button").disabled = false;
  }
}

// ---- start ---------------------------------------------------------------------
async function main() {
  $("temperature").addEventListener("input", (e) => {
    $("temperature-value").textContent = Number(e.target.value).toFixed(1);
  });
  $("sample-form").addEventListener("submit", sample);
  const resp = await fetch(POINTS);
  if (!resp.ok) throw new Error(`${POINTS}: HTTP ${resp.status} (run make explorer-points)`);
  const points = await resp.json();
  state.model = state.model || points.model;
  state.points = points;
  state.view = makeView(points, $("plane"));
  $("model-name").textContent = state.model;
  // the points file's shape is its own model's (?model= may name another)
  const shape = points.image_shape;
  if (state.model === points.model && Array.isArray(shape) && shape.length === 3) showShape(shape);
  $("points-source").textContent =
    `${points.x.length} ${points.dataset} images encoded by ${points.model} (${POINTS})`;
  legend(points.classes);
  draw(null);
  wirePlane();
  setStatus(`${points.x.length} points · API ${API}`);
  document.body.dataset.ready = "true";
}

main().catch((err) => {
  setStatus(err.message, true);
  console.error(err.message);
});
