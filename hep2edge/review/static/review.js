// hep2edge review: live worklist rows and keyboard shortcuts. No framework, no build step.
"use strict";

function typing(event) {
  const t = event.target;
  return t && (t.tagName === "TEXTAREA" || t.tagName === "SELECT" ||
               (t.tagName === "INPUT" && !["checkbox", "radio"].includes(t.type)));
}

function startWorklist() {
  const body = document.getElementById("rows");
  const live = document.getElementById("live");
  let current = -1;
  const rows = () => Array.from(body.querySelectorAll("tr.row"));
  const mark = () => rows().forEach((r, i) => r.classList.toggle("current", i === current));
  async function refresh() {
    try {
      const response = await fetch(body.dataset.src, {credentials: "same-origin", cache: "no-store"});
      if (!response.ok || response.headers.get("X-Worklist") !== "rows") throw new Error(String(response.status));
      const html = await response.text();
      if (html !== body.dataset.last) {
        const key = current >= 0 && rows()[current] ? rows()[current].dataset.key : null;
        body.innerHTML = html;
        body.dataset.last = html;
        current = key ? rows().findIndex(r => r.dataset.key === key) : -1;
        mark();
      }
      live.textContent = "live · " + new Date().toLocaleTimeString();
      live.classList.remove("stale");
    } catch (err) {
      live.textContent = "not updating (" + err.message + ")";
      live.classList.add("stale");
    }
  }
  setInterval(refresh, Number(body.dataset.poll) || 2000);
  body.addEventListener("click", event => {
    const row = event.target.closest("tr.row");
    if (row && event.target.tagName !== "A") window.location = row.dataset.href;
  });
  document.addEventListener("keydown", event => {
    if (typing(event) || event.ctrlKey || event.metaKey || event.altKey) return;
    const all = rows();
    if (event.key === "j" || event.key === "k") {
      current = Math.max(0, Math.min(all.length - 1, current + (event.key === "j" ? 1 : -1)));
      mark();
      if (all[current]) all[current].scrollIntoView({block: "nearest"});
    } else if (event.key === "Enter" && all[current]) {
      window.location = all[current].dataset.href;
    }
  });
}

function startSpecimen() {
  const form = document.getElementById("review");
  const order = document.getElementById("order");
  const hint = document.getElementById("hint");
  const boxes = Array.from(form.querySelectorAll("input[name=pattern]"));
  const initialPatterns = form.dataset.initialPatterns.split(",").filter(Boolean).sort().join(",");
  const initialIntensity = form.dataset.initialIntensity;
  let selected = order.value.split(",").filter(Boolean);

  const checked = () => boxes.filter(b => b.checked).map(b => b.value);
  const intensity = () => (form.querySelector("input[name=intensity]:checked") || {}).value || "";
  const changed = () => checked().sort().join(",") !== initialPatterns || intensity() !== initialIntensity;
  function sync() {
    const now = checked();
    selected = selected.filter(p => now.includes(p)).concat(now.filter(p => !selected.includes(p)));
    order.value = selected.join(",");
    const correcting = changed();
    document.getElementById("confirm").classList.toggle("default", !correcting);
    document.getElementById("correct").classList.toggle("default", correcting);
    hint.textContent = changed() ? "Enter saves the correction: " + (selected.join(" + ") || "no pattern") +
      " / " + (intensity() || "no intensity") : "Enter confirms the result shown";
  }
  form.addEventListener("change", sync);
  sync();

  document.querySelectorAll("img.zoomable").forEach(img =>
    img.addEventListener("click", () => img.closest("figure").classList.toggle("zoomed")));

  document.addEventListener("keydown", event => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.key === "Enter" && event.target.tagName !== "TEXTAREA" && event.target.tagName !== "BUTTON") {
      event.preventDefault();
      const button = document.getElementById(changed() ? "correct" : "confirm");
      if (!button.disabled) form.requestSubmit(button);
      return;
    }
    if (typing(event)) return;
    const box = boxes.find(b => b.dataset.key === event.key);
    if (box) {
      box.checked = !box.checked;
      sync();
    } else if (event.key === "j" || event.key === "k") {
      const link = document.getElementById(event.key === "j" ? "next" : "prev");
      if (link) window.location = link.href;
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const page = document.body.dataset.page;
  if (page === "worklist") startWorklist();
  if (page === "specimen") startSpecimen();
});
