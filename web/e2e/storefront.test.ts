// The storefront in a real browser (Debian's chromium driven by playwright-core) against a real
// `attune demo`: each scenario of issue 21, with a screenshot per step in web/test-results/.
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import type { Browser, BrowserContext, Page } from "playwright-core";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { launch } from "./browser";
import { startAttune, type Attune } from "./server";

const SHOTS = new URL("../test-results", import.meta.url).pathname;

let attune: Attune;
let browser: Browser;
let context: BrowserContext;
let page: Page;
let problems: string[];

async function shot(name: string): Promise<void> {
  mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: false });
}

/** The item ids of the cards in `scope`, in order. */
async function ids(scope: string): Promise<string[]> {
  return page.locator(`${scope} [data-testid=product-card]`).evaluateAll((els) =>
    els.map((e) => e.getAttribute("data-item-id") ?? ""),
  );
}

async function searchFor(text: string): Promise<void> {
  const box = page.getByRole("searchbox", { name: "Search the shop" });
  await box.fill("");
  await box.pressSequentially(text, { delay: 25 });
  await page.locator(`[data-testid=results-for][data-query="${text}"]`).waitFor();
  await page.locator('section[aria-label="Search results"][aria-busy=false]').waitFor();
}

function eventsPosted(): Promise<unknown> {
  return page.waitForResponse((r) => r.url().endsWith("/v1/events") && r.request().method() === "POST");
}

/** How often the session has seen each of `ids` skipped. */
async function skipCounts(ids: Iterable<string>): Promise<number[]> {
  const id = await page.evaluate(() => localStorage.getItem("attune.session"));
  const r = await fetch(`${attune.url}/v1/sessions/${encodeURIComponent(id ?? "")}`);
  const s = (await r.json()) as { skipped: { item_id: string; count: number }[] };
  return [...ids].map((i) => s.skipped.find((x) => x.item_id === i)?.count ?? 0);
}

/** The search-results cards' ids once the list for `text` has settled. */
async function results(): Promise<string[]> {
  return ids('section[aria-label="Search results"]');
}

beforeAll(async () => {
  attune = await startAttune(["demo"]);
  browser = await launch();
});

afterAll(async () => {
  await browser?.close();
  await attune?.stop();
});

beforeEach(async () => {
  context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  page = await context.newPage();
  problems = [];
  page.on("console", (m) => {
    if (m.type() === "error") problems.push(`console: ${m.text()}`);
  });
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("response", (r) => {
    if (r.status() >= 400) problems.push(`HTTP ${r.status()} ${r.request().method()} ${r.url()}`);
  });
  await page.goto(attune.url);
  await page.locator('section[data-surface=home][data-strategy]').first().waitFor();
});

afterEach(async () => {
  await context?.close();
  expect(problems, "no console errors").toEqual([]);
});

const PLANT_YOGURTS = new Set([
  "oatly-creamy-vanilla-oat-yogurt-400g",
  "the-coconut-collaborative-natural-coconut-yogurt-350g",
  "alpro-plain-soy-yogurt-500g",
  "kite-hill-plain-almond-milk-yogurt-150g",
  "harvest-table-plant-based-strawberry-oat-yogurt-4-x-100g",
]);

