// pyro-aevb: a displayed equation a little wider than the text column is drawn smaller, down to
// 75% of its size, so that it fits with its number; one wider still scrolls sideways (custom.css).
(function () {
  "use strict";
  var SMALLEST = 0.75;

  function fit() {
    document.querySelectorAll("div.math > mjx-container[display='true']").forEach(function (eq) {
      var box = eq.parentElement;
      if (!eq.dataset.fontSize) eq.dataset.fontSize = getComputedStyle(eq).fontSize;
      var size = parseFloat(eq.dataset.fontSize);
      eq.style.fontSize = size + "px";
      var ratio = box.clientWidth / box.scrollWidth;
      if (ratio < 1) eq.style.fontSize = size * Math.max(ratio, SMALLEST) + "px";
    });
  }

  function start() {
    if (!window.MathJax || !MathJax.startup || !MathJax.startup.promise) return;
    MathJax.startup.promise.then(fit);
    var pending;
    window.addEventListener("resize", function () {
      clearTimeout(pending);
      pending = setTimeout(fit, 100);
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
