// The ask page: send the form to POST /api/ask, show the chain or the error.
// Every text from the user or the model goes in with textContent, never parsed as HTML.
"use strict";

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}

function levelClass(level) {
  return level === null || level === undefined ? "level-none" : "level-" + level;
}

function showError(message) {
  const box = document.getElementById("error");
  box.textContent = message;
  box.hidden = false;
}

function renderAnswer(a) {
  const list = document.getElementById("steps");
  list.replaceChildren();
  for (const s of a.steps) {
    const shown = s.expressed_level !== null ? s.expressed_level : s.internal_level;
    const li = el("li", "step " + levelClass(shown));
    li.dataset.index = s.index;
    li.dataset.expressed = s.expressed_level === null ? "" : s.expressed_level;
    li.dataset.internal = s.internal_level === null ? "" : s.internal_level;
    li.dataset.shown = shown === null ? "" : shown;
    li.appendChild(el("span", "step-text", s.text));
    if (s.statement) li.appendChild(el("span", "statement", " — " + s.statement));
    if (s.replaced) li.appendChild(el("span", "replaced", " (replaced by self-correction)"));
    const badges = el("span", "badges");
    const ex = el("span", "chip expressed " + levelClass(s.expressed_level),
                  "expressed " + (s.expressed_level === null ? "–" : s.expressed_level));
    const inn = el("span", "chip internal " + levelClass(s.internal_level),
                   "internal " + (s.internal_level === null ? "–" : s.internal_level));
    badges.append(ex, inn);
    li.appendChild(badges);
    list.appendChild(li);
  }
  document.getElementById("answer").textContent = a.answer === null ? "(none stated)" : a.answer;
  const notes = [];
  notes.push("model: " + a.model);
  if (!a.statements) notes.push("this model writes no confidence statements (expressed levels: –)");
  if (!a.internal_available) notes.push("internal levels unavailable (no run with a complete estimate stage)");
  if (a.compute) notes.push("self-correction: " + a.corrections.length + " step(s) resampled, "
                            + a.compute.extra_tokens + " extra tokens");
  document.getElementById("notes").textContent = notes.join(" · ");
  document.getElementById("result").hidden = false;
}

async function ask(event) {
  event.preventDefault();
  const button = document.getElementById("ask-button");
  const status = document.getElementById("status");
  document.getElementById("error").hidden = true;
  const data = new FormData();
  const file = document.getElementById("image").files[0];
  if (file) data.append("image", file, file.name);
  data.append("question", document.getElementById("question").value);
  for (const c of document.getElementById("choices").value.split(",")) {
    if (c.trim()) data.append("choice", c.trim());
  }
  if (document.getElementById("self_correct").checked) data.append("self_correct", "1");
  button.disabled = true;
  status.textContent = "asking…";
  document.body.dataset.state = "busy";
  try {
    const resp = await fetch("/api/ask", { method: "POST", body: data });
    let body = null;
    try { body = await resp.json(); } catch (e) { body = null; }
    if (!resp.ok) {
      document.getElementById("result").hidden = true;
      const msg = body && body.message ? body.message : "HTTP " + resp.status;
      const retry = resp.headers.get("Retry-After");
      showError("Error (" + resp.status + "): " + msg + (retry ? " (retry after " + retry + " s)" : ""));
      document.body.dataset.state = "error";
    } else {
      renderAnswer(body);
      document.body.dataset.state = "answered";
    }
  } catch (e) {
    showError("Error: the server could not be reached (" + e + ")");
    document.body.dataset.state = "error";
  } finally {
    button.disabled = false;
    status.textContent = "";
  }
}

function preview() {
  const file = document.getElementById("image").files[0];
  const img = document.getElementById("preview");
  if (img.src) URL.revokeObjectURL(img.src);
  if (file && file.type.startsWith("image/")) {
    img.onerror = () => { img.hidden = true; };  // not decodable: the server will say why
    img.src = URL.createObjectURL(file);
    img.hidden = false;
  } else {
    img.removeAttribute("src");
    img.hidden = true;
  }
}

async function loadInfo() {
  try {
    const info = await (await fetch("/api/info")).json();
    const parts = ["model: " + info.model,
                   info.statements ? "writes confidence statements" : "writes no statements",
                   info.internal_available ? "internal levels available" : "no internal levels"];
    document.getElementById("model-info").textContent = parts.join(" · ");
    document.getElementById("limits").textContent = "Images up to " + info.max_upload_mb + " MiB ("
      + info.image_formats.join(", ") + "); one question is answered at a time, "
      + info.max_queue + " more can wait.";
  } catch (e) {
    document.getElementById("model-info").textContent = "server unreachable";
  }
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("ask-form").addEventListener("submit", ask);
  document.getElementById("image").addEventListener("change", preview);
  loadInfo();
  document.body.dataset.state = "ready";
});
