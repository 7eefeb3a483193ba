// What the shop remembers of items it has shown, so reasons can name an item ("Because you liked
// Oat Milk") without another request.
import type { Item } from "../api/client";

const titles = new Map<string, string>();

export function remember(items: Iterable<Item>): void {
  for (const it of items) titles.set(it.id, it.title);
}

export function titleOf(id: string): string | undefined {
  return titles.get(id);
}
