// Starts the tracker with the options a test put in window.__privacyTest (an init script).
(function () {
  var config = window.__privacyTest || {};
  var options = Object.assign({ projectKey: "demo-key", ingestPoint: config.ingestPoint }, config.options || {});
  var tracker = new window.TandemTracker(options);
  window.__tracker = tracker;
  tracker.start().then(function (result) {
    window.__started = result;
  });
})();
