// Starts and stops the tracker named by the page's `data-tracker` attribute, so
// that the harness drives every configuration through the same two calls:
// `window.bench.start()` and `window.bench.stop()`. Each tracker's script was
// loaded by the page's <head>; nothing here runs until the harness calls start.
(function () {
  "use strict";

  var kind = document.documentElement.getAttribute("data-tracker");
  var bench = window.bench;
  var stopTracker = function () {};

  function startRrweb() {
    var events = [];
    bench.rrwebEvents = events;
    var stop = window.BenchRrwebRecord({
      emit: function (event) {
        events.push(event);
      },
    });
    stopTracker = function () {
      if (stop) stop();
    };
    return Promise.resolve();
  }

  function startOpenReplay() {
    // `__DISABLE_SECURE_MODE` lets the tracker run on http://127.0.0.1; everything else is its default.
    var tracker = new window.BenchOpenReplayTracker({
      projectKey: "bench-project",
      ingestPoint: location.origin + "/openreplay",
      __DISABLE_SECURE_MODE: true,
    });
    stopTracker = function () {
      tracker.stop();
    };
    return tracker.start().then(function (result) {
      if (!result || result.success === false) throw new Error("OpenReplay did not start: " + JSON.stringify(result));
    });
  }

  function startTandem() {
    var tracker = new window.TandemTracker({ projectKey: "demo-key", ingestPoint: "/ingest" });
    stopTracker = function () {
      tracker.stop();
    };
    return tracker.start().then(function (result) {
      if (!result.success) throw new Error("Tandem did not start: " + result.reason);
    });
  }

  var starters = { none: function () { return Promise.resolve(); }, rrweb: startRrweb, openreplay: startOpenReplay, tandem: startTandem };

  bench.start = function () {
    bench.state.started = true;
    return starters[kind]();
  };
  bench.stop = function () {
    stopTracker();
  };
})();
