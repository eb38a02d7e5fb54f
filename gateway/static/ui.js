// Building the page: elements from data (never HTML from strings, so nothing a user typed can
// become markup), forms whose errors are read out and tied to their fields, notices.

import { ApiError } from "./api.js";

export function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else if (name === "class") element.className = value;
    else if (value === true) element.setAttribute(name, "");
    else element.setAttribute(name, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : String(child));
  }
  return element;
}

let uniqueId = 0;
const nextId = (prefix) => `${prefix}-${++uniqueId}`;

// A labelled field: {name, label, type, value, required, options, hint, ...input attributes}.
export function field(spec) {
  const id = nextId(spec.name);
  const { name, label, type = "text", value, options, hint, ...rest } = spec;
  const hintId = hint ? `${id}-hint` : null;
  const errorId = `${id}-error`;
  let control;
  if (options) {
    control = h("select", { id, name, ...rest },
      options.map(([optionValue, text]) =>
        h("option", { value: optionValue, selected: optionValue === value }, text)));
  } else if (type === "textarea") {
    control = h("textarea", { id, name, ...rest }, value ?? "");
  } else {
    control = h("input", { id, name, type, value: value ?? null, ...rest });
  }
  control.setAttribute("aria-describedby", [hintId, errorId].filter(Boolean).join(" "));
  return h("div", { class: "field" },
    h("label", { for: id }, label),
    hint && h("p", { class: "hint", id: hintId }, hint),
    control,
    h("p", { class: "field-error", id: errorId, hidden: true }));
}

// A form whose submit runs `action(values)`; while it runs the form is busy (its submit
// disabled, so a double click sends once), and what the shop refuses is shown in words:
// the message on top, each field's own under it.
export function form({ fields, submit, action, label, extra = [] }) {
  const summary = h("div", { class: "error-summary", role: "alert", hidden: true });
  const button = h("button", { type: "submit" }, submit);
  const element = h("form", { "aria-label": label, novalidate: true }, summary,
    fields.map(field), extra, h("div", { class: "actions" }, button));
  element.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (button.disabled) return;
    clearErrors(element);
    const values = Object.fromEntries(new FormData(element).entries());
    button.disabled = true;
    element.setAttribute("aria-busy", "true");
    try {
      await action(values, element);
    } catch (error) {
      showErrors(element, error);
    } finally {
      button.disabled = false;
      element.removeAttribute("aria-busy");
    }
  });
  return element;
}

export function clearErrors(element) {
  const summary = element.querySelector(".error-summary");
  summary.hidden = true;
  summary.replaceChildren();
  for (const message of element.querySelectorAll(".field-error")) {
    message.hidden = true;
    message.textContent = "";
  }
  for (const control of element.querySelectorAll("[aria-invalid]")) {
    control.removeAttribute("aria-invalid");
  }
}

// The shop's error, in words, with each field's problem next to that field.
export function showErrors(element, error) {
  if (!(error instanceof ApiError)) throw error;
  const summary = element.querySelector(".error-summary");
  const lines = [];
  for (const detail of error.details) {
    const text = describeDetail(detail);
    const control = detail.field && controlFor(element, detail.field);
    if (control) {
      control.setAttribute("aria-invalid", "true");
      const message = element.querySelector(`#${CSS.escape(control.id)}-error`);
      message.textContent = text;
      message.hidden = false;
    }
    lines.push(text);
  }
  summary.replaceChildren(h("p", {}, error.sentence),
    lines.length ? h("ul", {}, lines.map((line) => h("li", {}, line))) : null);
  summary.hidden = false;
  summary.setAttribute("tabindex", "-1");
  summary.focus();
}

function controlFor(element, path) {
  const parts = path.split(".");
  for (let i = parts.length - 1; i >= 0; i--) {
    const control = element.querySelector(`[name="${CSS.escape(parts[i])}"]`);
    if (control) return control;
  }
  return null;
}

// One detail: a field's problem ({field, message}), or a line the stock could not cover.
export function describeDetail(detail) {
  if (detail.sku !== undefined && detail.available !== undefined) {
    return `${detail.sku}: you asked for ${detail.requested}, ${detail.available} left.`;
  }
  const where = humanField(detail.field || "");
  return where ? `${where}: ${detail.message}` : detail.message;
}

function humanField(path) {
  const last = path.split(".").filter((part) => part !== "body" && !/^\d+$/.test(part)).pop();
  if (!last) return "";
  const words = last.replace(/([A-Z])/g, " $1").toLowerCase();
  return words.charAt(0).toUpperCase() + words.slice(1);
}

// A message for everyone to hear, in the page's live region.
export function announce(text) {
  const region = document.getElementById("announcer");
  region.textContent = "";
  requestAnimationFrame(() => {
    region.textContent = text;
  });
}

// An error shown in place of content that could not be loaded.
export function failure(error) {
  if (!(error instanceof ApiError)) throw error;
  return h("div", { class: "error-summary", role: "alert" }, h("p", {}, error.sentence));
}

export function when(iso) {
  return iso ? new Date(iso).toLocaleString() : "";
}

export function statusLabel(status) {
  return status.replaceAll("_", " ");
}
