import { chromium, type Browser } from "playwright-core";

/** Debian's chromium (or $CHROMIUM), headless, with nothing that reaches the network by itself. */
export async function launch(): Promise<Browser> {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-default-apps",
      "--disable-sync",
      "--no-first-run",
      "--disable-gpu",
    ],
  });
}
