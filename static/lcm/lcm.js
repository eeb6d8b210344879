/* Small behaviours for the LCM pages: dismissible toasts, a clear message when a request fails,
   and a return to the login page when the login session has expired during live updates. */
(function () {
  "use strict";

  function toast(text, level, key) {
    var area = document.getElementById("toasts");
    if (!area) return;
    if (key && area.querySelector('[data-key="' + key + '"]')) return;
    var box = document.createElement("div");
    box.className = "toast toast-" + (level || "info");
    box.setAttribute("role", level === "error" || level === "warning" ? "alert" : "status");
    if (key) box.dataset.key = key;
    var span = document.createElement("span");
    span.className = "toast-text";
    span.textContent = text;
    var close = document.createElement("button");
    close.type = "button";
    close.className = "toast-close";
    close.setAttribute("aria-label", "Dismiss message");
    close.textContent = "×";
    box.appendChild(span);
    box.appendChild(close);
    area.appendChild(box);
    schedule(box);
  }

  // Success and info messages leave by themselves; warnings and errors stay until dismissed.
  function schedule(box) {
    if (box.dataset.timed || !/toast-(success|info)/.test(box.className)) return;
    box.dataset.timed = "1";
    setTimeout(function () { box.remove(); }, 8000);
  }

  function scheduleAll() {
    document.querySelectorAll("#toasts .toast").forEach(schedule);
  }

  document.addEventListener("click", function (event) {
    var close = event.target.closest(".toast-close");
    if (close) close.closest(".toast").remove();
  });

  // "Copy candidate link" and the like: copy `data-copy` to the clipboard and say so.
  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-copy]");
    if (!button) return;
    var text = button.getAttribute("data-copy");
    var done = function () { toast(button.getAttribute("data-copied") || "Copied", "success"); };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, function () { fallbackCopy(text) && done(); });
    } else if (fallbackCopy(text)) {
      done();
    }
  });

  function fallbackCopy(text) {
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.style.position = "fixed";
    area.style.opacity = "0";
    document.body.appendChild(area);
    area.select();
    var ok = false;
    try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
    area.remove();
    if (!ok) toast("Copy this link by hand: " + text, "warning");
    return ok;
  }

  document.addEventListener("DOMContentLoaded", scheduleAll);
  document.addEventListener("htmx:afterSettle", scheduleAll);

  // A poll answered by the login page means the login session expired: go there instead of
  // swapping a login form into a fragment.
  document.addEventListener("htmx:beforeSwap", function (event) {
    var url = event.detail.xhr && event.detail.xhr.responseURL;
    if (url && url.indexOf("/accounts/login/") !== -1) {
      event.detail.shouldSwap = false;
      window.location.assign("/accounts/login/?next=" + encodeURIComponent(window.location.pathname));
    }
  });

  document.addEventListener("htmx:responseError", function (event) {
    var status = event.detail.xhr.status;
    var text = status === 403 ? "You are not allowed to do that."
      : status === 404 ? "That no longer exists. Reload the page."
      : "The server could not handle that (HTTP " + status + "). Nothing was changed; try again.";
    toast(text, "error");
  });

  // Live updates keep polling while the server is unreachable; say so once, clear it when back.
  document.addEventListener("htmx:sendError", function () {
    toast("Cannot reach the server. Live updates resume when it is back.", "warning", "offline");
  });
  document.addEventListener("htmx:afterRequest", function (event) {
    if (event.detail.successful) {
      var offline = document.querySelector('#toasts [data-key="offline"]');
      if (offline) offline.remove();
    }
  });
})();
