// The simulator's phone page. Plain DOM code, no framework, no build step.
(function () {
  "use strict";
  var state = { openid: localStorage.getItem("wxsim.openid"), data: null, frameOpen: false };
  var $ = function (id) { return document.getElementById(id); };
  window.wxsim = { hooks: {}, state: state };  // the Pay part registers its handlers here

  function api(path, body) {
    var options = body === undefined ? {} : {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body)
    };
    return fetch("/phone/api/" + path, options).then(function (r) {
      return r.json().then(function (data) {
        if (!r.ok) { throw new Error(data.error || ("HTTP " + r.status)); }
        return data;
      });
    });
  }

  function report(delivery) {
    $("status").textContent = delivery && delivery.ok === false
      ? delivery.outcome + " (" + delivery.statuses.join(", ") + ")" : "";
  }

  function fail(err) { $("status").textContent = String(err.message || err); }

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) { node.className = cls; }
    if (text !== undefined) { node.textContent = text; }
    return node;
  }

  function renderUsers(data) {
    var list = $("user-list");
    list.textContent = "";
    data.users.forEach(function (u) {
      var li = el("li", u.openid === state.openid ? "current" : "");
      li.appendChild(el("span", "", u.nickname));
      li.appendChild(el("span", "tag", u.following ? "已关注" : "未关注"));
      li.addEventListener("click", function () { choose(u.openid); });
      list.appendChild(li);
    });
    var user = data.user;
    $("btn-follow").disabled = !user || user.following;
    $("btn-unfollow").disabled = !user || !user.following;
    document.querySelector("#scan button").disabled = !user;
    var canChat = !!(user && user.following);
    document.querySelector("#composer input").disabled = !canChat;
    document.querySelector("#composer button").disabled = !canChat;
  }

  function renderCard(card) {
    var box = el("div", "card");
    box.appendChild(el("h3", "", card.template_id));
    var dl = el("dl");
    Object.keys(card.data || {}).forEach(function (key) {
      dl.appendChild(el("dt", "", key));
      dl.appendChild(el("dd", "", card.data[key]));
    });
    box.appendChild(dl);
    if (card.url) {
      box.appendChild(el("div", "more", "详情 ›"));
      box.addEventListener("click", function () { openFrame(viaOAuth(card.url)); });
    }
    return box;
  }

  function renderChat(data) {
    var chat = $("chat");
    var atBottom = chat.scrollTop + chat.clientHeight >= chat.scrollHeight - 4;
    chat.textContent = "";
    data.chat.forEach(function (m) {
      var row = el("div", "msg " + m.sender);
      row.appendChild(m.kind === "card" && m.card ? renderCard(m.card) : el("div", "bubble", m.text));
      chat.appendChild(row);
    });
    if (atBottom) { chat.scrollTop = chat.scrollHeight; }
  }

  function renderMenu(data) {
    var nav = $("menu");
    nav.textContent = "";
    if (!data.menu || !data.user || !data.user.following) {
      nav.appendChild(el("div", "empty", data.menu ? "关注后显示菜单" : "菜单未推送（frontdesk wechat push-menu）"));
      return;
    }
    data.menu.button.forEach(function (b) {
      var cell = el("div");
      var top = el("button", "top", b.name);
      top.type = "button";
      cell.appendChild(top);
      if (b.sub_button && b.sub_button.length) {
        var sub = el("div", "sub");
        b.sub_button.forEach(function (s) {
          var item = el("button", "", s.name);
          item.type = "button";
          item.addEventListener("click", function () { sub.classList.remove("open"); press(s); });
          sub.appendChild(item);
        });
        cell.appendChild(sub);
        top.addEventListener("click", function () { sub.classList.toggle("open"); });
      } else {
        top.addEventListener("click", function () { press(b); });
      }
      nav.appendChild(cell);
    });
  }

  function viaOAuth(url) {
    var front = state.data ? state.data.front : "";
    var target = url;
    try { var u = new URL(url); target = u.pathname + u.search; } catch (e) { /* a path */ }
    return front + "/wechat/oauth/start?next=" + encodeURIComponent(target);
  }

  function press(button) {
    if (button.type === "view") {
      api("view", { openid: state.openid, url: button.url }).then(function (r) {
        report(r); openFrame(r.frame);
      }).catch(fail);
    } else {
      api("click", { openid: state.openid, key: button.key }).then(report).then(refresh).catch(fail);
    }
  }

  function openFrame(src) {
    $("h5-frame").src = src;
    $("h5").hidden = false;
    $("btn-back").hidden = false;
    state.frameOpen = true;
  }

  function closeFrame() {
    $("h5").hidden = true;
    $("btn-back").hidden = true;
    $("h5-frame").src = "about:blank";
    state.frameOpen = false;
  }

  function refresh() {
    var query = state.openid ? "?openid=" + encodeURIComponent(state.openid) : "";
    return api("state" + query).then(function (data) {
      state.data = data;
      if (!data.user) { state.openid = null; }
      renderUsers(data); renderChat(data); renderMenu(data);
    }).catch(fail);
  }

  function choose(openid) {
    api("select", { openid: openid }).then(function () {
      state.openid = openid;
      localStorage.setItem("wxsim.openid", openid);
      closeFrame();
      return refresh();
    }).catch(fail);
  }

  $("new-user").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var input = ev.target.elements.nickname;
    api("users", { nickname: input.value }).then(function (u) {
      input.value = ""; choose(u.openid);
    }).catch(fail);
  });
  $("btn-follow").addEventListener("click", function () {
    api("follow", { openid: state.openid }).then(report).then(refresh).catch(fail);
  });
  $("btn-unfollow").addEventListener("click", function () {
    api("unfollow", { openid: state.openid }).then(report).then(refresh).catch(fail);
  });
  $("scan").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var scene = ev.target.elements.scene.value || "lobby";
    api("scan", { openid: state.openid, scene: scene }).then(report).then(refresh).catch(fail);
  });
  $("composer").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var input = ev.target.elements.text;
    var text = input.value;
    if (!text) { return; }
    input.value = "";
    api("send", { openid: state.openid, text: text }).then(report).then(refresh).catch(fail);
  });
  $("btn-back").addEventListener("click", closeFrame);

  // --- WeChat Pay in the phone ---------------------------------------------------------
  // An H5 page inside the frame asks for getBrandWCPayRequest by posting
  // {type: "wechat-sim-pay-request", params: {...}} to its parent (this page), standing in
  // for WeixinJSBridge. The pay sheet (served by the Pay simulator) checks paySign and
  // posts {type: "wechat-sim-pay", result} back; the result goes to the H5 frame.
  function frontOrigin() {
    try { return new URL(state.data ? state.data.front : "").origin; } catch (e) { return null; }
  }

  window.addEventListener("message", function (ev) {
    var msg = ev.data || {};
    if (msg.type === "wechat-sim-pay-request" && ev.origin === frontOrigin()) {
      var p = msg.params || {};
      var query = ["appId", "timeStamp", "nonceStr", "package", "signType", "paySign"]
        .map(function (k) { return k + "=" + encodeURIComponent(p[k] || ""); }).join("&");
      $("pay-frame").src = "/sim/pay/sheet?" + query;
      $("pay-hook").hidden = false;
    } else if (msg.type === "wechat-sim-pay" && ev.origin === window.location.origin) {
      $("pay-hook").hidden = true;
      $("pay-frame").src = "about:blank";
      var frame = $("h5-frame").contentWindow;
      if (frame && frontOrigin()) {
        frame.postMessage({ type: "wechat-sim-pay-result", result: msg.result }, frontOrigin());
      }
    }
  });

  $("paycode").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var scenario = ev.target.elements.scenario.value;
    fetch("/sim/pay/auth-code?scenario=" + encodeURIComponent(scenario))
      .then(function (r) { return r.json(); })
      .then(function (data) {
        var code = data.auth_code || "";
        $("paycode-digits").textContent = code.replace(/(\d{4})(?=\d)/g, "$1 ");
      }).catch(fail);
  });

  var sms = $("sms");
  if (sms) {
    sms.addEventListener("submit", function (ev) {
      ev.preventDefault();
      var phone = ev.target.elements.phone.value;
      fetch(sms.dataset.base + "/sim/inbox?phone=" + encodeURIComponent(phone))
        .then(function (r) { return r.json(); })
        .then(function (messages) {
          var list = $("sms-list");
          list.textContent = "";
          messages.slice().reverse().forEach(function (m) { list.appendChild(el("li", "", m.text)); });
          if (!messages.length) { list.appendChild(el("li", "muted", "没有短信")); }
        }).catch(fail);
    });
  }

  if (state.openid) { api("select", { openid: state.openid }).catch(function () {}); }
  refresh();
  setInterval(refresh, 2000);
})();
