// The visitor's session id, kept in localStorage so a reload is the same visitor.
const KEY = "attune.session";

function fresh(): string {
  const id =
    typeof crypto !== "undefined" && "randomUUID" in crypto
      ? crypto.randomUUID()
      : `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
  return `shop-${id}`;
}

export function currentSessionId(): string {
  let id = localStorage.getItem(KEY);
  if (!id) {
    id = fresh();
    localStorage.setItem(KEY, id);
  }
  return id;
}

/** Starts a new visitor: the next page is a fresh visitor's. */
export function newSessionId(): string {
  const id = fresh();
  localStorage.setItem(KEY, id);
  return id;
}

const ACTIVE = "attune.session.active";

/** Whether the server has heard of this session (so asking for it cannot be a 404 in the
 * console for a visitor who has not done anything yet). */
export function isActive(id: string): boolean {
  return localStorage.getItem(ACTIVE) === id;
}

export function markActive(id: string): void {
  localStorage.setItem(ACTIVE, id);
}
