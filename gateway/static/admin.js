// What the shop's staff see: products and stock, orders and their statuses, tracking, and
// the health of the event pipeline.

import { api, money } from "./api.js";
import { announce, failure, form, h, statusLabel, when } from "./ui.js";
import { heading, STATUSES, statusFilter } from "./shopper.js";

const FORWARD = STATUSES.slice(0, 6); // placed … delivered, in order
const CANCELLABLE = ["placed", "confirmed"];

// The statuses an order may move to from `status` (contract §4's status machine).
export function nextStatuses(status) {
  const at = FORWARD.indexOf(status);
  if (at < 0 || status === "delivered") return [];
  const next = FORWARD.slice(at + 1);
  return CANCELLABLE.includes(status) ? [...next, "cancelled"] : next;
}

function cents(text) {
  const value = Number(String(text).replace(",", "."));
  return Number.isFinite(value) ? Math.round(value * 100) : NaN;
}

// Products ---------------------------------------------------------------------------------

export async function products(main, _params, query) {
  heading(main, "Products and stock");
  main.append(h("h2", {}, "New product"), form({
    label: "New product", submit: "Create product",
    fields: [
      { name: "sku", label: "SKU", required: true },
      { name: "name", label: "Name", required: true },
      { name: "priceCents", label: "Price (e.g. 12.50)", required: true, inputmode: "decimal" },
      { name: "stock", label: "Stock", type: "number", min: 0, value: 0, required: true },
    ],
    action: async (values, element) => {
      const created = await api("POST", "/api/admin/products", { body: {
        sku: values.sku.trim(), name: values.name.trim(),
        priceCents: cents(values.priceCents), stock: Number(values.stock),
      } });
      element.reset();
      announce(`${created.name} is created.`);
      await refresh();
    },
  }));
  const list = h("ul", { class: "list", "aria-label": "Products" });
  main.append(h("h2", {}, "Catalogue"), list);
  const cursor = query.get("cursor");
  const refresh = async () => {
    try {
      const page = await api("GET", `/api/products?limit=20${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
      list.replaceChildren(...page.items.map((product) => productItem(product, refresh)));
      main.querySelector(".pager")?.remove();
      const pager = h("nav", { class: "pager", "aria-label": "Pages of products" },
        cursor ? h("a", { href: "#/admin/products" }, "First page") : null,
        page.nextCursor ? h("a", { href: `#/admin/products?cursor=${encodeURIComponent(page.nextCursor)}` }, "Next page") : null);
      main.append(pager);
    } catch (error) {
      list.replaceChildren(h("li", {}, failure(error)));
    }
  };
  await refresh();
}

function productItem(product, refresh) {
  const item = h("li", {}, h("p", {}, h("strong", {}, product.name), ` (${product.sku}) · ${money(product.priceCents)} · `,
    h("span", { "data-testid": "stock" }, `${product.stock} in stock`)));
  item.append(h("details", {}, h("summary", {}, `Edit ${product.name}`),
    form({
      label: `Edit ${product.name}`, submit: "Save",
      fields: [
        { name: "name", label: "Name", value: product.name, required: true },
        { name: "priceCents", label: "Price", value: money(product.priceCents), required: true, inputmode: "decimal" },
      ],
      action: async (values) => {
        await api("PATCH", `/api/admin/products/${product.id}`, {
          body: { name: values.name.trim(), priceCents: cents(values.priceCents) },
        });
        announce(`${values.name} is saved.`);
        await refresh();
      },
    }),
    form({
      label: `Adjust the stock of ${product.name}`, submit: "Adjust stock",
      fields: [{ name: "delta", label: "Add (or, negative, take away)", type: "number", required: true }],
      action: async (values) => {
        const changed = await api("POST", `/api/admin/products/${product.id}/stock`, { body: { delta: Number(values.delta) } });
        announce(`${product.name}: ${changed.stock} in stock.`);
        await refresh();
      },
    })));
  return item;
}

// Orders -----------------------------------------------------------------------------------

export async function orders(main, _params, query) {
  heading(main, "Orders");
  const status = query.get("status") || "";
  main.append(statusFilter(status, "#/admin/orders"));
  try {
    const page = await api("GET", `/api/admin/orders?limit=50${status ? `&status=${status}` : ""}`);
    if (!page.items.length) main.append(h("p", {}, "No orders here."));
    main.append(h("table", {},
      h("caption", {}, status ? `Orders ${statusLabel(status)}` : "Every order, newest first"),
      h("thead", {}, h("tr", {}, ["Order", "Placed", "Total", "Status"].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, page.items.map((o) => h("tr", {},
        h("th", { scope: "row" }, h("a", { href: `#/admin/orders/${o.id}` }, `${o.shippingAddress.recipient} · ${o.id.slice(0, 8)}`)),
        h("td", {}, when(o.createdAt)), h("td", {}, money(o.totalCents)),
        h("td", {}, h("span", { class: `status status-${o.status}` }, statusLabel(o.status))))))));
  } catch (error) {
    main.append(failure(error));
  }
}

export async function order(main, params) {
  heading(main, "Order");
  const body = h("div");
  main.append(body);
  const show = async () => {
    try {
      const current = await api("GET", `/api/orders/${params.id}`);
      let tracking = null;
      try {
        tracking = await api("GET", `/api/orders/${params.id}/tracking`);
      } catch (error) {
        if (error.status !== 404) throw error;
      }
      body.replaceChildren(...orderPanel(current, tracking, show));
    } catch (error) {
      body.replaceChildren(failure(error));
    }
  };
  await show();
}

function orderPanel(current, tracking, reload) {
  const parts = [
    h("p", {}, `${current.shippingAddress.recipient}, ${current.shippingAddress.city} · ${money(current.totalCents)} · status `,
      h("strong", { "data-testid": "order-status" }, statusLabel(current.status))),
    h("ul", {}, current.items.map((i) => h("li", {}, `${i.quantity} × ${i.name} (${i.sku})`))),
  ];
  const next = nextStatuses(current.status);
  if (next.length) {
    parts.push(h("h2", {}, "Move the order"), form({
      label: "Move the order", submit: "Move",
      fields: [
        { name: "status", label: "New status", value: next[0], options: next.map((s) => [s, statusLabel(s)]) },
        { name: "note", label: "Note (optional)", maxlength: 500 },
      ],
      action: async (values) => {
        const body = { status: values.status };
        if (values.note.trim()) body.note = values.note.trim();
        await api("POST", `/api/admin/orders/${current.id}/status`, { body });
        announce(`The order is ${statusLabel(values.status)}.`);
        await reload();
      },
    }));
  } else {
    parts.push(h("p", {}, `The order is ${statusLabel(current.status)}: it moves no further.`));
  }
  parts.push(h("h2", {}, "Delivery"));
  if (!tracking) {
    parts.push(h("p", {}, "Tracking starts in a moment."));
    return parts;
  }
  parts.push(h("ol", { class: "timeline", "aria-label": "Delivery timeline" }, tracking.timeline.map((step) =>
    h("li", {}, h("strong", {}, statusLabel(step.status)), " ", when(step.occurredAt),
      step.location ? ` at ${step.location}` : "", step.note ? `: ${step.note}` : ""))));
  parts.push(form({
    label: "Delivery details and checkpoint", submit: "Save delivery details",
    fields: [
      { name: "carrier", label: "Carrier", value: tracking.carrier || "" },
      { name: "trackingNumber", label: "Tracking number", value: tracking.trackingNumber || "" },
      { name: "estimatedDelivery", label: "Expected delivery", type: "date", value: tracking.estimatedDelivery || "" },
      { name: "location", label: "Checkpoint: location (optional)" },
      { name: "note", label: "Checkpoint: note (optional)" },
    ],
    action: async (values) => {
      const body = {};
      for (const name of ["carrier", "trackingNumber", "estimatedDelivery"]) {
        if (values[name].trim()) body[name] = values[name].trim();
      }
      if (values.location.trim()) {
        body.checkpoint = { location: values.location.trim() };
        if (values.note.trim()) body.checkpoint.note = values.note.trim();
      }
      await api("POST", `/api/admin/orders/${current.id}/tracking`, { body });
      announce("Delivery details saved.");
      await reload();
    },
  }));
  return parts;
}

// Operations -------------------------------------------------------------------------------

export async function operations(main) {
  heading(main, "Operations");
  const panel = h("div", { "aria-live": "polite" });
  const refresh = async () => {
    try {
      const state = await api("GET", "/api/admin/operations");
      panel.replaceChildren(...operationsPanel(state));
    } catch (error) {
      panel.replaceChildren(failure(error));
    }
  };
  main.append(h("button", { type: "button", class: "secondary", onclick: refresh }, "Refresh"), panel);
  await refresh();
}

const count = (value) => (value === null ? "unknown" : String(value));

function operationsPanel(state) {
  return [
    table("Components", ["Component", "Ready"], state.components.map((c) =>
      [c.name, h("span", { class: c.ready ? "ok" : "bad" }, c.ready ? "ready" : "not ready")])),
    table("Outboxes: events not yet published", ["Service", "Unsent", "Oldest unsent"], state.outboxes.map((o) =>
      [o.service, count(o.unsent), o.oldestUnsentAgeSeconds === null ? "" : `${o.oldestUnsentAgeSeconds.toFixed(1)} s`])),
    table("Dead-letter queues", ["Queue", "Messages"], state.deadLetters.map((d) =>
      [d.queue, h("span", { class: d.messages ? "bad" : "ok" }, count(d.messages))])),
  ];
}

function table(caption, headings, rows) {
  return h("table", {},
    h("caption", {}, caption),
    h("thead", {}, h("tr", {}, headings.map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, rows.map(([first, ...rest]) => h("tr", {}, h("th", { scope: "row" }, first), rest.map((cell) => h("td", {}, cell))))));
}
