// Search as you type: only the answer to the latest request may be shown. Each call to `run`
// aborts the one before, and an answer that arrives after a newer request started is dropped,
// so the results never belong to an older keystroke than the box shows.
export class Latest<T> {
  private seq = 0;
  private controller: AbortController | null = null;

  /** Runs `fetcher`; resolves with its value only if no newer run started meanwhile. */
  async run(fetcher: (signal: AbortSignal) => Promise<T>): Promise<{ value: T } | null> {
    const mine = ++this.seq;
    this.controller?.abort();
    const controller = new AbortController();
    this.controller = controller;
    try {
      const value = await fetcher(controller.signal);
      return mine === this.seq ? { value } : null;
    } catch (e) {
      if (mine !== this.seq || controller.signal.aborted) return null;
      throw e;
    }
  }

  /** Forgets any request in flight (its answer will be dropped). */
  cancel(): void {
    this.seq++;
    this.controller?.abort();
    this.controller = null;
  }
}
