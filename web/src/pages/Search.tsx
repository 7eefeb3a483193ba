import { useCallback, useEffect, useMemo, useRef, useState } from "react";
import { search, type Item, type SearchOut } from "../api/client";
import { ProductCard } from "../components/ProductCard";
import { Facets, type Selected } from "../components/Facets";
import { remember } from "../lib/catalog";
import { Latest } from "../lib/latest";
import { usualQuantities, useShop, useViewer } from "../shop";

/** Keystrokes closer together than this are one search (the session records each search). */
export const DEBOUNCE_MS = 150;

function toFilters(selected: Selected): Record<string, unknown> | null {
  const f: Record<string, unknown> = {};
  for (const [k, values] of Object.entries(selected)) {
    if (values.length === 0) continue;
    f[k] = k === "in_stock" ? values[0] === "true" : values;
  }
  return Object.keys(f).length ? f : null;
}

export function SearchPage({ query }: { query: string }) {
  const shop = useShop();
  const viewer = useViewer();
  const [selected, setSelected] = useState<Selected>({});
  const [shown, setShown] = useState<{ query: string; filters: string; out: SearchOut } | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [pending, setPending] = useState(false);
  const latest = useMemo(() => new Latest<SearchOut>(), []);
  const q = query.trim();
  const filters = useMemo(() => toFilters(selected), [selected]);

  useEffect(() => {
    if (!q && !filters) {
      latest.cancel();
      setShown(null);
      setPending(false);
      return;
    }
    setPending(true);
    const timer = setTimeout(() => {
      latest
        .run((signal) =>
          search({ query: q, session_id: viewer.sessionId, filters: filters, limit: 24, explain: true }, signal),
        )
        .then((r) => {
          if (!r) return;
          remember(r.value.results.map((x) => x.item));
          setShown({ query: q, filters: JSON.stringify(filters ?? {}), out: r.value });
          setError(null);
          setPending(false);
          if (viewer.live) shop.refresh();
        })
        .catch((e: unknown) => {
          setError(e instanceof Error ? e.message : String(e));
          setPending(false);
        });
    }, DEBOUNCE_MS);
    return () => clearTimeout(timer);
    // The session changes after each search: re-running on it would loop.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [q, filters, viewer.sessionId, latest]);

  const clickedRef = useRef(shop.tracker);
  clickedRef.current = shop.tracker;
  const onOpen = useCallback((item: Item) => void clickedRef.current.event("click", item.id), []);
  const onSkip = useCallback((item: Item) => clickedRef.current.skip(item.id), []);
  const usual = usualQuantities(viewer.session);

  return (
    <div className="flex flex-col gap-4 md:flex-row">
      {shown && (
        <Facets facets={shown.out.facets} selected={selected} onChange={setSelected} />
      )}
      <section aria-label="Search results" aria-busy={pending} className="@container flex-1">
        <p className="mb-2 text-sm text-stone-500" data-testid="results-for"
          data-query={shown?.query ?? ""}
          data-filters={shown?.filters ?? ""}
        >
          {shown
            ? `${shown.out.total} results for “${shown.query}”${shown.out.personalized ? ", personalized for you" : ""}`
            : pending
              ? "Searching…"
              : "Type to search the shop."}
        </p>
        {error && <p role="alert" className="text-sm text-red-700">{error}</p>}
        <div className={`grid grid-cols-2 gap-3 @lg:grid-cols-3 @2xl:grid-cols-4 ${pending ? "opacity-60" : ""}`}>
          {shown?.out.results.map((r) => (
            <ProductCard
              key={r.item.id}
              item={r.item}
              explanation={r.explanation}
              usualQuantity={usual.get(r.item.id)}
              onOpen={viewer.live ? onOpen : undefined}
              onSkip={viewer.live ? onSkip : undefined}
            />
          ))}
        </div>
      </section>
    </div>
  );
}
