import { useCallback, useEffect, useRef } from "react";
import { recommendations, type Item, type RecQuery, type Surface } from "../api/client";
import { remember } from "../lib/catalog";
import { useAsync } from "../lib/useAsync";
import { usualQuantities, useShop, useViewer } from "../shop";
import { ProductCard } from "./ProductCard";

export interface ShelfProps {
  title: string;
  surface: Surface;
  query?: Omit<RecQuery, "session_id">;
  /** Refetch when this changes (e.g. the cart). */
  refreshKey?: unknown;
  /** Hide the shelf when it comes back empty. */
  hideEmpty?: boolean;
}

const STRATEGY: Record<string, string> = {
  bandit: "Picked for new visitors: the bandit explores trending and new items",
  pipeline: "",
};

/** One recommendation surface as a row of cards; what it showed and what was clicked goes to
 * `POST /v1/feedback` when the row goes away. */
export function Shelf({ title, surface, query, refreshKey, hideEmpty }: ShelfProps) {
  const shop = useShop();
  const viewer = useViewer();
  const { data, error, loading } = useAsync(
    async (signal) => {
      const r = await recommendations(surface, { ...query, session_id: viewer.sessionId }, signal);
      remember(r.items.map((x) => x.item));
      return r;
    },
    [surface, query?.item_id, query?.sources, query?.limit, viewer.sessionId, refreshKey],
  );

  // One impression per list shown: sent when the list is replaced or the shelf unmounts.
  const clicked = useRef(new Set<string>());
  useEffect(() => {
    if (!data || !viewer.live || data.items.length === 0) return;
    const shown = data.items.map((x) => x.item.id);
    clicked.current = new Set();
    const tracker = shop.tracker;
    return () => tracker.feedback(surface, shown, [...clicked.current], true);
  }, [data, viewer.live, surface, shop.tracker]);

  const onOpen = useCallback(
    (item: Item) => {
      clicked.current.add(item.id);
      void shop.tracker.event("recommendation_click", item.id);
    },
    [shop.tracker],
  );
  const onSkip = useCallback((item: Item) => shop.tracker.skip(item.id), [shop.tracker]);

  if (hideEmpty && data && data.items.length === 0) return null;
  const usual = usualQuantities(viewer.session);
  const note = data ? (STRATEGY[data.strategy] ?? data.strategy) : "";
  return (
    <section aria-label={title} data-surface={surface} data-strategy={data?.strategy} className="mb-8">
      <div className="mb-2 flex flex-wrap items-baseline gap-x-3">
        <h2 className="text-lg font-semibold">{title}</h2>
        {note && <p className="text-xs text-amber-700">{note}</p>}
        {data?.personalized && <p className="text-xs text-violet-700">personalized</p>}
        {loading && <p className="text-xs text-stone-400">loading…</p>}
      </div>
      {error && <p role="alert" className="text-sm text-red-700">{error}</p>}
      {data && data.items.length === 0 && <p className="text-sm text-stone-500">Nothing to show yet.</p>}
      <div className="grid grid-cols-2 gap-3 @lg:grid-cols-3 @2xl:grid-cols-4">
        {data?.items.map((r) => (
          <ProductCard
            key={r.item.id}
            item={r.item}
            explanation={r.explanation}
            usualQuantity={r.usual_quantity ?? usual.get(r.item.id)}
            onOpen={viewer.live ? onOpen : undefined}
            onSkip={viewer.live ? onSkip : undefined}
          />
        ))}
      </div>
    </section>
  );
}
