import { useEffect, useRef } from "react";
import type { Explanation, Item, RecExplanation } from "../api/client";
import { badges, prettyKey, type BadgeKind } from "../lib/badges";
import { href, navigate } from "../lib/router";
import { useViewer } from "../shop";
import { Tile } from "./Tile";
import { Why } from "./Why";

const TONE: Record<BadgeKind, string> = {
  usual: "bg-emerald-100 text-emerald-800",
  because: "bg-violet-100 text-violet-800",
  trending: "bg-orange-100 text-orange-800",
  new: "bg-sky-100 text-sky-800",
  bandit: "bg-amber-100 text-amber-800",
  "buy-again": "bg-teal-100 text-teal-800",
  moved: "bg-violet-50 text-violet-700",
  skipped: "bg-stone-200 text-stone-600",
};

export interface CardProps {
  item: Item;
  explanation?: Explanation | RecExplanation | null;
  usualQuantity?: number | null;
  /** The card was clicked (before navigating to the item). */
  onOpen?: (item: Item) => void;
  /** The card scrolled past the top of the screen without a click. */
  onSkip?: (item: Item) => void;
}

function attributeChips(item: Item): string[] {
  const attrs = (item.attributes ?? {}) as Record<string, unknown>;
  const out: string[] = [];
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "size" || k === "pack") continue;
    for (const x of Array.isArray(v) ? v : [v]) {
      if (typeof x === "string" || typeof x === "number") out.push(prettyKey(`${k}:${x}`));
    }
  }
  return out.slice(0, 4);
}

export function ProductCard({ item, explanation, usualQuantity, onOpen, onSkip }: CardProps) {
  const viewer = useViewer();
  const ref = useRef<HTMLElement>(null);
  const clicked = useRef(false);

  // A skip: the card was on screen, then left it through the top (the visitor scrolled past it).
  useEffect(() => {
    const el = ref.current;
    if (!el || !onSkip || typeof IntersectionObserver === "undefined") return;
    let seen = false;
    let sent = false;
    const observer = new IntersectionObserver(
      (entries) => {
        for (const e of entries) {
          if (e.isIntersecting && e.intersectionRatio >= 0.5) seen = true;
          else if (!e.isIntersecting && seen && !sent && !clicked.current) {
            const top = e.rootBounds?.top ?? 0;
            if (e.boundingClientRect.bottom <= top + 1) {
              sent = true;
              onSkip(item);
            }
          }
        }
      },
      { threshold: [0, 0.5] },
    );
    observer.observe(el);
    return () => observer.disconnect();
  }, [item, onSkip]);

  const list = badges({ item, explanation, usualQuantity, session: viewer.session });
  const open = (e: React.MouseEvent) => {
    if (e.metaKey || e.ctrlKey) return;
    e.preventDefault();
    if (!viewer.live) return;
    clicked.current = true;
    onOpen?.(item);
    navigate({ page: "item", id: item.id });
  };
  return (
    <article
      ref={ref}
      data-testid="product-card"
      data-item-id={item.id}
      className="flex flex-col gap-2 rounded-xl border border-stone-200 bg-white p-3 shadow-sm"
    >
      <a href={href({ page: "item", id: item.id })} onClick={open} className="flex flex-col gap-2" aria-label={item.title}>
        <Tile item={item} />
        <span className="text-xs uppercase tracking-wide text-stone-500">{item.brand ?? " "}</span>
        <span className="line-clamp-2 text-sm font-medium leading-snug">{item.title}</span>
      </a>
      <div className="flex items-center justify-between text-sm">
        <span className="font-semibold">{item.price != null ? `$${item.price.toFixed(2)}` : ""}</span>
        {!item.in_stock && <span className="text-xs text-red-700">Out of stock</span>}
        <Why explanation={explanation} title={item.title} />
      </div>
      <div className="flex flex-wrap gap-1" aria-label="attributes">
        {attributeChips(item).map((c) => (
          <span key={c} className="rounded bg-stone-100 px-1.5 text-[11px] text-stone-600">
            {c}
          </span>
        ))}
      </div>
      {list.length > 0 && (
        <ul className="flex flex-wrap gap-1" aria-label="personalization">
          {list.map((b) => (
            <li key={b.kind + b.label} data-badge={b.kind} className={`rounded-md px-2 py-0.5 text-[11px] font-medium leading-tight ${TONE[b.kind]}`}>
              {b.label}
            </li>
          ))}
        </ul>
      )}
    </article>
  );
}
