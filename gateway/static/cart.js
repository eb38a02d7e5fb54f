// The cart lives in this browser only (localStorage), until the order is placed.

const CART_KEY = "shop.cart";

function read() {
  try {
    return JSON.parse(localStorage.getItem(CART_KEY)) || { lines: {}, key: null };
  } catch {
    return { lines: {}, key: null };
  }
}

function write(state) {
  localStorage.setItem(CART_KEY, JSON.stringify(state));
  document.dispatchEvent(new CustomEvent("cart-changed"));
}

// crypto.randomUUID exists only on https or localhost; getRandomValues everywhere.
function randomKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export const cart = {
  lines: () => Object.values(read().lines),
  count: () => Object.values(read().lines).reduce((sum, line) => sum + line.quantity, 0),
  items: () => Object.values(read().lines).map(({ productId, quantity }) => ({ productId, quantity })),

  add(product, quantity) {
    const state = read();
    const line = state.lines[product.id];
    const total = Math.min(100, (line?.quantity || 0) + quantity);
    state.lines[product.id] = {
      productId: product.id, name: product.name, sku: product.sku,
      priceCents: product.priceCents, quantity: total,
    };
    state.key = null; // another cart is another order: a new Idempotency-Key
    write(state);
  },

  set(productId, quantity) {
    const state = read();
    const line = state.lines[productId];
    if (!line || line.quantity === quantity) return; // the same cart keeps its key
    if (quantity > 0) line.quantity = quantity;
    else delete state.lines[productId];
    state.key = null;
    write(state);
  },

  // The Idempotency-Key of this cart's order: the same until the cart changes.
  key() {
    const state = read();
    if (!state.key) {
      state.key = randomKey();
      write(state);
    }
    return state.key;
  },

  clear: () => write({ lines: {}, key: null }),
};
