// LCM's fixes to the Django admin's own markup (loaded by templates/admin/base_site.html).
//
// On a narrow screen the admin scrolls each inline table sideways inside its group; a read-only inline has
// nothing to focus, so a keyboard user could not scroll it (WCAG 2.1.1, axe scrollable-region-focusable).
// Each group becomes a focusable region named by its heading.
(() => {
  "use strict";
  document.addEventListener("DOMContentLoaded", () => {
    for (const group of document.querySelectorAll(".inline-group")) {
      const heading = group.querySelector(".inline-heading[id]");
      group.tabIndex = 0;
      group.setAttribute("role", "region");
      if (heading) group.setAttribute("aria-labelledby", heading.id);
    }
  });
})();
