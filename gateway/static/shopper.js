// What a shopper sees: products, the cart, orders with their live timeline, addresses,
// notifications and the account.

import { api, everything, money, plural, session } from "./api.js";
import { announce, failure, form, h, statusLabel, when } from "./ui.js";
import { cart } from "./cart.js";
import { notifications } from "./notices.js";

const PAGE_SIZE = 12;

export function heading(main, text) {
  const title = h("h1", { tabindex: "-1" }, text);
  main.replaceChildren(title);
  document.title = `${text} · Shop`;
  title.focus();
  return title;
}

// Products ---------------------------------------------------------------------------------

export async function products(main, _params, query) {
  heading(main, "Products");
  const cursors = (query.get("pages") || "").split(",").filter(Boolean);
  const cursor = cursors.at(-1);
  let page;
  try {
    page = await api("GET", `/api/products?limit=${PAGE_SIZE}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`,
      { anonymous: true });
  } catch (error) {
    main.append(failure(error));
    return;
  }
  if (!page.items.length) main.append(h("p", {}, "No products yet."));
  main.append(h("ul", { class: "cards", "aria-label": "Products" }, page.items.map(productCard)));
  const pager = h("nav", { class: "pager", "aria-label": "Pages of products" });
  if (cursors.length) {
    const back = cursors.slice(0, -1).join(",");
    pager.append(h("a", { href: back ? `#/?pages=${back}` : "#/" }, "Previous page"));
  }
  if (page.nextCursor) {
    pager.append(h("a", { href: `#/?pages=${[...cursors, page.nextCursor].join(",")}` }, "Next page"));
  }
  main.append(pager);
}

function productCard(product) {
  const quantity = h("input", {
    type: "number", min: 1, max: 100, value: 1, id: `qty-${product.id}`, name: "quantity",
  });
  const add = h("button", { type: "button", disabled: product.stock < 1 }, "Add to cart");
  add.addEventListener("click", () => {
    const count = Math.max(1, Math.min(100, Number(quantity.value) || 1));
    cart.add(product, count);
    announce(`${product.name}: ${count} in the cart.`);
  });
  return h("li", { class: "card" },
    h("h2", {}, product.name),
    h("p", { class: "muted" }, product.sku),
    h("p", { class: "price" }, money(product.priceCents)),
    h("p", {}, product.stock > 0 ? `${product.stock} in stock` : "Out of stock"),
    h("div", { class: "row" },
      h("label", { for: `qty-${product.id}` }, "Quantity"), quantity, add));
}

// Cart and ordering ------------------------------------------------------------------------

