// The dashboard's own script: the action token (kept in this tab's sessionStorage, sent as a bearer token on
// approve and abort), messages after an action, the live indicator, and clocks that count between updates.
(function () {
  "use strict";
  var KEY = "sluice-ui-token";

  function flash(text, ok) {
    var box = document.getElementById("flash");
    if (!box) return;
    box.textContent = text;
    box.className = ok ? "ok" : "error";
  }

  document.addEventListener("DOMContentLoaded", function () {
    var form = document.getElementById("token-form");
    if (form) {
      var input = document.getElementById("token");
      if (sessionStorage.getItem(KEY)) input.placeholder = "token set for this tab";
      form.addEventListener("submit", function (ev) {
        ev.preventDefault();
        var value = input.value.trim();
        if (value) sessionStorage.setItem(KEY, value); else sessionStorage.removeItem(KEY);
        input.value = "";
        input.placeholder = value ? "token set for this tab" : "needed to approve or abort";
        flash(value ? "Token set: approve and abort will send it." : "Token cleared.", true);
      });
    }
    tick();
    setInterval(tick, 1000);
  });

  // Approve and abort: one listener on the document, and a request that does not depend on the button. A live
  // update replaces the buttons with new ones at any moment; a handler bound to the old ones (htmx wires new
  // content only after it settles, and drops a request whose element left the page) would lose the click.
  document.addEventListener("click", function (ev) {
    var button = ev.target.closest ? ev.target.closest("button[data-action]") : null;
    if (!button || button.disabled) return;
    var question = button.getAttribute("data-confirm");
    if (question && !window.confirm(question)) return;
    act(button.getAttribute("data-env"), button.getAttribute("data-action"));
  });

  function act(env, action) {
    var headers = {};
    var token = sessionStorage.getItem(KEY);
    if (token) headers.Authorization = "Bearer " + token;
    fetch("/api/environments/" + encodeURIComponent(env) + "/" + encodeURIComponent(action), {
      method: "POST", headers: headers, credentials: "omit"
    }).then(function (r) {
      return r.text().then(function (text) {
        var body = {};
        try { body = JSON.parse(text || "{}"); } catch (e) { body = {}; }
        if (r.ok) {
          flash(body.env + ": " + body.action + " by " + body.by + (body.commit ? " · main at " + body.commit.slice(0, 12) : ""), true);
        } else {
          flash("Refused (" + r.status + "): " + (body.detail || r.statusText), false);
        }
      });
    }).catch(function (e) { flash(action + " failed: " + e, false); });
  }

  function live(text, cls) {
    var el = document.getElementById("live");
    if (el) { el.textContent = text; el.className = "live " + cls; }
  }
  document.addEventListener("htmx:sseOpen", function () { live("live", "on"); });
  document.addEventListener("htmx:sseError", function () { live("reconnecting…", "off"); });

  function fmt(s) {
    s = Math.max(0, Math.floor(s));
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m " + String(s % 60).padStart(2, "0") + "s";
    if (s < 86400) return Math.floor(s / 3600) + "h " + String(Math.floor(s % 3600 / 60)).padStart(2, "0") + "m";
    return Math.floor(s / 86400) + "d " + Math.floor(s % 86400 / 3600) + "h";
  }
  function tick() {
    var now = Date.now() / 1000;
    document.querySelectorAll("[data-since]").forEach(function (el) {
      el.textContent = fmt(now - parseFloat(el.getAttribute("data-since")));
    });
    document.querySelectorAll("[data-until]").forEach(function (el) {
      var left = parseFloat(el.getAttribute("data-until")) - now;
      el.textContent = left > 0 ? "in " + fmt(left) : "due";
    });
  }
})();
