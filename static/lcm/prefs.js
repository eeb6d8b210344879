/* The pages' reading aids (issue 19):
   - times: every <time datetime="…" data-fmt="Y-m-d H:i"> is rewritten to the user's time zone (browser
     detected, or the one chosen in the top bar: localStorage "lcm-tz" = "UTC"), the UTC value stays in
     the tooltip; <time data-rel="starts|started"> says "starts in 12 min" / "started 3 min ago" and is
     kept current;
   - tables: each cell gets the column's name as data-label, so small screens show stacked rows
     (label: value); a table wider than its card is stacked too instead of being clipped;
   - the colour-scheme chooser (light / dark / system) and the time-zone chooser in the top bar.
   Content swapped in by live updates is handled as it arrives (a MutationObserver). */
(function () {
  "use strict";
  var DAYS = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];

  function storageGet(key) {
    try { return localStorage.getItem(key); } catch (e) { return null; }
  }
  function storageSet(key, value) {
    try {
      if (value === null) localStorage.removeItem(key); else localStorage.setItem(key, value);
    } catch (e) { /* storage blocked: the choice lasts for this page only */ }
  }

  function browserZone() {
    try { return Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC"; } catch (e) { return "UTC"; }
  }
  function validZone(name) {
    try { new Intl.DateTimeFormat("en-GB", { timeZone: name }); return true; } catch (e) { return false; }
  }
  // The chosen zone (localStorage "lcm-tz": "UTC" or any IANA name), else the browser's.
  function zone() {
    var chosen = storageGet("lcm-tz");
    return chosen && validZone(chosen) ? chosen : browserZone();
  }

  // The wall-clock parts of `date` in `tz`.
  function parts(date, tz) {
    var out = {};
    new Intl.DateTimeFormat("en-GB", {
      timeZone: tz, year: "numeric", month: "2-digit", day: "2-digit", weekday: "short",
      hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23"
    }).formatToParts(date).forEach(function (p) { out[p.type] = p.value; });
    return out;
  }

  // A Django date format of the letters Y m d D H i s (others are kept as they are).
  function format(date, fmt, tz) {
    var p = parts(date, tz);
    var map = { Y: p.year, m: p.month, d: p.day, H: p.hour, i: p.minute, s: p.second, D: p.weekday };
    var out = "";
    for (var k = 0; k < fmt.length; k++) {
      var c = fmt.charAt(k);
      if (c === "\\" && k + 1 < fmt.length) { out += fmt.charAt(++k); continue; }
      out += Object.prototype.hasOwnProperty.call(map, c) ? map[c] : c;
    }
    return out;
  }

  // As lcm.templatetags.timefmt.relative writes it.
  function relative(date, verbs) {
    var seconds = (date.getTime() - Date.now()) / 1000;
    var minutes = Math.floor(Math.abs(seconds) / 60);
    var pair = (verbs || "").split("|");
    var future = pair[0] || "", past = pair[1] || future;
    if (minutes < 1) return ((seconds > 0 ? future : past) + " now").trim();
    var span;
    if (minutes < 60) span = minutes + " min";
    else if (minutes < 48 * 60) span = Math.floor(minutes / 60) + " h " + String(minutes % 60).padStart(2, "0") + " min";
    else span = Math.floor(minutes / 1440) + " days";
    return seconds > 0 ? (future + " in " + span).trim() : (past + " " + span + " ago").trim();
  }

  function utcTitle(date) { return format(date, "Y-m-d H:i:s", "UTC") + " UTC"; }

  function setText(el, text) { if (el.textContent !== text) el.textContent = text; }
  function setAttr(el, name, value) { if (el.getAttribute(name) !== value) el.setAttribute(name, value); }

  function renderTimes(root) {
    var tz = zone();
    root.querySelectorAll("time[datetime]").forEach(function (el) {
      var date = new Date(el.getAttribute("datetime"));
      if (isNaN(date.getTime())) return;
      if (el.hasAttribute("data-rel")) {
        setText(el, relative(date, el.getAttribute("data-rel")));
        setAttr(el, "title", format(date, "Y-m-d H:i", tz) + (tz === "UTC" ? "" : " " + tz) + " · " + utcTitle(date));
      } else if (el.hasAttribute("data-fmt")) {
        setText(el, format(date, el.getAttribute("data-fmt"), tz));
        setAttr(el, "title", utcTitle(date));
        setAttr(el, "data-tz", tz);
      }
    });
  }

  // Tables: label every cell with its column's header, for the stacked rows of small screens.
  function labelTables(root) {
    root.querySelectorAll("table").forEach(function (table) {
      var heads = table.querySelectorAll(":scope > thead > tr > th");
      if (!heads.length) return;
      var names = [];
      heads.forEach(function (th) {
        var span = parseInt(th.getAttribute("colspan") || "1", 10);
        for (var k = 0; k < span; k++) names.push(th.textContent.trim());
      });
      table.querySelectorAll(":scope > tbody > tr").forEach(function (tr) {
        var col = 0;
        Array.prototype.forEach.call(tr.children, function (cell) {
          var name = names[col] || "";
          if (name && !cell.hasAttribute("data-label")) cell.setAttribute("data-label", name);
          col += parseInt(cell.getAttribute("colspan") || "1", 10);
        });
      });
      setAttr(table, "data-labelled", "");
    });
  }

  // A table wider than its card is shown as stacked rows (never clipped, never a sideways scroll).
  function fitTables(root) {
    root.querySelectorAll("table[data-labelled]").forEach(function (table) {
      var box = table.closest(".table-wrap") || table.parentElement;
      if (!box) return;
      if (table.classList.contains("table-stacked")) {
        // Try the table layout again when the box got wider than when the table was stacked.
        if (box.clientWidth <= (parseFloat(table.getAttribute("data-stacked-at")) || 0) + 1) return;
        table.classList.remove("table-stacked");
      }
      if (Math.max(table.scrollWidth, box.scrollWidth) > box.clientWidth + 1) {
        table.classList.add("table-stacked");
        table.setAttribute("data-stacked-at", String(box.clientWidth));
      }
    });
  }

  function refresh(root) {
    renderTimes(root);
    labelTables(root);
    fitTables(document);
  }

  function addZone(select, name) {
    var option = document.createElement("option");
    option.value = name;
    option.textContent = name.replace(/_/g, " ");
    select.appendChild(option);
  }

  function wireChoosers() {
    var theme = document.getElementById("theme-choice");
    if (theme) {
      theme.value = storageGet("lcm-theme") || "system";
      theme.addEventListener("change", function () {
        var value = theme.value;
        storageSet("lcm-theme", value === "system" ? null : value);
        if (value === "system") document.documentElement.removeAttribute("data-theme");
        else document.documentElement.setAttribute("data-theme", value);
      });
    }
    var tz = document.getElementById("tz-choice");
    if (tz) {
      var local = tz.querySelector('option[value="local"]');
      if (local) local.textContent = "Local time (" + browserZone() + ")";
      var chosen = storageGet("lcm-tz");
      if (chosen && validZone(chosen) && !tz.querySelector('option[value="' + chosen + '"]')) addZone(tz, chosen);
      tz.value = chosen && validZone(chosen) ? chosen : "local";
      // Every other zone the browser knows, listed the first time the chooser is used.
      var listZones = function () {
        if (tz.dataset.full || !Intl.supportedValuesOf) return;
        tz.dataset.full = "1";
        Intl.supportedValuesOf("timeZone").forEach(function (name) {
          if (name !== "UTC" && !tz.querySelector('option[value="' + name + '"]')) addZone(tz, name);
        });
      };
      tz.addEventListener("focus", listZones);
      tz.addEventListener("mousedown", listZones);
      tz.addEventListener("change", function () {
        storageSet("lcm-tz", tz.value === "local" ? null : tz.value);
        renderTimes(document);
        document.querySelectorAll("input[data-utc-input]").forEach(hintInput);
      });
    }
  }

  // Under a UTC date-time field: the typed time in the user's zone ("= 15:30 Europe/Berlin").
  function hintInput(input) {
    var hint = input.parentElement && input.parentElement.querySelector(".tz-hint");
    if (!hint) {
      hint = document.createElement("small");
      hint.className = "tz-hint muted";
      hint.setAttribute("aria-live", "polite");
      input.insertAdjacentElement("afterend", hint);
    }
    var match = /^(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}(:\d{2})?)$/.exec(input.value.trim());
    var tz = zone();
    var date = match ? new Date(match[1] + "T" + match[2] + "Z") : null;
    setText(hint, date && !isNaN(date.getTime()) && tz !== "UTC" ? "= " + format(date, "Y-m-d H:i", tz) + " " + tz : "");
  }
  document.addEventListener("input", function (event) {
    if (event.target.matches && event.target.matches("input[data-utc-input]")) hintInput(event.target);
  });

  var pending = false;
  function schedule() {
    if (pending) return;
    pending = true;
    window.requestAnimationFrame(function () { pending = false; refresh(document); });
  }

  function start() {
    wireChoosers();
    refresh(document);
    document.querySelectorAll("input[data-utc-input]").forEach(function (input) { if (input.value) hintInput(input); });
    new MutationObserver(function (records) {
      for (var k = 0; k < records.length; k++) {
        if (records[k].addedNodes.length) { schedule(); return; }
      }
    }).observe(document.body, { childList: true, subtree: true });
    window.addEventListener("resize", schedule);
    document.addEventListener("toggle", schedule, true);  // an opened <details> may hold a wide table
    setInterval(function () { renderTimes(document); }, 30000);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
