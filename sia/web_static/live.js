// `sia web`: keeps a page current without reloading it. Every data-poll seconds it asks the
// server for the run's state (main[data-state]); the line on what runs now (#live) is refreshed
// each time, and when the state's version moves on, the page's body is fetched again (the same
// URL with fragment=1) and swapped into <main>, keeping open <details> open. Without this script
// every page still works: reload it by hand. It talks only to the server the page came from.
(function () {
  "use strict";
  const main = document.querySelector("main[data-state]");
  if (!main || !window.fetch) return;
  const every = Math.max(200, parseFloat(main.dataset.poll || "2") * 1000);
  const live = document.getElementById("live");
  let version = main.dataset.version;
  let lastBody = null; // the body last fetched: an unchanged one is not swapped in (open forms keep their input)

  function openSummaries() {
    return new Set(Array.from(main.querySelectorAll("details[open] > summary"), (s) => s.textContent));
  }

  async function refreshBody() {
    const url = new URL(window.location.href);
    url.searchParams.set("fragment", "1");
    const reply = await fetch(url, { cache: "no-store" });
    if (!reply.ok) return;
    const html = await reply.text();
    version = reply.headers.get("X-SIA-Version") || version;
    main.dataset.version = version;
    if (html === lastBody) return;
    lastBody = html;
    const open = openSummaries();
    main.innerHTML = html; // the server's own HTML, every value in it escaped there
    main.querySelectorAll("details > summary").forEach((s) => {
      if (open.has(s.textContent)) s.parentElement.open = true;
    });
    document.dispatchEvent(new CustomEvent("sia:updated", { detail: { version: version } }));
  }

  async function poll() {
    try {
      const reply = await fetch(main.dataset.state, { cache: "no-store" });
      if (reply.ok) {
        const state = await reply.json();
        if (live) live.textContent = state.live || "";
        if (state.version !== version) await refreshBody();
      }
    } catch (err) {
      // `sia web` stopped or restarting: keep the page as it is and try again later
    }
    window.setTimeout(poll, every);
  }

  window.setTimeout(poll, every);
})();
