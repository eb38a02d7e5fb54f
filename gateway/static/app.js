// The shop's front end: routes (#/…), the header, signing in and out, and the live stream.

import { api, session, whenSessionEnds } from "./api.js";
import * as admin from "./admin.js";
import { cart } from "./cart.js";
import { notifications } from "./notices.js";
import * as shopper from "./shopper.js";
import { NotificationStream } from "./stream.js";
import { announce, form, h } from "./ui.js";

const main = document.getElementById("main");
let view = null; // what the page shows now: it may follow notifications

// Routes: a pattern of the hash's path, who may see it, and what draws it.
const ROUTES = [
  ["/", "anyone", shopper.products],
  ["/signin", "anyone", signIn],
  ["/signup", "anyone", signUp],
  ["/admin/signin", "anyone", adminSignIn],
  ["/cart", "user", shopper.cartView],
  ["/orders", "user", shopper.orders],
  ["/orders/:id", "user", shopper.order],
  ["/addresses", "user", shopper.addresses],
  ["/notifications", "user", shopper.notificationList],
  ["/account", "user", (m, p, q) => shopper.account(m, p, q, signOut)],
  ["/admin/products", "admin", admin.products],
  ["/admin/orders", "admin", admin.orders],
  ["/admin/orders/:id", "admin", admin.order],
  ["/admin/operations", "admin", admin.operations],
];

function match(path) {
  for (const [pattern, who, draw] of ROUTES) {
    const names = [];
    const regex = new RegExp(`^${pattern.replace(/:(\w+)/g, (_, name) => {
      names.push(name);
      return "([^/]+)";
    })}$`);
    const found = path.match(regex);
    if (found) {
      const params = Object.fromEntries(names.map((n, i) => [n, decoded(found[i + 1])]));
      // An id goes into an API path: one that is not a plain id is no page of ours.
      if (Object.values(params).every((value) => /^[0-9A-Za-z-]+$/.test(value))) {
        return { who, draw, params };
      }
    }
  }
  return null;
}

function decoded(text) {
  try {
    return decodeURIComponent(text);
  } catch {
    return "";
  }
}

async function render() {
  const [path, search = ""] = (location.hash.slice(1) || "/").split("?");
  const route = match(path);
  drawHeader();
  view = null;
  if (!route) {
    shopper.heading(main, "Not found");
    main.append(h("p", {}, "There is no such page. ", h("a", { href: "#/" }, "Go to the products")));
    return;
  }
  const role = session.current?.user.role;
  if (route.who === "user" && !session.current) return goSignIn("Please sign in first.");
  if (route.who === "admin" && role !== "admin") {
    location.hash = "#/admin/signin";
    return;
  }
  view = (await route.draw(main, route.params, new URLSearchParams(search))) || null;
}

// The header --------------------------------------------------------------------------------

function link(href, text, extra = null) {
  const current = (location.hash || "#/").split("?")[0] === href;
  return h("li", {}, h("a", { href, "aria-current": current ? "page" : null }, text, extra));
}

function drawHeader() {
  const nav = document.getElementById("nav");
  const who = session.current?.user;
  const items = [];
  if (who?.role === "admin") {
    items.push(link("#/admin/products", "Products"), link("#/admin/orders", "Orders"),
      link("#/admin/operations", "Operations"));
  } else {
    items.push(link("#/", "Shop"), link("#/cart", "Cart", h("span", { class: "badge", "data-testid": "cart-count" }, String(cart.count()))));
    if (who) {
      const unread = notifications.unread;
      items.push(link("#/orders", "Orders"), link("#/addresses", "Addresses"),
        link("#/notifications", "Notifications", h("span", { class: "badge", "data-testid": "unread-count" },
          h("span", { class: "visually-hidden" }, "unread: "), String(unread))),
        link("#/account", "Account"));
    }
  }
  if (who) {
    items.push(h("li", {}, h("button", { type: "button", class: "link", onclick: () => signOut("You are signed out.", true) }, "Sign out")));
  } else {
    items.push(link("#/signin", "Sign in"), link("#/signup", "Create an account"), link("#/admin/signin", "Staff"));
  }
  nav.replaceChildren(h("ul", {}, items));
  document.getElementById("live-state").hidden = !who || who.role === "admin";
}

// Signing in and out --------------------------------------------------------------------------

function goSignIn(message) {
  sessionStorage.setItem("shop.after-signin", location.hash);
  sessionStorage.setItem("shop.signin-message", message);
  location.hash = "#/signin";
}

