// The console's few lines of script: instants in the viewer's time zone, ages that stay
// current, a syntax check of the plan editor while typing, and the run page's live reload
// (Server-Sent Events from /runs/{id}/live). Everything else works without it.
(function () {
  "use strict";
  const full = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });
  const relative = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });
  const units = [["day", 86400], ["hour", 3600], ["minute", 60], ["second", 1]];

  function age(date) {
    const seconds = (date.getTime() - Date.now()) / 1000;
    for (const [unit, size] of units) {
      if (Math.abs(seconds) >= size || unit === "second") {
        return relative.format(Math.round(seconds / size), unit);
      }
    }
    return "";
  }

  function localise(root) {
    for (const node of root.querySelectorAll("time[datetime]")) {
      const date = new Date(node.getAttribute("datetime"));
      if (Number.isNaN(date.getTime())) continue;
      node.title = full.format(date);
      node.textContent = node.hasAttribute("data-age") ? age(date) : full.format(date);
    }
  }

  function checkPlan() {
    const editor = document.getElementById("plan");
    const note = document.getElementById("plan-check");
    if (!editor || !note) return;
    const text = editor.value.trim();
    if (!text) { note.textContent = "No plan: the planner will make one."; return; }
    try {
      const plan = JSON.parse(text);
      const steps = Array.isArray(plan) ? plan : plan.steps;
      note.textContent = Array.isArray(steps) ? steps.length + " steps (checked by the server on create)" : "JSON, but not a list of steps";
    } catch (error) {
      note.textContent = "Not JSON yet: " + error.message;
    }
  }

  function typing() {
    const active = document.activeElement;
    if (active && ["INPUT", "TEXTAREA", "SELECT"].includes(active.tagName)) return true;
    return Array.from(document.querySelectorAll("textarea")).some(function (t) { return t.value.trim() !== ""; });
  }

  function follow() {
    const node = document.querySelector("[data-live]");
    if (!node || !window.EventSource) return;
    const source = new EventSource(node.getAttribute("data-live"));
    source.addEventListener("changed", function () {
      source.close();
      if (typing()) {
        // Never throw away what someone is writing: offer the reload instead.
        const note = document.getElementById("live-note");
        if (note) note.hidden = false;
        return;
      }
      window.location.reload();
    });
    // Leaving the page closes the stream, so the server is not left writing to nobody.
    window.addEventListener("pagehide", function () { source.close(); });
  }

  document.addEventListener("DOMContentLoaded", function () {
    localise(document);
    follow();
    checkPlan();
    const editor = document.getElementById("plan");
    if (editor) editor.addEventListener("input", checkPlan);
    document.body.addEventListener("htmx:afterSettle", function (event) { localise(event.target); });
    window.setInterval(function () { localise(document); }, 30000);
  });
})();
