// Live refreshes that do not take away what the operator is doing (the project's own script).
//
// A region marked data-keep-edits is refreshed by htmx on live events (sse:..., mes-changed).
// While the operator works in it — a dialog open, a field focused, or a field changed from what
// the server rendered — a refresh would replace their typing, so it is held back (the region is
// marked data-keep-edits-pending) and issued once the region is idle again: the dialog closes,
// the focus leaves, the form is sent successfully (its action answers with mes-changed) or reset.
// The deferred request is the same htmx request, made later, so it fetches the data of that time.
(function () {
  "use strict";
  var pending = new Map(); // region -> function issuing the held-back refresh

  function edited(field) {
    if (field.type === "hidden" || field.disabled) return false;
    if (field.type === "checkbox" || field.type === "radio") {
      return field.checked !== field.defaultChecked;
    }
    if (field.tagName === "SELECT") {
      for (var i = 0; i < field.options.length; i++) {
        var o = field.options[i];
        if (o.selected !== o.defaultSelected && (o.defaultSelected || i > 0 || field.multiple)) {
          return true;
        }
      }
      return false;
    }
    return field.value !== field.defaultValue;
  }

  function busy(region) {
    if (region.querySelector("dialog[open]")) return true;
    var active = document.activeElement;
    if (active && region.contains(active) && active.matches("input, select, textarea")) {
      return true;
    }
    var fields = region.querySelectorAll("input, select, textarea");
    for (var i = 0; i < fields.length; i++) if (edited(fields[i])) return true;
    return false;
  }

  function regionOf(detail) {
    var elt = detail.elt;
    if (elt && elt.hasAttribute && elt.hasAttribute("data-keep-edits")) return elt;
    var target = detail.target;
    // A refresh whose element sits outside the region it swaps (hx-target / hx-select).
    if (target && target.hasAttribute && target.hasAttribute("data-keep-edits")) {
      return target;
    }
    return null;
  }

  document.addEventListener("htmx:confirm", function (evt) {
    var region = regionOf(evt.detail);
    if (!region || !busy(region)) return;
    evt.preventDefault();
    pending.set(region, evt.detail.issueRequest);
    region.setAttribute("data-keep-edits-pending", "");
  });

  // A refresh already on its way when the operator starts working in the region (a dialog
  // opened after it was sent) is held back at swap time too, and sent again once idle.
  document.addEventListener("htmx:beforeSwap", function (evt) {
    var detail = evt.detail;
    var config = detail.requestConfig;
    if (!config || config.verb !== "get") return; // an action's own answer always shows
    var region = regionOf({ elt: config.elt, target: detail.target });
    if (!region || !busy(region)) return;
    detail.shouldSwap = false;
    var path = detail.pathInfo.requestPath;
    var source = config.elt;
    pending.set(region, function () {
      htmx.ajax("GET", path, { source: source });
    });
    region.setAttribute("data-keep-edits-pending", "");
  });

  function flush() {
    pending.forEach(function (issue, region) {
      if (!region.isConnected) {
        pending.delete(region);
        return;
      }
      if (busy(region)) return;
      pending.delete(region);
      region.removeAttribute("data-keep-edits-pending");
      issue(true);
    });
  }

  function soon() {
    // After the event's own handling (focus has moved, the dialog is closed, the form reset).
    setTimeout(flush, 0);
  }

  document.addEventListener("focusout", soon);
  // A dialog closed (Cancel, Escape, or after its form was sent) drops what was typed in it:
  // its fields would otherwise hold the region's refreshes back forever. Dialog close does not
  // bubble, hence the capture.
  document.addEventListener(
    "close",
    function (evt) {
      var dialog = evt.target;
      if (dialog && dialog.tagName === "DIALOG") {
        dialog.querySelectorAll("form").forEach(function (form) {
          form.reset();
        });
      }
      soon();
    },
    true
  );
  document.addEventListener("reset", soon, true);
  document.addEventListener("input", soon);
  // A form in a region sent successfully: its edits are done (the server answers mes-changed).
  document.addEventListener("mes-changed", function (evt) {
    var form = evt.target && evt.target.closest ? evt.target.closest("form") : null;
    if (form && form.closest("[data-keep-edits]")) form.reset();
    soon();
  });
})();
