// The payment page: hand the signed pay params to WeChat (WeixinJSBridge in WeChat, or the
// simulator phone that hosts this page in a frame), then poll our own status until final.
(function () {
  "use strict";
  var box = document.getElementById("payment");
  if (!box) return;
  var statusUrl = box.getAttribute("data-status-url");
  var raw = box.getAttribute("data-pay-params");
  var params = raw ? JSON.parse(raw) : null;
  var button = document.getElementById("pay-button");
  var waiting = document.getElementById("pay-waiting");
  var polling = false;

  function show(id) {
    var el = document.getElementById(id);
    if (el) el.hidden = false;
  }

  function poll(triesLeft) {
    if (triesLeft <= 0) { polling = false; return; }
    fetch(statusUrl, { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { return r.json(); })
      .then(function (s) {
        box.setAttribute("data-state", s.state);
        if (s.state === "paid") {
          if (waiting) waiting.hidden = true;
          if (button) button.hidden = true;
          show("pay-paid-msg");
          window.location.reload();
          return;
        }
        if (s.state === "closed" || s.state === "failed") {
          if (waiting) waiting.hidden = true;
          show("pay-closed-msg");
          return;
        }
        setTimeout(function () { poll(triesLeft - 1); }, 1500);
      })
      .catch(function () { setTimeout(function () { poll(triesLeft - 1); }, 3000); });
  }

  function startPolling() {
    if (polling) return;
    polling = true;
    if (waiting) waiting.hidden = false;
    poll(120);
  }

  function onResult(errMsg) {
    var text = String(errMsg || "");
    if (text.indexOf(":ok") >= 0 || text === "ok") {
      startPolling();  // WeChat says paid; our status follows the notify or the query
    } else if (text.indexOf("cancel") >= 0) {
      show("pay-cancel-msg");
    } else {
      startPolling();
    }
  }

  window.addEventListener("message", function (ev) {
    var d = ev.data || {};
    if (d.type === "wechat-sim-pay-result" && ev.source === window.parent) {
      var r = d.result || {};
      onResult(r.err_msg || r);
    }
  });

  function pay() {
    if (!params) return;
    if (typeof window.WeixinJSBridge !== "undefined") {
      window.WeixinJSBridge.invoke("getBrandWCPayRequest", params, function (res) {
        onResult(res && res.err_msg);
      });
    } else if (window.parent && window.parent !== window) {
      window.parent.postMessage({ type: "wechat-sim-pay-request", params: params }, "*");
    } else {
      startPolling();
    }
  }

  if (button) button.addEventListener("click", pay);
  if (box.getAttribute("data-state") === "pending" && !params) startPolling();
})();
