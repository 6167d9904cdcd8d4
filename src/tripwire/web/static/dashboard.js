/* tripwire dashboard: render the page's figures and switch themes. */
(function () {
  "use strict";
  var root = document.documentElement;

  function dark() {
    var t = root.dataset.theme;
    if (t) return t === "dark";
    return window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches;
  }

  function themeLayout() {
    var d = dark();
    var fg = d ? "#e6edf3" : "#1b1f24", grid = d ? "#30363d" : "#e1e4e8";
    return {
      paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)",
      "font.color": fg, "xaxis.gridcolor": grid, "yaxis.gridcolor": grid,
      "xaxis.zerolinecolor": grid, "yaxis.zerolinecolor": grid
    };
  }

  function render(scope) {
    var blocks = (scope || document).querySelectorAll("script[data-figure]");
    blocks.forEach(function (block) {
      var el = document.getElementById(block.dataset.figure);
      if (!el) return;
      var fig = JSON.parse(block.textContent);
      var layout = fig.layout || {};
      layout.autosize = true;
      var narrow = window.innerWidth < 640;
      if (narrow) layout.showlegend = fig.data.length > 1 && fig.data.length <= 4;
      Plotly.newPlot(el, fig.data, layout, {
        responsive: true, displaylogo: false, displayModeBar: narrow ? false : "hover"
      });
      Plotly.relayout(el, themeLayout());
    });
    retheme();
  }

  function retheme() {
    document.querySelectorAll(".js-plotly-plot").forEach(function (el) {
      Plotly.relayout(el, themeLayout());
    });
    var button = document.getElementById("theme-toggle");
    if (button) {
      button.setAttribute("aria-pressed", dark() ? "true" : "false");
      button.textContent = dark() ? "Light theme" : "Dark theme";
    }
  }

  /* Sections computed from the lake that were not ready when the page was sent: fetch
     each one after first paint, put it in place and draw its figures. Scripts inside
     (the readout's Plotly figures) are re-created so they run. */
  function loadFragments() {
    document.querySelectorAll("[data-fragment]").forEach(function (box) {
      fetch(box.dataset.fragment, { credentials: "same-origin", headers: { Accept: "text/html" } })
        .then(function (response) {
          if (!response.ok) throw new Error("HTTP " + response.status);
          return response.text();
        })
        .then(function (html) {
          box.innerHTML = html;
          box.querySelectorAll("script:not([data-figure])").forEach(function (old) {
            var script = document.createElement("script");
            script.text = old.textContent;
            old.replaceWith(script);
          });
          box.removeAttribute("aria-busy");
          box.removeAttribute("data-fragment");
          box.classList.add("loaded");
          if (window.Plotly) render(box);
        })
        .catch(function (error) {
          console.error("tripwire: section " + box.dataset.fragment + " failed: " + error.message);
          box.removeAttribute("aria-busy");
          box.removeAttribute("data-fragment");
          box.innerHTML = '<p class="problem">This section could not be loaded (' +
            error.message + "). Reload the page to try again.</p>";
        });
    });
  }

  function toggle() {
    var next = dark() ? "light" : "dark";
    root.dataset.theme = next;
    localStorage.setItem("tw-theme", next);
    retheme();
  }

  document.addEventListener("DOMContentLoaded", function () {
    var button = document.getElementById("theme-toggle");
    if (button) button.addEventListener("click", toggle);
    if (window.Plotly) render();
    loadFragments();
    if (window.matchMedia) {
      window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", function () {
        if (!root.dataset.theme) retheme();
      });
    }
  });
})();
