// Behaviour of the demo shop's pages. The cart lives in localStorage.
// Calls to window.tandem are optional: the shop works without the tracker.
(function () {
  "use strict";

  var CART_KEY = "tandem-demo-cart";
  var DEAL_LENGTH_MS = 15 * 60 * 1000;

  var PRODUCTS = [
    { id: 1, name: "Trail Mug", price: 14.0, color: "#c2410c", text: "Enamel mug that survives campfires." },
    { id: 2, name: "Canvas Tote", price: 22.5, color: "#4d7c0f", text: "Heavy canvas, holds a week of groceries." },
    { id: 3, name: "Desk Lamp", price: 48.0, color: "#1d4ed8", text: "Warm light with a dimmer." },
    { id: 4, name: "Wool Socks", price: 12.0, color: "#7c3aed", text: "Two pairs, merino blend." },
    { id: 5, name: "Notebook Set", price: 9.5, color: "#be185d", text: "Three dotted notebooks, A5." },
    { id: 6, name: "Water Bottle", price: 19.0, color: "#0e7490", text: "Insulated steel, 750 ml." },
  ];

  function findProduct(id) {
    for (var i = 0; i < PRODUCTS.length; i++) if (PRODUCTS[i].id === id) return PRODUCTS[i];
    return null;
  }

  function track(method, name, payload) {
    if (window.tandem && typeof window.tandem[method] === "function") window.tandem[method](name, payload);
  }

  function money(amount) {
    return "$" + amount.toFixed(2);
  }

  // Cart --------------------------------------------------------------------------

  function loadCart() {
    try {
      var cart = JSON.parse(localStorage.getItem(CART_KEY) || "{}");
      return cart && typeof cart === "object" ? cart : {};
    } catch (error) {
      return {};
    }
  }

  function saveCart(cart) {
    try {
      localStorage.setItem(CART_KEY, JSON.stringify(cart));
    } catch (error) {
      // Storage is blocked; the cart lasts until the page unloads.
    }
  }

  function countItems(cart) {
    var count = 0;
    for (var id in cart) count += cart[id];
    return count;
  }

  function cartTotal(cart) {
    var total = 0;
    for (var id in cart) {
      var product = findProduct(Number(id));
      if (product) total += product.price * cart[id];
    }
    return total;
  }

  function renderCartCount() {
    var badge = document.getElementById("cart-count");
    if (badge) badge.textContent = String(countItems(loadCart()));
  }

  // Shared: the deals countdown ----------------------------------------------------

  function renderClock() {
    var clock = document.getElementById("clock");
    if (!clock) return;
    var left = DEAL_LENGTH_MS - (Date.now() % DEAL_LENGTH_MS);
    var minutes = Math.floor(left / 60000);
    var seconds = Math.floor((left % 60000) / 1000);
    clock.textContent = "Deals end in " + pad(minutes) + ":" + pad(seconds);
  }

  function pad(number) {
    return number < 10 ? "0" + number : String(number);
  }

  // Home page ------------------------------------------------------------------------

  function setUpHome() {
    var list = document.getElementById("products");
    if (!list) return;

    PRODUCTS.forEach(function (product) {
      var card = document.createElement("article");
      card.className = "product";
      card.setAttribute("data-name", product.name.toLowerCase());
      card.innerHTML =
        '<div class="swatch" style="background:' + product.color + '"></div>' +
        "<h3>" + product.name + "</h3>" +
        '<p class="muted">' + product.text + "</p>" +
        '<p class="price">' + money(product.price) + "</p>";
      var button = document.createElement("button");
      button.type = "button";
      button.textContent = "Add to cart";
      button.setAttribute("data-testid", "add-to-cart-" + product.id);
      button.addEventListener("click", function () {
        addToCart(product);
      });
      card.appendChild(button);
      list.appendChild(card);
    });

    var search = document.getElementById("search-input");
    search.addEventListener("input", function () {
      filterProducts(search.value);
    });
    filterProducts("");
    renderReviews();
  }

  function addToCart(product) {
    var cart = loadCart();
    cart[product.id] = (cart[product.id] || 0) + 1;
    saveCart(cart);
    renderCartCount();

    var line = document.createElement("li");
    line.textContent = "Added " + product.name + " to the cart (" + countItems(cart) + " items in total).";
    document.getElementById("activity").appendChild(line);
    track("event", "add_to_cart", { productId: product.id, name: product.name, price: product.price });
  }

  // The echo shows a count, not the query, so that the typed text stays only in
  // the input, which the tracker masks.
  function filterProducts(query) {
    var needle = query.trim().toLowerCase();
    var cards = document.querySelectorAll("#products .product");
    var shownCount = 0;
    for (var i = 0; i < cards.length; i++) {
      var match = cards[i].getAttribute("data-name").indexOf(needle) !== -1;
      cards[i].hidden = !match;
      if (match) shownCount++;
    }
    document.getElementById("search-echo").textContent =
      needle ? "Showing " + shownCount + " of " + cards.length + " products" : "Showing all " + cards.length + " products";
  }

  function renderReviews() {
    var panel = document.getElementById("reviews");
    var authors = ["Ada", "Ben", "Chloe", "Dev", "Eun", "Farah", "Gus", "Hana"];
    var remarks = [
      "Arrived quickly and well packed.",
      "Exactly as described.",
      "Good value for the price.",
      "Would order again.",
      "The colour is a bit darker than the photo.",
      "Gift for a friend, who loved it.",
    ];
    for (var i = 0; i < 40; i++) {
      var review = document.createElement("article");
      var product = PRODUCTS[i % PRODUCTS.length];
      review.innerHTML =
        "<strong>" + authors[i % authors.length] + "</strong> on " + product.name +
        " <span class=\"muted\">" + (5 - (i % 3)) + "/5</span><p>" + remarks[i % remarks.length] + "</p>";
      panel.appendChild(review);
    }
  }

  // Cart page ------------------------------------------------------------------------

  function setUpCart() {
    var body = document.getElementById("cart-lines");
    if (!body) return;
    renderCartLines();

    document.getElementById("clear-cart").addEventListener("click", function () {
      saveCart({});
      renderCartLines();
      renderCartCount();
    });

    document.getElementById("coupon-form").addEventListener("submit", function (event) {
      event.preventDefault();
      var message = document.getElementById("coupon-message");
      message.hidden = false;
      message.textContent = "This coupon is not valid.";
      track("issue", "coupon_rejected", { page: "cart" });
    });
  }

  function renderCartLines() {
    var cart = loadCart();
    var body = document.getElementById("cart-lines");
    body.textContent = "";
    var ids = Object.keys(cart);
    document.getElementById("cart-empty").hidden = ids.length > 0;

    ids.forEach(function (id) {
      var product = findProduct(Number(id));
      if (!product) return;
      var row = document.createElement("tr");
      row.innerHTML =
        "<td>" + product.name + "</td><td>" + cart[id] + "</td><td>" + money(product.price * cart[id]) + "</td>";
      var cell = document.createElement("td");
      var remove = document.createElement("button");
      remove.type = "button";
      remove.className = "secondary";
      remove.textContent = "Remove";
      remove.setAttribute("data-testid", "remove-" + product.id);
      remove.addEventListener("click", function () {
        var current = loadCart();
        delete current[id];
        saveCart(current);
        renderCartLines();
        renderCartCount();
      });
      cell.appendChild(remove);
      row.appendChild(cell);
      body.appendChild(row);
    });
    document.getElementById("cart-total").textContent = money(cartTotal(cart));
  }

  // Checkout page --------------------------------------------------------------------

  function setUpCheckout() {
    var form = document.getElementById("checkout-form");
    if (!form) return;
    document.getElementById("checkout-total").textContent = money(cartTotal(loadCart()));

    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var cart = loadCart();
      var total = cartTotal(cart);
      var orderNumber = "TS-" + String(Date.now()).slice(-6);
      var confirmation = document.getElementById("confirmation");
      confirmation.hidden = false;
      confirmation.textContent =
        "Thank you! Order " + orderNumber + " is confirmed: " + countItems(cart) + " items, " + money(total) + ".";
      track("event", "order_placed", { orderNumber: orderNumber, items: countItems(cart), total: total });
      saveCart({});
      renderCartCount();
    });
  }

  // Start ------------------------------------------------------------------------------

  renderCartCount();
  renderClock();
  setInterval(renderClock, 1000);
  setUpHome();
  setUpCart();
  setUpCheckout();
})();
