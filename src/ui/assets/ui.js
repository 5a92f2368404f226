// Gantry's web view: live updates. The server announces changes as server-sent events on
// /events; this script fetches the current page's main part again and swaps it in,
// keeping the focus of a field being typed in. No other script runs on the pages.
"use strict";
(function () {
  const main = document.getElementById("main");
  const live = document.getElementById("live");
  if (!main || !main.dataset.live || !window.EventSource) return;
  let busy = false;
  let again = false;

  function say(text) {
    if (live) live.textContent = text;
  }

  async function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    try {
      const res = await fetch(window.location.href, {
        headers: { "X-Gantry-Fragment": "1" },
        credentials: "same-origin",
      });
      if (res.ok) {
        const focused = document.activeElement;
        const name = focused && main.contains(focused) ? focused.name : null;
        const value = name ? focused.value : null;
        main.innerHTML = await res.text();
        if (name) {
          const field = main.querySelector("[name='" + CSS.escape(name) + "']");
          if (field) { field.value = value; field.focus(); }
        }
        say("live, updated " + new Date().toLocaleTimeString());
      }
    } catch (e) {
      say("live: cannot reach Gantry");
    } finally {
      busy = false;
      if (again) { again = false; refresh(); }
    }
  }

  const source = new EventSource(main.dataset.live);
  source.addEventListener("changed", refresh);
  source.addEventListener("open", function () { say("live"); });
  source.addEventListener("error", function () { say("reconnecting…"); });
})();