describe("the storefront", () => {
  it("oat milk, then yogurt: plant-based yogurts first, with the badge", async () => {
    await shot("01-home-fresh");
    await searchFor("oat milk");
    await shot("02-search-oat-milk");
    const posted = eventsPosted();
    await page.locator('[data-item-id="oatly-oat-milk-original-1l"] a').first().click();
    await page.getByRole("heading", { level: 1 }).waitFor();
    await posted;
    await shot("03-product-oat-milk");
    await searchFor("yogurt");
    await shot("04-search-yogurt");
    const top = (await results()).slice(0, 3);
    for (const id of top) expect(PLANT_YOGURTS.has(id), `${id} is a plant-based yogurt`).toBe(true);
    const first = page.locator(`section[aria-label="Search results"] [data-item-id="${top[0]}"]`);
    await expect(first.locator("[data-badge=because]").textContent()).resolves.toMatch(/Because you liked Oatly/);
  });

  it("skipping the spicy chips three times drops them", async () => {
    // A phone: two cards a row, and the page is long enough to scroll every result past the top.
    await page.setViewportSize({ width: 390, height: 800 });
    await searchFor("chips");
    const spicy = new Set(
      await page
        .locator('section[aria-label="Search results"] [data-testid=product-card]')
        .filter({ hasText: "spicy" })
        .evaluateAll((els) => els.map((e) => e.getAttribute("data-item-id") ?? "")),
    );
    expect(spicy.size).toBeGreaterThanOrEqual(4);
    // The chips themselves (vector search also brings other snacks further down).
    const chips = new Set(
      await page
        .locator('section[aria-label="Search results"] [data-testid=product-card]')
        .filter({ has: page.getByRole("img", { name: "Chips tile" }) })
        .evaluateAll((els) => els.map((e) => e.getAttribute("data-item-id") ?? "")),
    );
    const before = (await results()).filter((id) => chips.has(id));
    const lastNonSpicy = (list: string[]) => Math.max(...list.map((id, i) => (spicy.has(id) ? -1 : i)));
    const firstSpicy = (list: string[]) => list.findIndex((id) => spicy.has(id));
    expect(firstSpicy(before)).toBeLessThan(lastNonSpicy(before));
    await shot("05-chips-before");
    for (let round = 1; round <= 3; round++) {
      // Look at the spicy ones only, and scroll past all of them without a click.
      await page.getByRole("link", { name: "Attune Market" }).click();
      await searchFor("chips");
      await page.getByText("Filters").click();
      await page.getByRole("checkbox", { name: /^spicy/ }).check();
      await page.locator(`[data-testid=results-for][data-filters='{"flavor":["spicy"]}']`).waitFor();
      await page.locator('section[aria-label="Search results"][aria-busy=false]').waitFor();
      for (let i = 0; i < 12; i++) {
        await page.mouse.wheel(0, 350);
        await page.waitForTimeout(60);
      }
      // Every spicy chip was scrolled past once more (skips go out in batches).
      await expect.poll(async () => skipCounts(spicy), { timeout: 10_000 }).toEqual([...spicy].map(() => round));
    }
    await page.getByRole("link", { name: "Attune Market" }).click();
    await searchFor("chips");
    await shot("05-chips-after-three-skips");
    const after = (await results()).filter((id) => chips.has(id));
    expect(after.length).toBe(before.length);
    expect(firstSpicy(after)).toBeGreaterThan(lastNonSpicy(after));
    const panel = page.getByRole("complementary", { name: "Your session" });
    await expect(panel.textContent()).resolves.toMatch(/×3/);
  });

  it("add 2 of an item, reload: the cart and the usual-quantity badge show 2", async () => {
    await page.goto(`${attune.url}/item/oatly-oat-milk-barista-1l`);
    await page.getByRole("heading", { level: 1 }).waitFor();
    await page.getByRole("button", { name: /^More / }).click();
    await expect(page.getByRole("textbox", { name: /^Quantity of / }).inputValue()).resolves.toBe("2");
    const posted = eventsPosted();
    await page.getByRole("button", { name: "Add to cart" }).click();
    await posted;
    await page.getByRole("status").waitFor();
    await shot("06-added-two");
    await page.reload();
    await page.getByRole("heading", { level: 1 }).waitFor();
    await page.locator("[data-badge=usual]").first().waitFor();
    await expect(page.locator("[data-badge=usual]").first().textContent()).resolves.toBe("Your usual: 2");
    await expect(page.getByRole("textbox", { name: /^Quantity of / }).inputValue()).resolves.toBe("2");
    await expect(page.getByTestId("cart-count").textContent()).resolves.toBe("2");
    await page.getByRole("link", { name: /^Cart,/ }).click();
    const line = page.locator('[data-cart-item="oatly-oat-milk-barista-1l"]');
    await line.waitFor();
    await expect(line.getByTestId("cart-quantity").textContent()).resolves.toMatch(/2$/);
    await expect(line.locator("[data-badge=usual]").textContent()).resolves.toBe("Your usual: 2");
    await shot("07-cart-after-reload");
  });

  it("the home feed after three clicks differs from a fresh visitor's, and says why", async () => {
    // The first click is on the cold visitor's home shelf: the list goes to /v1/feedback with
    // what was shown and what was clicked (the bandit learns from it).
    const shelf = page.locator('section[data-surface=home][aria-label="For you"]');
    const firstId = await shelf.locator("[data-testid=product-card]").first().getAttribute("data-item-id");
    const feedback = page.waitForRequest(
      (r) => r.url().endsWith("/v1/feedback") && (r.postData() ?? "").includes(`"clicked":["${firstId}"]`),
    );
    await shelf.locator("[data-testid=product-card] a").first().click();
    const sent = JSON.parse((await feedback).postData() ?? "{}") as { surface: string; shown: string[]; clicked: string[] };
    expect(sent.surface).toBe("home");
    expect(sent.shown.length).toBe(8);
    expect(sent.clicked).toEqual([firstId]);
    await page.getByRole("heading", { level: 1 }).waitFor();
    for (const q of ["oat milk", "yogurt"]) {
      await searchFor(q);
      const posted = eventsPosted();
      await page.locator('section[aria-label="Search results"] [data-testid=product-card] a').first().click();
      await page.getByRole("heading", { level: 1 }).waitFor();
      await posted;
    }
    await page.getByRole("link", { name: "Attune Market" }).click();
    await page.getByRole("checkbox", { name: "Compare with a fresh visitor" }).check();
    const mine = page.locator('[data-pane=you] section[data-surface=home][aria-label="For you"]');
    const fresh = page.locator('[data-pane=fresh] section[data-surface=home][aria-label="For you"]');
    await mine.and(page.locator("[data-strategy=pipeline]")).waitFor();
    await fresh.and(page.locator("[data-strategy=bandit]")).waitFor();
    await shot("08-home-compare");
    const a = await ids('[data-pane=you] section[aria-label="For you"]');
    const b = await ids('[data-pane=fresh] section[aria-label="For you"]');
    expect(a.length).toBeGreaterThan(0);
    expect(a).not.toEqual(b);
    // It says why: a personal badge on a card, and the "why" panel names the boost.
    await mine.locator("[data-badge=because]").first().waitFor();
    const card = mine.locator("[data-testid=product-card]").first();
    await card.getByRole("button", { name: /^Why is / }).click();
    await expect(card.getByRole("tooltip").textContent()).resolves.toMatch(/Proposed by/);
    await shot("09-home-why");
  });

  it("forget me empties the panel and the next page is a fresh visitor's", async () => {
    await searchFor("oat milk");
    const posted = eventsPosted();
    await page.locator('section[aria-label="Search results"] [data-testid=product-card] a').first().click();
    await posted;
    const panel = page.getByRole("complementary", { name: "Your session" });
    await panel.locator("[data-affinity]").first().waitFor();
    await shot("10-panel-before-forget");
    const before = await page.evaluate(() => localStorage.getItem("attune.session"));
    await panel.getByRole("button", { name: "Forget me" }).click();
    await panel.getByTestId("session-empty").waitFor();
    await page.locator('section[data-surface=home][aria-label="For you"][data-strategy=bandit]').waitFor();
    const after = await page.evaluate(() => localStorage.getItem("attune.session"));
    expect(after).not.toBe(before);
    const gone = await fetch(`${attune.url}/v1/sessions/${encodeURIComponent(before ?? "")}`);
    expect(gone.status).toBe(404);
    await shot("11-after-forget");
  });

  it("search as you type never shows results older than the last keystroke", async () => {
    // Record every query the results line has claimed, as the page changed.
    await page.evaluate(() => {
      const w = window as unknown as { seen: string[] };
      w.seen = [];
      new MutationObserver(() => {
        const q = document.querySelector("[data-testid=results-for]")?.getAttribute("data-query");
        if (q && w.seen[w.seen.length - 1] !== q) w.seen.push(q);
      }).observe(document.body, { subtree: true, childList: true, attributes: true });
    });
    const box = page.getByRole("searchbox", { name: "Search the shop" });
    await box.pressSequentially("yogurt", { delay: 40 });
    await page.locator('[data-testid=results-for][data-query="yogurt"]').waitFor();
    await box.pressSequentially(" plain", { delay: 220 }); // slower: some prefixes get answers
    await page.locator('[data-testid=results-for][data-query="yogurt plain"]').waitFor();
    await page.waitForTimeout(500);
    const seen = await page.evaluate(() => (window as unknown as { seen: string[] }).seen);
    // Each result list shown belongs to a longer prefix than the one before: never an older one.
    for (let i = 1; i < seen.length; i++) {
      expect(seen[i]!.startsWith(seen[i - 1]!), `${seen[i - 1]} then ${seen[i]}`).toBe(true);
      expect(seen[i]!.length).toBeGreaterThan(seen[i - 1]!.length);
    }
    expect(seen[seen.length - 1]).toBe("yogurt plain");
    await expect(box.inputValue()).resolves.toBe("yogurt plain");
    await shot("12-as-you-type");
  });

  it("works on a phone, with an accessible name on every control", async () => {
    await page.setViewportSize({ width: 390, height: 844 });
    await page.reload();
    await page.locator("section[data-surface=home][data-strategy]").first().waitFor();
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    expect(overflow).toBeLessThanOrEqual(0);
    await page.getByRole("button", { name: "Your session" }).click();
    await expect(page.getByRole("complementary", { name: "Your session" }).isVisible()).resolves.toBe(false);
    await page.getByRole("button", { name: "Your session" }).click();
    await searchFor("oat milk");
    await shot("13-phone-search");
    const unnamed = await page.evaluate(() =>
      [...document.querySelectorAll("button, a, input, select, [role=img]")]
        .filter((el) => {
          const label = el.getAttribute("aria-label") ?? "";
          const text = (el.textContent ?? "").trim();
          const byLabel = el.id ? document.querySelector(`label[for="${el.id}"]`) : null;
          const wrapped = el.closest("label");
          return !label && !text && !byLabel && !wrapped;
        })
        .map((el) => el.outerHTML.slice(0, 120)),
    );
    expect(unnamed).toEqual([]);
  });
});

