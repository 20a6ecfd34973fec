// The console's few lines of script: instants in the viewer's time zone, ages that stay
// current, and a syntax check of the plan editor while typing. Everything works without it.
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

  document.addEventListener("DOMContentLoaded", function () {
    localise(document);
    checkPlan();
    const editor = document.getElementById("plan");
    if (editor) editor.addEventListener("input", checkPlan);
    document.body.addEventListener("htmx:afterSettle", function (event) { localise(event.target); });
    window.setInterval(function () { localise(document); }, 30000);
  });
})();
