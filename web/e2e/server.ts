// Starts a real `attune demo` (or `attune serve` with extra arguments) on a free port for the
// end-to-end tests, and stops it afterwards.
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";

export interface Attune {
  url: string;
  log: () => string;
  stop: () => Promise<void>;
}

/** The binary to test: $ATTUNE_BIN, else the debug build in $CARGO_TARGET_DIR or ../target. */
export function attuneBin(): string {
  if (process.env.ATTUNE_BIN) return process.env.ATTUNE_BIN;
  const root = new URL("../..", import.meta.url).pathname;
  const target = process.env.CARGO_TARGET_DIR ?? join(root, "target");
  const bin = join(target, "debug", "attune");
  if (!existsSync(bin)) throw new Error(`no attune binary at ${bin}: run cargo build -p attune, or set ATTUNE_BIN`);
  return bin;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const addr = s.address();
      const port = typeof addr === "object" && addr ? addr.port : 0;
      s.close(() => resolve(port));
    });
  });
}

export async function startAttune(args: string[] = ["demo"], env: Record<string, string> = {}): Promise<Attune> {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("ATTUNE__")));
  const child: ChildProcess = spawn(attuneBin(), [...args, "--listen", `127.0.0.1:${port}`], {
    env: { ...clean, RUST_LOG: "warn", ...env },
    stdio: ["ignore", "ignore", "pipe"],
  });
  let log = "";
  child.stderr?.on("data", (d: Buffer) => (log += d.toString()));
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const deadline = Date.now() + 150_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`attune exited (${child.exitCode}):\n${log}`);
    try {
      // Ready, and done embedding the catalog in the background (when vector search is on).
      const r = await fetch(`${url}/readyz`);
      if (r.ok) {
        const body = (await r.json()) as { index?: { catalog_items: number; vectors?: number | null } };
        const ix = body.index;
        if (!ix || ix.vectors == null || ix.vectors >= ix.catalog_items) break;
      }
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`attune did not become ready at ${url}:\n${log}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  return {
    url,
    log: () => log,
    stop: async () => {
      if (child.exitCode === null) {
        child.kill("SIGTERM");
        await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
        if (child.exitCode === null) child.kill("SIGKILL");
      }
    },
  };
}
