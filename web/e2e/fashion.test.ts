// The same shop against `attune serve` with the imported 44k-product fashion catalog (no images in
// that data: each tile is drawn from the item's category and colour).
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Browser, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { attuneBin, startAttune, type Attune } from "./server";
import { launch } from "./browser";

const STYLES =
  process.env.FASHION_STYLES ?? new URL("../../../shared/data/fashion-catalog/styles.csv", import.meta.url).pathname;
const SHOTS = new URL("../test-results", import.meta.url).pathname;

let attune: Attune;
let browser: Browser;
let page: Page;
let dir: string;

describe.skipIf(!existsSync(STYLES))("the storefront on the fashion catalog", () => {
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "attune-fashion-"));
    const catalog = join(dir, "fashion.ndjson");
    execFileSync(attuneBin(), ["import", "--format", "fashion", STYLES, "--out", catalog], { stdio: "ignore" });
    attune = await startAttune(["serve"], {
      ATTUNE__CATALOG__PATH: catalog,
      ATTUNE__SEARCH__MODEL: "off",
    });
    browser = await launch();
    page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  });

  afterAll(async () => {
    await browser?.close();
    await attune?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it("searches, filters by colour, opens a product and personalizes the home feed", async () => {
    const problems: string[] = [];
    page.on("pageerror", (e) => problems.push(e.message));
    page.on("console", (m) => {
      if (m.type() === "error") problems.push(m.text());
    });
    await page.goto(attune.url);
    await page.locator("section[data-surface=home][data-strategy]").first().waitFor();
    const box = page.getByRole("searchbox", { name: "Search the shop" });
    await box.pressSequentially("shirt", { delay: 30 });
    await page.locator('[data-testid=results-for][data-query="shirt"]').waitFor();
    await page.getByRole("checkbox", { name: /^navy blue/ }).check();
    await page.locator(`[data-testid=results-for][data-filters='{"color":["navy_blue"]}']`).waitFor();
    await page.locator('section[aria-label="Search results"][aria-busy=false]').waitFor();
    const tiles = await page
      .locator('section[aria-label="Search results"] [role=img]')
      .evaluateAll((els) => els.map((e) => e.getAttribute("aria-label")));
    expect(tiles.length).toBeGreaterThan(4);
    expect(tiles.every((t) => t === "Shirts tile")).toBe(true);
    await page.screenshot({ path: join(SHOTS, "20-fashion-navy-shirts.png") });
    await page.locator('section[aria-label="Search results"] [data-testid=product-card] a').first().click();
    await page.getByRole("heading", { level: 1 }).waitFor();
    await page.getByRole("link", { name: "Attune Market" }).click();
    const feed = page.locator('section[data-surface=home][aria-label="For you"]');
    await feed.locator("[data-testid=product-card]").first().waitFor();
    await page.screenshot({ path: join(SHOTS, "21-fashion-home.png") });
    expect(problems).toEqual([]);
  });
});
