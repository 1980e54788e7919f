// The results browser: metrics table, reliability diagrams, examples sorted by calibration error
// with filters. Every text goes in with textContent, never parsed as HTML.
"use strict";

const PAGE = 50;
let summary = null;
let offset = 0;

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}

function fmt(x) {
  return x === null || x === undefined ? "–" : (typeof x === "number" ? x.toFixed(3) : String(x));
}

function showError(message) {
  const box = document.getElementById("error");
  box.textContent = message;
  box.hidden = false;
}

async function getJSON(url) {
  const resp = await fetch(url);
  const body = await resp.json();
  if (!resp.ok) throw new Error(body && body.message ? body.message : "HTTP " + resp.status);
  return body;
}

function renderTable(rows) {
  const body = document.querySelector("#metrics tbody");
  body.replaceChildren();
  for (const r of rows) {
    const tr = el("tr");
    const shares = [1, 2, 3, 4, 5].map(k => Math.round(100 * (r.level_shares[k] || 0))).join(" ");
    for (const v of [r.split, r.model, r.source || "–", fmt(r.accuracy), fmt(r.ece), fmt(r.mece), fmt(r.f1),
                     fmt(r.auroc), fmt(r.brier), fmt(r.parsed), shares]) {
      tr.appendChild(el("td", null, v));
    }
    body.appendChild(tr);
  }
  if (!rows.length) {
    const tr = el("tr");
    const td = el("td", "muted", "no metrics.json yet (run the evaluate stage)");
    td.colSpan = 11;
    tr.appendChild(td);
    body.appendChild(tr);
  }
}

function renderFigures(figures) {
  const box = document.getElementById("figures");
  box.replaceChildren();
  const split = document.getElementById("split").value;
  const model = document.getElementById("model").value;
  for (const f of figures) {
    if (split && f.split !== split) continue;
    const fig = el("figure");
    const img = el("img");
    img.src = "/api/results/figure/" + encodeURIComponent(f.name);
    img.alt = f.title;
    img.loading = "lazy";
    if (f.model === model) fig.className = "selected";
    fig.append(img, el("figcaption", null, f.title));
    box.appendChild(fig);
  }
}

function fillSelect(id, values) {
  const sel = document.getElementById(id);
  sel.replaceChildren();
  for (const v of values) {
    const o = el("option", null, v);
    o.value = v;
    sel.appendChild(o);
  }
}

function stepChips(ex) {
  // one line per step: a chip with its level and truth, the step's text, its statement
  const list = el("ol", "chain");
  for (const s of ex.steps) {
    const li = el("li");
    const chip = el("span", "chip " + (s.level === null ? "level-none" : "level-" + s.level),
                    (s.level === null ? "–" : s.level) + (s.correct === null ? "" : (s.correct ? " ✓" : " ✗")));
    li.append(chip, el("span", null, s.text));
    if (s.statement) li.appendChild(el("span", "statement", " — " + s.statement));
    if (s.matched) li.appendChild(el("div", "muted", "matched: " + s.matched
                                     + (s.match_degree === null ? "" : " (degree " + s.match_degree.toFixed(2) + ")")));
    list.appendChild(li);
  }
  return list;
}

async function loadExamples(append) {
  const split = document.getElementById("split").value;
  const model = document.getElementById("model").value;
  const level = document.getElementById("level").value;
  if (!split || !model) return;
  if (!append) offset = 0;
  const q = new URLSearchParams({ split, model, limit: PAGE, offset });
  if (level) q.set("level", level);
  try {
    const data = await getJSON("/api/results/examples?" + q.toString());
    const body = document.querySelector("#examples tbody");
    if (!append) body.replaceChildren();
    data.examples.forEach((ex, i) => {
      const tr = el("tr");
      tr.dataset.error = ex.error === null ? "" : ex.error;
      tr.appendChild(el("td", null, data.offset + i + 1));
      const idCell = el("td");
      if (ex.has_image) {
        const img = el("img", "thumb");
        img.src = "/api/results/image?" + new URLSearchParams({ split, id: ex.example_id }).toString();
        img.alt = ex.example_id;
        img.loading = "lazy";
        idCell.appendChild(img);
      }
      idCell.appendChild(el("div", null, ex.example_id));
      tr.appendChild(idCell);
      tr.appendChild(el("td", null, ex.question === null ? "–" : ex.question));
      tr.appendChild(el("td", null, fmt(ex.error)));
      const answer = el("td", ex.answer_correct ? "right" : "wrong",
                        (ex.answer === null ? "(none)" : ex.answer) + (ex.answer_correct ? " ✓" : " ✗"));
      if (!ex.answer_correct && ex.reference) answer.appendChild(el("div", "muted", "reference: " + ex.reference.join(" / ")));
      tr.appendChild(answer);
      const steps = el("td");
      steps.appendChild(stepChips(ex));
      tr.appendChild(steps);
      body.appendChild(tr);
    });
    offset = data.offset + data.examples.length;
    document.getElementById("count").textContent = data.total + " examples (" + data.source
      + " confidence of " + data.model + " on " + data.split + (level ? ", with a step at level " + level : "") + ")";
    document.getElementById("more").hidden = offset >= data.total;
  } catch (e) {
    showError("Error: " + e.message);
  }
}

function refresh() {
  renderFigures(summary.figures);
  loadExamples(false);
}

document.addEventListener("DOMContentLoaded", async () => {
  try {
    summary = await getJSON("/api/results");
  } catch (e) {
    document.getElementById("run-info").textContent = "";
    showError("Error: " + e.message);
    return;
  }
  document.getElementById("run-info").textContent = "run: " + summary.run
    + (summary.complete ? "" : " (evaluate stage not complete: partial results)");
  renderTable(summary.table);
  fillSelect("split", summary.splits);
  fillSelect("model", summary.models);
  if (summary.splits.includes("test")) document.getElementById("split").value = "test";
  // the newest trained model first: rl, else sft, else whatever there is
  const preferred = ["rl", "sft"].find(m => summary.models.includes(m));
  if (preferred) document.getElementById("model").value = preferred;
  for (const id of ["split", "model", "level"]) document.getElementById(id).addEventListener("change", refresh);
  document.getElementById("more").addEventListener("click", () => loadExamples(true));
  refresh();
  document.body.dataset.state = "ready";
});
