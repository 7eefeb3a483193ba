import { render, screen } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { describe, expect, it, vi } from "vitest";
import type { Item, RecExplanation } from "../api/client";
import { ViewerContextForTests } from "../shop";
import { ProductCard } from "./ProductCard";

const item: Item = {
  id: "oatly-oat-milk",
  title: "Oatly Oat Drink 1 L",
  brand: "Oatly",
  category: "Dairy & Alternatives > Milk",
  price: 3.49,
  in_stock: true,
  attributes: { diet: ["plant_based", "vegan"], size: "1l" },
};

const explanation: RecExplanation = {
  sources: [{ source: "trending", rank: 1, score: 9 }],
  contributions: [{ source: "trending", value: 0.15 }],
  blended: 0.15,
  blend_position: 1,
  boosts: [],
  adjustment: 0,
  capped: false,
  diversity_demoted: false,
  rules: [],
};

function renderCard(live: boolean, onOpen = vi.fn()) {
  render(
    <ViewerContextForTests value={{ live, sessionId: live ? "s" : null, session: null }}>
      <ProductCard item={item} explanation={explanation} usualQuantity={2} onOpen={onOpen} />
    </ViewerContextForTests>,
  );
  return onOpen;
}

describe("ProductCard", () => {
  it("shows brand, price, attributes and what personalization did", () => {
    renderCard(true);
    expect(screen.getByRole("link", { name: "Oatly Oat Drink 1 L" })).toBeTruthy();
    expect(screen.getByText("$3.49")).toBeTruthy();
    expect(screen.getByText("plant based")).toBeTruthy();
    const badges = screen.getByRole("list", { name: "personalization" });
    expect(badges.textContent).toContain("Your usual: 2");
    expect(badges.textContent).toContain("Trending");
  });

  it("explains itself on tap", async () => {
    renderCard(true);
    await userEvent.click(screen.getByRole("button", { name: "Why is Oatly Oat Drink 1 L here?" }));
    expect(screen.getByRole("tooltip").textContent).toContain("Proposed by trending #1");
  });

  it("reports a click for the live visitor only", async () => {
    const onOpen = renderCard(true);
    await userEvent.click(screen.getByRole("link", { name: "Oatly Oat Drink 1 L" }));
    expect(onOpen).toHaveBeenCalledWith(item);
    expect(window.location.pathname).toBe("/item/oatly-oat-milk");
  });

  it("does nothing for the fresh visitor's read-only pane", async () => {
    window.history.replaceState(null, "", "/");
    const onOpen = renderCard(false);
    await userEvent.click(screen.getByRole("link", { name: "Oatly Oat Drink 1 L" }));
    expect(onOpen).not.toHaveBeenCalled();
    expect(window.location.pathname).toBe("/");
  });
});
