// The unread count the header shows, kept from the list and the stream.

export const notifications = {
  unread: 0,
  setUnread(count) {
    this.unread = Math.max(0, count);
    document.dispatchEvent(new CustomEvent("unread-changed"));
  },
};
