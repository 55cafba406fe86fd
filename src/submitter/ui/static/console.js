/* Submitter console: the live job log (EventSource) and the dataset upload (XMLHttpRequest
 * with upload progress). Everything else is server-rendered HTML and htmx attributes.
 * No inline script anywhere: the pages' Content-Security-Policy allows only this file and
 * htmx. Text from the server is always set with textContent, never as HTML. */
(function () {
  "use strict";

  function ready(fn) {
    if (document.readyState !== "loading") fn();
    else document.addEventListener("DOMContentLoaded", fn);
  }

  /* The API's error body as one line: a string, or each 422 field as "field: msg". */
  function errorMessage(status, body) {
    var detail = body && body.detail;
    if (Array.isArray(detail)) {
      return detail.map(function (item) {
        var loc = (item.loc || []).filter(function (p) {
          return p !== "body" && p !== "query" && p !== "path";
        });
        return (loc.length ? loc.join(".") + ": " : "") + item.msg;
      }).join("; ");
    }
    if (typeof detail === "string") return detail;
    return status ? "the server answered " + status : "the connection was lost";
  }

  /* ---- a job's page: follow its log and state live ---- */
  function followJob(log) {
    if (log.dataset.live !== "true" || !window.EventSource) return;
    var status = document.getElementById("log-status");
    var lastId = 0;
    var lines = log.querySelectorAll(".line");
    if (lines.length) lastId = parseInt(lines[lines.length - 1].dataset.id, 10) || 0;
    var source = new EventSource(log.dataset.events);
    var timer = null;

    function refreshSummary() {
      if (timer) return;
      timer = setTimeout(function () {
        timer = null;
        var summary = document.querySelector(log.dataset.summary);
        if (summary && window.htmx) window.htmx.trigger(summary, "refresh");
      }, 150);
    }

    function append(line) {
      if (!line || typeof line.id !== "number" || line.id <= lastId) return;
      lastId = line.id;
      var atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
      var span = document.createElement("span");
      span.className = "line line-" + String(line.level || "info").toLowerCase();
      span.dataset.id = String(line.id);
      var time = document.createElement("time");
      time.textContent = String(line.at || "").replace("T", " ").slice(0, 19);
      span.appendChild(time);
      span.appendChild(document.createTextNode(" " + line.message + "\n"));
      log.appendChild(span);
      if (atBottom) log.scrollTop = log.scrollHeight;
    }

    function say(text) { if (status) status.textContent = text; }

    source.addEventListener("open", function () { say("following live"); });
    source.addEventListener("state", function () { refreshSummary(); });
    source.addEventListener("log", function (event) { append(JSON.parse(event.data)); });
    source.addEventListener("end", function () {
      source.close();
      say("ended");
      log.dataset.live = "false";
      refreshSummary();
    });
    source.addEventListener("reconnect", function () { say("reconnecting…"); });
    source.addEventListener("error", function (event) {
      if (event.data) {  /* the server's own `error` event: it closes, the browser retries */
        try { say(JSON.parse(event.data).detail); } catch (e) { say("stream error"); }
      } else if (source.readyState === EventSource.CONNECTING) {
        say("connection lost, reconnecting…");
      } else {
        say("not live (reload to follow again)");
      }
    });
  }

  /* ---- the datasets page: upload with a progress bar ---- */
  function upload(form) {
    var box = document.getElementById("upload-progress");
    var bar = document.getElementById("upload-bar");
    var percent = document.getElementById("upload-percent");
    var phase = document.getElementById("upload-phase");
    var error = document.getElementById("upload-error");
    var button = document.getElementById("upload-button");

    form.addEventListener("submit", function (event) {
      event.preventDefault();
      error.hidden = true;
      error.textContent = "";
      box.hidden = false;
      bar.value = 0;
      percent.textContent = "0 %";
      phase.textContent = "uploading…";
      button.disabled = true;

      var xhr = new XMLHttpRequest();
      xhr.open("POST", form.action);
      xhr.setRequestHeader("X-CSRF-Token", form.dataset.csrf);
      xhr.setRequestHeader("Accept", "application/json");
      xhr.upload.addEventListener("progress", function (e) {
        if (!e.lengthComputable) return;
        var value = Math.round((e.loaded / e.total) * 100);
        bar.value = value;
        percent.textContent = value + " %";
      });
      xhr.upload.addEventListener("load", function () {
        bar.value = 100;
        percent.textContent = "100 %";
        phase.textContent = "checking and storing as Parquet…";
      });
      function fail(text) {
        button.disabled = false;
        box.hidden = true;
        error.textContent = text;
        error.hidden = false;
      }
      xhr.addEventListener("load", function () {
        var body = null;
        try { body = JSON.parse(xhr.responseText); } catch (e) { body = null; }
        if ((xhr.status === 200 || xhr.status === 201) && body && body.url) {
          phase.textContent = xhr.status === 200 ? "the same file is stored already" : "stored";
          window.location.assign(body.url);
        } else if (xhr.status === 401) {
          window.location.assign("/ui/login?expired=1");
        } else {
          fail("Refused (" + xhr.status + "): " + errorMessage(xhr.status, body));
        }
      });
      xhr.addEventListener("error", function () {
        fail("The upload was cut off before an answer came (larger than the server's limit, " +
             "or the connection was lost).");
      });
      xhr.send(new FormData(form));
    });
  }

  ready(function () {
    var log = document.getElementById("job-log");
    if (log) followJob(log);
    var form = document.getElementById("upload-form");
    if (form) upload(form);
  });
})();