function signInForm(path, next) {
  return form({
    label: "Sign in", submit: "Sign in",
    fields: [
      { name: "email", label: "Email", type: "email", required: true, autocomplete: "username" },
      { name: "password", label: "Password", type: "password", required: true, autocomplete: "current-password" },
    ],
    action: async (values) => {
      const signed = await api("POST", path, { body: values, anonymous: true });
      begin({ token: signed.token, user: signed.user });
      const after = sessionStorage.getItem("shop.after-signin");
      sessionStorage.removeItem("shop.after-signin");
      location.hash = after && !after.includes("signin") ? after : next;
    },
  });
}

function signIn(root) {
  shopper.heading(root, "Sign in");
  const message = sessionStorage.getItem("shop.signin-message");
  sessionStorage.removeItem("shop.signin-message");
  if (message) root.append(h("p", { class: "notice", role: "status" }, message));
  root.append(signInForm("/api/users/login", "#/"),
    h("p", {}, "New here? ", h("a", { href: "#/signup" }, "Create an account")));
}

function adminSignIn(root) {
  shopper.heading(root, "Staff sign-in");
  root.append(signInForm("/api/admin/login", "#/admin/orders"));
}

function signUp(root) {
  shopper.heading(root, "Create an account");
  root.append(form({
    label: "Create an account", submit: "Create account",
    fields: [
      { name: "name", label: "Name", required: true, maxlength: 100, autocomplete: "name" },
      { name: "email", label: "Email", type: "email", required: true, autocomplete: "email" },
      { name: "password", label: "Password (8 to 128 characters)", type: "password", required: true, minlength: 8, maxlength: 128, autocomplete: "new-password" },
    ],
    action: async (values) => {
      await api("POST", "/api/users/register", { body: values, anonymous: true });
      const signed = await api("POST", "/api/users/login", { body: { email: values.email, password: values.password }, anonymous: true });
      begin({ token: signed.token, user: signed.user });
      announce(`Welcome, ${signed.user.name}.`);
      location.hash = "#/";
    },
  }));
}

function begin(value) {
  stream.stop(); // a session signed in over another: the earlier one's stream ends here
  session.set(value);
  follow();
}

async function signOut(message, tellTheShop) {
  const ending = session.current;
  stream.stop();
  if (tellTheShop && ending) {
    try {
      await api("POST", "/api/users/logout");
    } catch {
      // the session is forgotten here either way
    }
  }
  session.set(null);
  notifications.setUnread(0);
  sessionStorage.setItem("shop.signin-message", message);
  location.hash = ending?.user.role === "admin" ? "#/admin/signin" : "#/signin";
  render();
}

// Live notifications --------------------------------------------------------------------------

const stream = new NotificationStream({
  onNotification(notification) {
    countUnreadSoon();
    announce(`${notification.title}. ${notification.body}`);
    view?.onNotification?.(notification);
  },
  onState(state) {
    const indicator = document.getElementById("live-state");
    indicator.textContent = state === "live" ? "Live" : "Reconnecting…";
    indicator.className = state === "live" ? "ok" : "bad";
    if (state === "live") {
      refreshUnread();
      view?.onReconnect?.();
    }
  },
  onSessionEnded: sessionEnded,
});

// The shop ended this session (revoked, expired, signed out elsewhere): back to sign-in.
function sessionEnded() {
  stream.stop();
  session.set(null);
  notifications.setUnread(0);
  goSignIn("Your session has ended. Please sign in again.");
}

let unreadAsked = 0;
async function refreshUnread() {
  const asking = ++unreadAsked;
  try {
    const page = await api("GET", "/api/notifications?limit=1");
    // Answers may arrive out of order: only the latest question's answer counts.
    if (asking === unreadAsked) notifications.setUnread(page.unreadCount);
    return page.items[0]?.id || null;
  } catch {
    return null;
  }
}

// The count is asked of the shop, never added up here: a reconnect's catch-up resends
// notifications the list may already have counted. One ask serves a burst of them.
let counting = null;
function countUnreadSoon() {
  clearTimeout(counting);
  counting = setTimeout(refreshUnread, 200);
}

// Follows the signed-in shopper's notifications from the newest one they have, so nothing
// made between this list and the stream's start is missed.
async function follow() {
  const current = session.current;
  if (!current || current.user.role === "admin") return;
  const newest = await refreshUnread();
  if (session.current === current) stream.start(current.token, newest);
}

whenSessionEnds(sessionEnded);
document.addEventListener("cart-changed", drawHeader);
document.addEventListener("unread-changed", drawHeader);
window.addEventListener("hashchange", render);
follow();
render();
