import { describe, expect, it } from "vitest";
import { Latest } from "./latest";

function deferred<T>() {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

describe("Latest", () => {
  it("drops an older answer that arrives after a newer one", async () => {
    const latest = new Latest<string>();
    const slow = deferred<string>();
    const fast = deferred<string>();
    const first = latest.run(() => slow.promise); // "y"
    const second = latest.run(() => fast.promise); // "yo"
    fast.resolve("results for yo");
    slow.resolve("results for y");
    expect(await second).toEqual({ value: "results for yo" });
    expect(await first).toBeNull();
  });

  it("aborts the request before it", async () => {
    const latest = new Latest<string>();
    let firstSignal: AbortSignal | undefined;
    const first = latest.run((signal) => {
      firstSignal = signal;
      return new Promise((_, reject) => signal.addEventListener("abort", () => reject(new Error("aborted"))));
    });
    const second = latest.run(async () => "new");
    expect(firstSignal?.aborted).toBe(true);
    expect(await first).toBeNull();
    expect(await second).toEqual({ value: "new" });
  });

  it("reports the latest request's own error", async () => {
    const latest = new Latest<string>();
    await expect(latest.run(async () => Promise.reject(new Error("boom")))).rejects.toThrow("boom");
  });

  it("drops everything in flight after cancel", async () => {
    const latest = new Latest<string>();
    const d = deferred<string>();
    const run = latest.run(() => d.promise);
    latest.cancel();
    d.resolve("late");
    expect(await run).toBeNull();
  });
});
