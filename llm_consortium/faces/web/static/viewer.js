// llm-consortium viewer: members' tabs on narrow screens, and a run in
// progress updated in place from the server's events. The HTML it swaps in
// is built (and escaped) by the server; nothing here builds markup.
(function () {
  "use strict";
  document.documentElement.classList.add("js");

  function selectTab(box, index) {
    box.querySelectorAll(".tab").forEach(function (tab) {
      tab.setAttribute("aria-selected", tab.dataset.tab === index ? "true" : "false");
    });
    box.querySelectorAll(".member").forEach(function (panel) {
      panel.classList.toggle("active", panel.dataset.panel === index);
    });
  }

  document.addEventListener("click", function (event) {
    var tab = event.target.closest(".tab");
    if (tab) selectTab(tab.closest(".members"), tab.dataset.tab);
  });

  // What the reader opened or chose, kept across an update.
  function remember(root) {
    var state = { open: {}, tabs: {} };
    root.querySelectorAll("details[data-key]").forEach(function (d) { state.open[d.dataset.key] = d.open; });
    root.querySelectorAll(".members[data-key]").forEach(function (box) {
      var chosen = box.querySelector('.tab[aria-selected="true"]');
      if (chosen) state.tabs[box.dataset.key] = chosen.dataset.tab;
    });
    return state;
  }

  function restore(root, state) {
    root.querySelectorAll("details[data-key]").forEach(function (d) {
      if (d.dataset.key in state.open) d.open = state.open[d.dataset.key];
    });
    root.querySelectorAll(".members[data-key]").forEach(function (box) {
      var index = state.tabs[box.dataset.key];
      if (index !== undefined && box.querySelector('.tab[data-tab="' + CSS.escape(index) + '"]')) selectTab(box, index);
    });
  }

  // A running run's clock, as the server words a duration (pages.duration).
  function tick() {
    document.querySelectorAll("[data-since]").forEach(function (clock) {
      var seconds = (Date.now() - Date.parse(clock.dataset.since)) / 1000;
      if (seconds >= 0) clock.textContent = seconds < 120 ? seconds.toFixed(1) + " s" : (seconds / 60).toFixed(1) + " min";
    });
  }

  // The tab's title, as the banner of the run swapped in says it.
  function retitle(run) {
    var banner = run.querySelector("[data-title]");
    if (banner) document.title = banner.dataset.title + " · llm-consortium";
  }

  document.addEventListener("DOMContentLoaded", function () {
    var main = document.querySelector("main[data-live]");
    if (!main || !window.EventSource) return;
    main.dataset.state = "live";
    var clock = setInterval(tick, 1000);
    var source = new EventSource(main.dataset.live);
    source.addEventListener("update", function (event) {
      var data = JSON.parse(event.data);
      var run = document.getElementById("run");
      var state = remember(run);
      run.innerHTML = data.html;
      restore(run, state);
      retitle(run);
    });
    source.addEventListener("end", function () {
      source.close();
      clearInterval(clock);
      main.dataset.state = "ended";
    });
  });
})();
