// The simulator's pay sheet: posts the getBrandWCPayRequest parameters back to the simulator,
// which checks paySign the way the WeChat client would, then reports the result to the page
// that opened it (window.parent / opener via postMessage) and, if given, returns to it.
(function () {
  "use strict";
  var sheet = document.getElementById("sheet");
  if (!sheet) { return; }
  var fields = ["appId", "timeStamp", "nonceStr", "package", "signType", "paySign"];

  function params() {
    var out = {};
    fields.forEach(function (name) { out[name] = sheet.getAttribute("data-" + name.toLowerCase()) || ""; });
    return out;
  }

  function report(result) {
    var message = { type: "wechat-sim-pay", result: result };
    if (window.parent && window.parent !== window) { window.parent.postMessage(message, "*"); }
    if (window.opener) { window.opener.postMessage(message, "*"); }
    var back = sheet.getAttribute("data-return");
    if (back && back.charAt(0) === "/" && back.charAt(1) !== "/") {
      setTimeout(function () {
        window.location.href = back + (back.indexOf("?") < 0 ? "?" : "&") +
          "err_msg=" + encodeURIComponent(result.err_msg);
      }, 800);
    }
  }

  function send(action) {
    var buttons = document.querySelectorAll("button");
    Array.prototype.forEach.call(buttons, function (b) { b.disabled = true; });
    var body = params();
    body.action = action;
    fetch("/sim/pay/confirm", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body)
    }).then(function (response) { return response.json(); }).then(function (result) {
      var text = { "get_brand_wcpay_request:ok": "支付成功",
                   "get_brand_wcpay_request:cancel": "已取消",
                   "get_brand_wcpay_request:fail": "支付失败" }[result.err_msg] || result.err_msg;
      document.getElementById("result").textContent = text + (result.reason ? "：" + result.reason : "");
      report(result);
    }).catch(function () {
      document.getElementById("result").textContent = "网络错误";
      Array.prototype.forEach.call(buttons, function (b) { b.disabled = false; });
    });
  }

  var pay = document.getElementById("pay");
  if (pay) { pay.addEventListener("click", function () { send("pay"); }); }
  var cancel = document.getElementById("cancel");
  if (cancel) { cancel.addEventListener("click", function () { send("cancel"); }); }
  var fail = document.getElementById("fail");
  if (fail) { fail.addEventListener("click", function () { send("fail"); }); }
}());
