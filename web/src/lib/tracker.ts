// Everything the visitor does goes to the API: clicks, views, cart changes and purchases at once;
// skips (cards scrolled past unclicked) in batches; shown lists to /v1/feedback when a list goes.
import { sendEvents, sendFeedback, type EventIn, type EventType, type Surface } from "../api/client";

export const SKIP_FLUSH_MS = 600;

export class Tracker {
  private skips = new Set<string>();
  private timer: ReturnType<typeof setTimeout> | null = null;

  constructor(
    private readonly sessionId: () => string,
    /** Called after events were applied (the session changed). */
    private readonly onApplied: () => void,
    private readonly onError: (e: unknown) => void = console.warn,
  ) {}

  async event(type: EventType, itemId?: string, quantity?: number): Promise<void> {
    const e: EventIn = { type, session_id: this.sessionId(), item_id: itemId ?? null };
    if (quantity !== undefined) e.quantity = quantity;
    try {
      await sendEvents([e]);
      this.onApplied();
    } catch (err) {
      this.onError(err);
    }
  }

  async events(list: { type: EventType; itemId: string; quantity?: number }[]): Promise<void> {
    const session_id = this.sessionId();
    try {
      await sendEvents(
        list.map((x) => ({ type: x.type, session_id, item_id: x.itemId, quantity: x.quantity ?? null })),
      );
      this.onApplied();
    } catch (err) {
      this.onError(err);
    }
  }

  /** A card scrolled past without a click; sent with others after a short pause. */
  skip(itemId: string): void {
    this.skips.add(itemId);
    if (this.timer === null) this.timer = setTimeout(() => void this.flush(), SKIP_FLUSH_MS);
  }

  async flush(keepalive = false): Promise<void> {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    if (this.skips.size === 0) return;
    const session_id = this.sessionId();
    const events: EventIn[] = [...this.skips].map((item_id) => ({ type: "skip", session_id, item_id }));
    this.skips.clear();
    try {
      await sendEvents(events, keepalive);
      this.onApplied();
    } catch (err) {
      this.onError(err);
    }
  }

  /** Drops queued skips (the visitor was forgotten). */
  reset(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    this.skips.clear();
  }

  feedback(surface: Surface, shown: string[], clicked: string[], keepalive = false): void {
    sendFeedback(surface, this.sessionId(), shown, clicked, keepalive).catch(this.onError);
  }
}
