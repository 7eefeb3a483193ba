import { describe, expect, it } from "vitest";
import type { Explanation, Item, RecExplanation, Session } from "../api/client";
import { badges, prettyKey, reasons } from "./badges";
import { remember } from "./catalog";

const oatMilk: Item = { id: "oat-milk", title: "Oat Milk 1 L", category: "Dairy & Alternatives > Milk", in_stock: true, attributes: {} };
const yogurt: Item = { id: "oat-yogurt", title: "Oat Yogurt", category: "Dairy & Alternatives > Yogurt", in_stock: true, attributes: {} };

const session = {
  session_id: "s",
  created_at: "",
  updated_at: "",
  expires_at: "",
  event_count: 2,
  unknown_item_events: 0,
  affinities: {
    brand: [],
    category: [],
    intent: [],
    attribute: [
      {
        key: "diet:plant_based",
        score: 0.8,
        reasons: [{ event: "click", item_id: "oat-milk", at: "", delta: 0.5, decayed: 0.5 }],
      },
    ],
  },
  seen: ["oat-milk"],
  skipped: [],
  cart: [],
  quantities: [],
} as Session;

function searchExplanation(over: Partial<Explanation>): Explanation {
  return {
    sources: [{ source: "keyword", rank: 3, score: 2.1 }],
    fused: 0.03,
    tier: 1,
    relevance: 1.03,
    retrieval_position: 3,
    moved: 2,
    boosts: [],
    adjustment: 0,
    capped: false,
    diversity_demoted: false,
    ...over,
  };
}

describe("badges", () => {
  it("names the item behind a session boost", () => {
    remember([oatMilk]);
    const e = searchExplanation({
      boosts: [{ source: "session", kind: "attribute", boost: 0.12, cap: 0.2, signals: [{ key: "diet:plant_based", affinity: 0.8 }] }],
    });
    const list = badges({ item: yogurt, explanation: e, session });
    expect(list.map((b) => b.label)).toEqual(["Because you liked Oat Milk 1 L", "↑ 2 for you"]);
  });

  it("shows the usual quantity, trending, new and bandit picks", () => {
    const e: RecExplanation = {
      sources: [{ source: "trending", rank: 2, score: 5 }],
      contributions: [],
      blended: 0.4,
      blend_position: 1,
      boosts: [],
      adjustment: 0,
      capped: false,
      diversity_demoted: false,
      rules: [{ rule: "new_arrival", boost: 0.05 }],
      bandit: { sample: 0.07, alpha: 2, beta: 19 },
    };
    const labels = badges({ item: yogurt, explanation: e, usualQuantity: 2 }).map((b) => b.label);
    expect(labels).toEqual(["Your usual: 2", "Exploring", "Trending", "New"]);
    expect(reasons(e)).toContain("New arrival: +0.050");
  });

  it("says when a skip pushed an item down, and nothing when nothing moved it", () => {
    const e = searchExplanation({
      moved: -3,
      boosts: [{ source: "session", kind: "skip", boost: -0.1, cap: 0.2, signals: [{ key: "chips", affinity: 3 }] }],
    });
    expect(badges({ item: yogurt, explanation: e }).map((b) => b.kind)).toEqual(["skipped"]);
    expect(badges({ item: yogurt })).toEqual([]);
    expect(reasons(null)[0]).toMatch(/Not personalized/);
  });

  it("words keys for people", () => {
    expect(prettyKey("diet:plant_based")).toBe("plant based");
    expect(prettyKey("Dairy & Alternatives > Milk")).toBe("Milk");
  });
});
