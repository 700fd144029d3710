// Knock's moderator page: every action is a call to the admin API, made with the session's
// cookie and its CSRF token. Everything shown from a reply is set as text, never as HTML.
(function () {
  "use strict";
  var meta = document.querySelector('meta[name="csrf-token"]');
  if (!meta) return;
  var csrf = meta.getAttribute("content");
  var room = document.body.getAttribute("data-room") || "";
  var status = document.getElementById("status");

  function say(text) { status.textContent = text; }

  function withRoom(path) {
    return room ? path + (path.indexOf("?") < 0 ? "?" : "&") + "room=" + encodeURIComponent(room) : path;
  }

  function call(path, body, contentType) {
    return fetch(withRoom(path), {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": contentType || "application/json", "X-CSRF-Token": csrf },
      body: contentType ? body : JSON.stringify(body)
    }).then(function (r) {
      return r.text().then(function (t) {
        var j = null;
        try { j = JSON.parse(t); } catch (e) { j = null; }
        if (r.status === 401) { location.href = "/admin/login"; }
        return { ok: r.ok, status: r.status, body: j };
      });
    });
  }

  function problem(res) {
    return (res.body && res.body.error) || ("the admin API answered " + res.status);
  }

  function rowOf(user) {
    var rows = document.querySelectorAll("tr[data-user]");
    for (var i = 0; i < rows.length; i++) if (rows[i].getAttribute("data-user") === user) return rows[i];
    return null;
  }

  function finish(user, label) {
    var row = rowOf(user);
    if (!row) return;
    row.classList.add("done");
    var buttons = row.querySelectorAll("button, input");
    for (var i = 0; i < buttons.length; i++) buttons[i].disabled = true;
    var cell = row.querySelector("td.actions");
    if (cell) { var s = document.createElement("span"); s.textContent = " " + label; cell.appendChild(s); }
  }

  function decide(users, approve) {
    var reasonField = document.getElementById("reason");
    var reason = reasonField ? reasonField.value : "";
    var path = approve ? "/approve_knock" : "/reject_knock";
    var done = [], failed = [];
    return users.reduce(function (p, user) {
      return p.then(function () {
        return call(path, { user_id: user, reason: reason || undefined }).then(function (res) {
          if (res.ok) { done.push(user); finish(user, res.body && res.body.status || "done"); }
          else failed.push(user + ": " + problem(res));
        });
      });
    }, Promise.resolve()).then(function () {
      say((approve ? "Approved: " : "Rejected: ") + (done.join(", ") || "nobody") +
        (failed.length ? ". Not done: " + failed.join("; ") : "."));
    });
  }

  document.addEventListener("click", function (ev) {
    var b = ev.target.closest && ev.target.closest("button[data-action], button[data-bulk]");
    if (!b) return;
    var action = b.getAttribute("data-action");
    var user = b.getAttribute("data-user");
    if (action === "approve" || action === "reject") {
      decide([user], action === "approve");
    } else if (action === "rescind") {
      call("/rescind_invite", { user_id: user }).then(function (res) {
        if (res.ok) { finish(user, "rescinded"); say("Invite of " + user + " rescinded."); }
        else say("Not rescinded: " + problem(res));
      });
    } else if (action === "unblock") {
      var pattern = b.getAttribute("data-pattern");
      call("/unblock_user", { user_id: pattern }).then(function (res) {
        if (res.ok) { say("Removed " + pattern + " from the block-list (" + res.body.status + ")."); b.disabled = true; b.closest("tr").classList.add("done"); }
        else say("Not removed: " + problem(res));
      });
    } else if (b.hasAttribute("data-bulk")) {
      var picked = [];
      var boxes = document.querySelectorAll('input[name="user"]:checked');
      for (var i = 0; i < boxes.length; i++) if (!boxes[i].disabled) picked.push(boxes[i].value);
      if (!picked.length) { say("Select at least one knock first."); return; }
      decide(picked, b.getAttribute("data-bulk") === "approve");
    }
  });

  var all = document.getElementById("select-all");
  if (all) all.addEventListener("change", function () {
    var boxes = document.querySelectorAll('input[name="user"]');
    for (var i = 0; i < boxes.length; i++) if (!boxes[i].disabled) boxes[i].checked = all.checked;
  });

  // The block-list: a live preview of what the entry would catch, then the block itself.
  var add = document.getElementById("add-entry");
  if (add) {
    var preview = document.getElementById("preview");
    var timer = null, asked = 0;
    var entry = function () {
      var reach = add.elements.reach.value;
      var reason = add.elements.reason.value;
      return {
        user_id: add.elements.pattern.value.trim(),
        display_name: add.elements.kind.value === "display_name",
        reach: reach || undefined,
        reason: reason || undefined
      };
    };
    var show = function (p) {
      preview.textContent = "";
      var h = document.createElement("p");
      var caught = p.caught || [];
      h.textContent = caught.length
        ? "This entry (reach: " + p.reach + ") would block " + p.blocked + " and hold " + p.held + ":"
        : "This entry (reach: " + p.reach + ") would catch nobody among recent knocks and current members.";
      preview.appendChild(h);
      if (!caught.length) return;
      var ul = document.createElement("ul");
      caught.forEach(function (c) {
        var li = document.createElement("li");
        var code = document.createElement("code");
        code.textContent = c.user_id;
        li.appendChild(code);
        var rest = (c.display_name ? " “" + c.display_name + "”" : "") + " — " + c.outcome +
          " (" + (c.seen === "member" ? "a member" : "a recent knock") + (c.room ? ", " + c.room : "") + "): " + c.explanation;
        li.appendChild(document.createTextNode(rest));
        ul.appendChild(li);
      });
      preview.appendChild(ul);
    };
    var ask = function () {
      var e = entry();
      if (!e.user_id) { preview.textContent = ""; return; }
      var n = ++asked;
      call("/blocklist/preview", e).then(function (res) {
        if (n !== asked) return;
        if (res.ok) show(res.body.preview);
        else { preview.textContent = ""; var p = document.createElement("p"); p.className = "error"; p.textContent = problem(res); preview.appendChild(p); }
      });
    };
    add.addEventListener("input", function () { clearTimeout(timer); timer = setTimeout(ask, 250); });
    add.addEventListener("change", function () { clearTimeout(timer); timer = setTimeout(ask, 50); });
    add.addEventListener("submit", function (ev) {
      ev.preventDefault();
      var e = entry();
      call("/block_user", e).then(function (res) {
        if (!res.ok) { say("Not blocked: " + problem(res)); return; }
        var b = res.body;
        say("Blocked " + e.user_id + " (" + b.status + ")" + (b.action ? "; in the room: " + b.action : "") +
          (b.knocks_closed ? "; knocks closed: " + b.knocks_closed : "") + ".");
        if (b.preview) show(b.preview);
      });
    });
  }

  var imp = document.getElementById("import");
  if (imp) imp.addEventListener("submit", function (ev) {
    ev.preventDefault();
    var file = document.getElementById("import-file").files[0];
    if (!file) { say("Choose a file first."); return; }
    file.text().then(function (text) {
      var json = /\.json$/i.test(file.name) || file.type === "application/json";
      return call("/blocklist", text, json ? "application/json" : "text/plain");
    }).then(function (res) {
      if (!res.ok) { say("Not imported: " + problem(res)); return; }
      say("Imported: " + JSON.stringify(res.body));
    });
  });
})();
