// What personalization did to one product card, in words: the badges on the card and the lines of
// its "why" panel, derived only from the API's explanation fields and the visitor's session.
import type { Boost, Explanation, Item, RecExplanation, Session } from "../api/client";
import { titleOf } from "./catalog";

export type BadgeKind = "usual" | "because" | "trending" | "new" | "bandit" | "buy-again" | "moved" | "skipped";

export interface Badge {
  kind: BadgeKind;
  label: string;
}

export interface CardContext {
  item: Item;
  /** A search result's explanation or a recommendation's. */
  explanation?: Explanation | RecExplanation | null;
  /** The visitor's usual quantity of this item, when known. */
  usualQuantity?: number | null;
  session?: Session | null;
}

function isRec(e: Explanation | RecExplanation): e is RecExplanation {
  return "rules" in e;
}

/** `diet:plant_based` → `plant based`; `Dairy & Alternatives > Milk` → `Milk`. */
export function prettyKey(key: string): string {
  const leaf = key.split(">").pop() ?? key;
  const value = leaf.includes(":") ? leaf.slice(leaf.indexOf(":") + 1) : leaf;
  return value.replace(/_/g, " ").trim();
}

function shortTitle(title: string, max = 28): string {
  return title.length <= max ? title : `${title.slice(0, max - 1).trimEnd()}…`;
}

export function formatQuantity(q: number): string {
  return Number.isInteger(q) ? String(q) : q.toFixed(1);
}

/** The event behind a boost: the item or search that moved the affinity most recently. */
function becauseOf(boost: Boost, session: Session | null | undefined): string | null {
  const signal = [...boost.signals].sort((a, b) => b.affinity - a.affinity)[0];
  if (!signal) return null;
  const kind = boost.kind as keyof Session["affinities"];
  const affinity = session?.affinities[kind]?.find((a) => a.key === signal.key);
  if (boost.source === "session" && affinity) {
    for (const r of affinity.reasons) {
      if (r.delta <= 0) continue;
      if (r.item_id) {
        const title = titleOf(r.item_id);
        if (title) return `Because you liked ${shortTitle(title)}`;
      }
      if (r.query) return `Because you searched “${shortTitle(r.query, 20)}”`;
    }
  }
  const who = boost.source === "profile" ? "your profile" : "your taste";
  return `Matches ${who}: ${prettyKey(signal.key)}`;
}

export function badges(ctx: CardContext): Badge[] {
  const out: Badge[] = [];
  if (ctx.usualQuantity != null && ctx.usualQuantity > 0) {
    out.push({ kind: "usual", label: `Your usual: ${formatQuantity(ctx.usualQuantity)}` });
  }
  const e = ctx.explanation;
  if (e) {
    const positive = e.boosts.filter((b) => b.boost > 0 && b.kind !== "skip");
    const strongest = [...positive].sort((a, b) => b.boost - a.boost)[0];
    // Only when it mattered: a search result that personalization moved up, or a
    // recommendation whose boost is a real share of its cap.
    const mattered = strongest && (isRec(e) ? strongest.boost >= 0.3 * strongest.cap : e.moved > 0);
    if (strongest && mattered) {
      const label = becauseOf(strongest, ctx.session);
      if (label) out.push({ kind: "because", label });
    }
    if (e.boosts.some((b) => b.kind === "skip" && b.boost < 0)) {
      out.push({ kind: "skipped", label: "You scrolled past this" });
    }
    if (isRec(e)) {
      if (e.bandit) out.push({ kind: "bandit", label: "Exploring" });
      const trending = e.sources.find((s) => s.source === "trending");
      if (trending && trending.rank <= 10) out.push({ kind: "trending", label: "Trending" });
      if (e.rules.some((r) => r.rule === "new_arrival")) out.push({ kind: "new", label: "New" });
      if (e.rules.some((r) => r.rule === "buy_again")) out.push({ kind: "buy-again", label: "Buy again" });
    } else if (e.moved > 0) {
      out.push({ kind: "moved", label: `↑ ${e.moved} for you` });
    }
  }
  return out;
}

function num(x: number): string {
  return Math.abs(x) >= 100 ? x.toFixed(0) : x.toPrecision(2);
}

/** The lines of the card's "why" panel. */
export function reasons(e: Explanation | RecExplanation | null | undefined): string[] {
  if (!e) return ["Not personalized: nothing about this visitor moved it."];
  const lines: string[] = [];
  const found = e.sources.map((s) => `${s.source} #${s.rank}`).join(", ");
  if (found) lines.push(`Proposed by ${found}`);
  if (isRec(e)) {
    if (e.bandit) {
      lines.push(
        `Bandit draw ${num(e.bandit.sample)} from Beta(${num(e.bandit.alpha)}, ${num(e.bandit.beta)})`,
      );
    }
    lines.push(`Blend ${num(e.blended)}, position ${e.blend_position} before the personal rerank`);
    for (const r of e.rules) {
      if (r.rule === "new_arrival") lines.push(`New arrival: +${num(r.boost ?? 0)}`);
      else if (r.rule === "category_cap") lines.push(`Moved down: at most ${r.max ?? "?"} per category`);
      else if (r.rule === "buy_again") lines.push("Bought before, and its category is bought again");
      else if (r.rule === "pinned") lines.push("Pinned by the shop");
      else lines.push(r.rule);
    }
  } else {
    lines.push(`Position ${e.retrieval_position} by relevance; moved ${e.moved >= 0 ? "up" : "down"} ${Math.abs(e.moved)}`);
  }
  for (const b of e.boosts) {
    const signals = b.signals.map((s) => `${prettyKey(s.key)} ${num(s.affinity)}`).join(", ");
    lines.push(`${b.boost >= 0 ? "+" : ""}${num(b.boost)} ${b.source} ${b.kind} (${signals}), cap ${num(b.cap)}`);
  }
  if (e.capped) lines.push(`Boosts capped at ${num(e.adjustment)} in all`);
  if (e.diversity_demoted) lines.push("Moved down for brand diversity");
  return lines;
}
