// The benchmark's busy page: a 2,000-row table that changes on a fixed schedule.
// A seeded generator drives every change, so each run does the same work whatever
// tracker is loaded. The harness calls `window.bench.start()` to start the
// configured tracker, then `window.bench.busy()`, and reads `window.bench.state`.
(function () {
  "use strict";

  var ROWS = 2000;
  var COLUMNS = 6;
  var TICKS = 200; // 10 s at one tick every 50 ms.
  var TICK_MS = 50;
  var TEXT_CHANGES_PER_TICK = 200;
  var CLASS_TOGGLES_PER_TICK = 100;
  var LIST_CHANGES_PER_TICK = 20;
  var INITIAL_LIST_ITEMS = 100;
  var SEED = 20261204;

  var CITIES = ["Lyon", "Porto", "Graz", "Turku", "Ghent", "Bergen", "Cork", "Brno", "Split", "Malmo"];
  var STATUSES = ["pending", "paid", "shipped", "returned", "cancelled"];
  var NAMES = ["Ada", "Brook", "Chen", "Dara", "Emil", "Fatou", "Goran", "Hana", "Ivo", "Jun", "Kemal", "Lea"];

  /** mulberry32: a small seeded generator with a 2^32 period, enough for a fixed workload. */
  function generator(seed) {
    var state = seed >>> 0;
    return function () {
      state = (state + 0x6d2b79f5) >>> 0;
      var t = state;
      t = Math.imul(t ^ (t >>> 15), t | 1);
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
  }

  var random = generator(SEED);
  function pick(list) {
    return list[Math.floor(random() * list.length)];
  }
  function integer(limit) {
    return Math.floor(random() * limit);
  }

  /** Text of cell `column` of a row, from the generator. */
  function cellText(column) {
    switch (column) {
      case 0:
        return "ORD-" + (100000 + integer(900000));
      case 1:
        return pick(NAMES) + " " + pick(NAMES).charAt(0) + ".";
      case 2:
        return pick(CITIES);
      case 3:
        return (integer(100000) / 100).toFixed(2);
      case 4:
        return pick(STATUSES);
      default:
        return integer(24) + ":" + String(integer(60)).padStart(2, "0");
    }
  }

  var body = document.getElementById("rows");
  var list = document.getElementById("feed");
  var cells = [];
  var rows = [];
  var nextItem = 0;

  function renderTable() {
    var fragment = document.createDocumentFragment();
    for (var r = 0; r < ROWS; r++) {
      var row = document.createElement("tr");
      for (var c = 0; c < COLUMNS; c++) {
        var cell = document.createElement("td");
        cell.textContent = cellText(c);
        row.appendChild(cell);
        cells.push(cell);
      }
      rows.push(row);
      fragment.appendChild(row);
    }
    body.appendChild(fragment);
    for (var i = 0; i < INITIAL_LIST_ITEMS; i++) addItem();
  }

  function addItem() {
    var item = document.createElement("li");
    item.textContent = "Event " + nextItem++ + ": " + pick(NAMES) + " in " + pick(CITIES);
    list.appendChild(item);
  }

  function tick() {
    for (var i = 0; i < TEXT_CHANGES_PER_TICK; i++) {
      var index = integer(cells.length);
      // Changes the cell's own text node, so that each change is one text mutation, not a removed and an added node.
      cells[index].firstChild.data = cellText(index % COLUMNS);
    }
    for (var j = 0; j < CLASS_TOGGLES_PER_TICK; j++) {
      rows[integer(ROWS)].classList.toggle("hot");
    }
    for (var k = 0; k < LIST_CHANGES_PER_TICK; k++) {
      list.removeChild(list.firstElementChild);
      addItem();
    }
  }

  var state = { ready: false, started: false, ticks: 0, busyMs: 0, done: false, startError: null };

  /** Runs `TICKS` ticks, one every `TICK_MS`; resolves with the busy time in milliseconds. */
  function busy() {
    return new Promise(function (resolve) {
      var began = performance.now();
      var timer = setInterval(function () {
        tick();
        state.ticks++;
        if (state.ticks >= TICKS) {
          clearInterval(timer);
          state.busyMs = performance.now() - began;
          state.done = true;
          resolve(state.busyMs);
        }
      }, TICK_MS);
    });
  }

  /** Returns the whole table's text, row by row, for the replay check. */
  function tableText() {
    return rows
      .map(function (row) {
        return row.className + "|" + row.textContent;
      })
      .join("\n");
  }

  renderTable();
  state.ready = true;
  window.bench = { state: state, busy: busy, tableText: tableText };
})();
