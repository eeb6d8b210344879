/* Loaded in <head> without defer, before the first paint: applies the colour scheme the user chose
   (localStorage "lcm-theme": "light" or "dark"; absent = follow the system), so a dark page never
   flashes light. The chooser in the top bar is wired by prefs.js. */
(function () {
  "use strict";
  var theme = null;
  try { theme = localStorage.getItem("lcm-theme"); } catch (e) { /* storage blocked: follow the system */ }
  if (theme === "light" || theme === "dark") document.documentElement.setAttribute("data-theme", theme);
})();