export async function cartView(main) {
  heading(main, "Your cart");
  const lines = cart.lines();
  if (!lines.length) {
    main.append(h("p", {}, "Your cart is empty. ", h("a", { href: "#/" }, "Browse products")));
    return;
  }
  const total = lines.reduce((sum, line) => sum + line.priceCents * line.quantity, 0);
  main.append(h("table", {},
    h("caption", {}, "Products in your cart"),
    h("thead", {}, h("tr", {}, ["Product", "Price", "Quantity", ""].map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, lines.map((line) => cartRow(main, line))),
    h("tfoot", {}, h("tr", {}, h("th", { scope: "row" }, "Total"), h("td", {}, money(total)), h("td"), h("td")))));
  let addresses;
  try {
    addresses = await everything("/api/addresses");
  } catch (error) {
    main.append(failure(error));
    return;
  }
  if (!addresses.length) {
    main.append(h("p", {}, "Add an address to order to. ", h("a", { href: "#/addresses" }, "Your addresses")));
    return;
  }
  const preferred = addresses.find((a) => a.isDefault) || addresses[0];
  main.append(form({
    label: "Place your order",
    submit: "Place order",
    fields: [
      { name: "addressId", label: "Deliver to", value: preferred.id,
        options: addresses.map((a) => [a.id, `${a.label || a.recipient}: ${a.line1}, ${a.city}`]) },
      { name: "note", label: "Note for the order (optional)", type: "textarea", maxlength: 500 },
    ],
    action: async (values) => {
      const body = { addressId: values.addressId, items: cart.items() };
      if (values.note.trim()) body.note = values.note.trim();
      // One key per cart: a second click, or a retry after a lost answer, gets the same order.
      const order = await api("POST", "/api/orders", { body, headers: { "Idempotency-Key": cart.key() } });
      cart.clear();
      announce("Your order is placed.");
      location.hash = `#/orders/${order.id}`;
    },
  }));
}

function cartRow(main, line) {
  const id = `cart-${line.productId}`;
  const quantity = h("input", { id, type: "number", min: 1, max: 100, value: line.quantity });
  quantity.addEventListener("change", () => {
    cart.set(line.productId, Math.max(1, Math.min(100, Number(quantity.value) || 1)));
    cartView(main);
  });
  const remove = h("button", { type: "button", class: "secondary" }, "Remove");
  remove.addEventListener("click", () => {
    cart.set(line.productId, 0);
    cartView(main);
  });
  return h("tr", {},
    h("th", { scope: "row" }, line.name),
    h("td", {}, money(line.priceCents)),
    h("td", {}, h("label", { for: id, class: "visually-hidden" }, `Quantity of ${line.name}`), quantity),
    h("td", {}, remove));
}

// Orders -----------------------------------------------------------------------------------

export const STATUSES = ["placed", "confirmed", "shipped", "in_transit", "out_for_delivery", "delivered", "cancelled"];

export async function orders(main, _params, query) {
  heading(main, "Your orders");
  const status = query.get("status") || "";
  main.append(statusFilter(status, "#/orders"));
  try {
    const page = await api("GET", `/api/orders?limit=50${status ? `&status=${status}` : ""}`);
    if (!page.items.length) main.append(h("p", {}, "No orders here yet."));
    main.append(h("ul", { class: "list", "aria-label": "Orders" }, page.items.map((order) =>
      h("li", {}, h("a", { href: `#/orders/${order.id}` },
        `${when(order.createdAt)}: ${plural(order.items.length, "line")}, ${money(order.totalCents)}`),
        " ", h("span", { class: `status status-${order.status}` }, statusLabel(order.status))))));
  } catch (error) {
    main.append(failure(error));
  }
}

export function statusFilter(current, base) {
  const select = h("select", { id: "status-filter" },
    [["", "Every status"], ...STATUSES.map((s) => [s, statusLabel(s)])].map(([value, text]) =>
      h("option", { value, selected: value === current }, text)));
  select.addEventListener("change", () => {
    location.hash = select.value ? `${base}?status=${select.value}` : base;
  });
  return h("div", { class: "field inline" }, h("label", { for: "status-filter" }, "Show"), select);
}

// One order, kept current while it is open: a notification about it reloads it.
export async function order(main, params) {
  heading(main, "Order");
  const body = h("div", { "aria-live": "polite" });
  main.append(body);
  const show = async () => {
    if (!body.isConnected) return null; // the page moved on
    try {
      const [current, tracking] = await Promise.all([
        api("GET", `/api/orders/${params.id}`), trackingOf(params.id),
      ]);
      body.replaceChildren(...orderDetails(current, tracking, show));
      return { current, tracking };
    } catch (error) {
      body.replaceChildren(failure(error));
      return null;
    }
  };
  settle(show);
  return {
    onNotification: (notification) => notification.orderId === params.id && settle(show),
    onReconnect: () => settle(show),
  };
}

// Tracking follows the order through its own consumer, so it may be a moment behind the
// order itself (or not there yet, just after ordering): look again, a few times, until the
// two agree.
async function settle(show) {
  for (const pause of [0, 250, 500, 1000, 2000, 4000]) {
    await new Promise((resolve) => setTimeout(resolve, pause));
    const seen = await show();
    if (!seen || (seen.tracking && seen.tracking.status === seen.current.status)) return;
  }
}

async function trackingOf(orderId) {
  try {
    return await api("GET", `/api/orders/${orderId}/tracking`);
  } catch (error) {
    if (error.status === 404) return null;
    throw error;
  }
}

function orderDetails(current, tracking, reload) {
  const parts = [
    h("p", {}, "Status: ", h("strong", { class: `status status-${current.status}`, "data-testid": "order-status" }, statusLabel(current.status))),
    h("table", {},
      h("caption", {}, "Items"),
      h("thead", {}, h("tr", {}, ["Product", "Unit price", "Quantity"].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, current.items.map((item) => h("tr", {},
        h("th", { scope: "row" }, `${item.name} (${item.sku})`), h("td", {}, money(item.unitPriceCents)), h("td", {}, item.quantity)))),
      h("tfoot", {}, h("tr", {}, h("th", { scope: "row" }, "Total"), h("td", {}, money(current.totalCents)), h("td")))),
    h("p", {}, `Deliver to ${current.shippingAddress.recipient}, ${current.shippingAddress.line1}, ${current.shippingAddress.postalCode} ${current.shippingAddress.city}`),
  ];
  if (["placed", "confirmed"].includes(current.status)) {
    parts.push(form({
      label: "Cancel this order", submit: "Cancel order", fields: [],
      action: async () => {
        await api("POST", `/api/orders/${current.id}/cancel`);
        announce("The order is cancelled.");
        await reload();
      },
    }));
  }
  parts.push(h("h2", {}, "Delivery"));
  if (!tracking) {
    parts.push(h("p", {}, "Tracking starts in a moment."));
  } else {
    parts.push(h("dl", { class: "facts" },
      h("dt", {}, "Carrier"), h("dd", {}, tracking.carrier || "not yet known"),
      h("dt", {}, "Tracking number"), h("dd", {}, tracking.trackingNumber || "not yet known"),
      h("dt", {}, "Expected"), h("dd", {}, tracking.estimatedDelivery || "not yet known")));
    parts.push(h("ol", { class: "timeline", "aria-label": "Delivery timeline" }, tracking.timeline.map((step) =>
      h("li", {}, h("strong", {}, statusLabel(step.status)), " ", when(step.occurredAt),
        step.location ? ` at ${step.location}` : "", step.note ? `: ${step.note}` : ""))));
  }
  parts.push(h("h2", {}, "History"),
    h("ol", { class: "timeline" }, current.history.map((entry) =>
      h("li", {}, h("strong", {}, statusLabel(entry.status)), " ", when(entry.changedAt),
        entry.note ? `: ${entry.note}` : ""))));
  return parts;
}

// Addresses --------------------------------------------------------------------------------

const ADDRESS_FIELDS = [
  { name: "label", label: "Label (home, work…)", maxlength: 50 },
  { name: "recipient", label: "Recipient", required: true, autocomplete: "name" },
  { name: "line1", label: "Address line 1", required: true, autocomplete: "address-line1" },
  { name: "line2", label: "Address line 2 (optional)", autocomplete: "address-line2" },
  { name: "city", label: "City", required: true, autocomplete: "address-level2" },
  { name: "postalCode", label: "Postal code", required: true, autocomplete: "postal-code" },
  { name: "country", label: "Country (two letters, e.g. DE)", required: true, maxlength: 2, autocomplete: "country" },
  { name: "phone", label: "Phone", autocomplete: "tel", type: "tel" },
];

function addressBody(values) {
  const body = {};
  for (const { name } of ADDRESS_FIELDS) {
    const value = (values[name] || "").trim();
    if (value) body[name] = name === "country" ? value.toUpperCase() : value;
  }
  body.isDefault = values.isDefault === "on";
  return body;
}

export async function addresses(main) {
  heading(main, "Your addresses");
  const list = h("ul", { class: "list", "aria-label": "Addresses" });
  main.append(list);
  const refresh = async () => {
    try {
      const items = await everything("/api/addresses");
      list.replaceChildren(...items.map((address) => addressItem(address, refresh)));
      if (!items.length) list.append(h("li", {}, "No addresses yet."));
    } catch (error) {
      list.replaceChildren(h("li", {}, failure(error)));
    }
  };
  await refresh();
  main.append(h("h2", {}, "Add an address"), form({
    label: "Add an address", submit: "Save address", fields: ADDRESS_FIELDS,
    extra: [checkbox("isDefault", "Make this my default address")],
    action: async (values, element) => {
      await api("POST", "/api/addresses", { body: addressBody(values) });
      element.reset();
      announce("Address saved.");
      await refresh();
    },
  }));
}

function checkbox(name, label, checked = false) {
  const id = `${name}-${Math.random().toString(36).slice(2)}`;
  return h("div", { class: "field check" },
    h("input", { type: "checkbox", id, name, checked }), h("label", { for: id }, label));
}

function addressItem(address, refresh) {
  const summary = `${address.label ? `${address.label}: ` : ""}${address.recipient}, ${address.line1}, ${address.postalCode} ${address.city}, ${address.country}`;
  const item = h("li", {}, h("p", {}, summary, address.isDefault ? h("strong", { class: "badge" }, "Default") : null));
  const actions = h("div", { class: "row" });
  if (!address.isDefault) {
    actions.append(h("button", { type: "button", class: "secondary", onclick: async () => {
      await run(item, () => api("POST", `/api/addresses/${address.id}/default`));
      await refresh();
    } }, `Make default: ${address.label || address.line1}`));
  }
  actions.append(h("button", { type: "button", class: "secondary", onclick: () => {
    const editing = form({
      label: `Edit ${address.label || address.line1}`, submit: "Save changes",
      fields: ADDRESS_FIELDS.map((f) => ({ ...f, value: address[f.name] ?? "" })),
      extra: [checkbox("isDefault", "Default address", address.isDefault)],
      action: async (values) => {
        await api("PUT", `/api/addresses/${address.id}`, { body: addressBody(values) });
        announce("Address saved.");
        await refresh();
      },
    });
    item.append(editing);
    editing.querySelector("input").focus();
  } }, `Edit: ${address.label || address.line1}`));
  actions.append(h("button", { type: "button", class: "danger", onclick: async () => {
    await run(item, () => api("DELETE", `/api/addresses/${address.id}`));
    announce("Address deleted.");
    await refresh();
  } }, `Delete: ${address.label || address.line1}`));
  item.append(actions);
  return item;
}

// Runs an action of a list item, showing its error in the item.
export async function run(item, action) {
  item.querySelector(".error-summary")?.remove();
  try {
    return await action();
  } catch (error) {
    item.append(failure(error));
    throw error;
  }
}

// Notifications ----------------------------------------------------------------------------

export async function notificationList(main) {
  heading(main, "Notifications");
  const list = h("ul", { class: "list", "aria-label": "Notifications" });
  const readAll = h("button", { type: "button", class: "secondary", onclick: async () => {
    await run(main, () => api("POST", "/api/notifications/read-all"));
    await refresh();
  } }, "Mark all as read");
  main.append(readAll, list);
  const refresh = async () => {
    try {
      const page = await api("GET", "/api/notifications?limit=50");
      notifications.setUnread(page.unreadCount);
      list.replaceChildren(...page.items.map((n) => h("li", { class: n.readAt ? "read" : "unread" },
        h("p", {}, h("strong", {}, n.title), n.readAt ? "" : h("span", { class: "badge" }, "New")),
        h("p", {}, n.body, " ", n.orderId ? h("a", { href: `#/orders/${n.orderId}` }, "See the order") : null),
        h("p", { class: "muted" }, when(n.createdAt)),
        n.readAt ? null : h("button", { type: "button", class: "secondary", onclick: async () => {
          await run(main, () => api("POST", `/api/notifications/${n.id}/read`));
          await refresh();
        } }, `Mark as read: ${n.title}`))));
      if (!page.items.length) list.append(h("li", {}, "Nothing yet."));
    } catch (error) {
      list.replaceChildren(h("li", {}, failure(error)));
    }
  };
  await refresh();
  return { onNotification: refresh, onReconnect: refresh };
}

// The account: sessions, password, signing out --------------------------------------------

export async function account(main, _params, _query, signOut) {
  heading(main, "Your account");
  const me = session.current.user;
  main.append(h("p", {}, `${me.name} · ${me.email}`));
  main.append(h("h2", {}, "Where you are signed in"));
  const list = h("ul", { class: "list", "aria-label": "Sessions" });
  main.append(list);
  const refresh = async () => {
    try {
      const items = await everything("/api/users/sessions");
      list.replaceChildren(...items.map((s) => h("li", {},
        h("p", {}, s.userAgent || "Unknown browser", s.current ? h("strong", { class: "badge" }, "This browser") : null),
        h("p", { class: "muted" }, `Signed in ${when(s.createdAt)}, last seen ${when(s.lastSeenAt)}`),
        h("button", { type: "button", class: "danger", onclick: async () => {
          await run(list, () => api("DELETE", `/api/users/sessions/${s.id}`));
          if (s.current) signOut("You signed this browser out.", false);
          else await refresh();
        } }, s.current ? "Sign out this browser" : `Revoke session from ${when(s.createdAt)}`))));
    } catch (error) {
      list.replaceChildren(h("li", {}, failure(error)));
    }
  };
  await refresh();
  main.append(h("h2", {}, "Change your password"), form({
    label: "Change your password", submit: "Change password",
    fields: [
      { name: "currentPassword", label: "Current password", type: "password", required: true, autocomplete: "current-password" },
      { name: "newPassword", label: "New password (8 to 128 characters)", type: "password", required: true, minlength: 8, maxlength: 128, autocomplete: "new-password" },
    ],
    action: async (values, element) => {
      await api("POST", "/api/users/password", { body: values });
      element.reset();
      announce("Your password is changed. Every other session has ended.");
      await refresh();
    },
  }));
  main.append(h("h2", {}, "Sign out"), h("div", { class: "row" },
    h("button", { type: "button", class: "secondary", onclick: () => signOut("You are signed out.", true) }, "Sign out"),
    h("button", { type: "button", class: "danger", onclick: async () => {
      await run(main, () => api("POST", "/api/users/logout-all"));
      signOut("You are signed out everywhere.", false);
    } }, "Sign out everywhere")));
}

