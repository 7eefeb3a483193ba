import { useEffect, useState } from "react";
import { item as getItem } from "../api/client";
import { Quantity } from "../components/Quantity";
import { Shelf } from "../components/Shelf";
import { Tile } from "../components/Tile";
import { formatQuantity, prettyKey } from "../lib/badges";
import { remember } from "../lib/catalog";
import { useAsync } from "../lib/useAsync";
import { usualQuantities, useShop, useViewer } from "../shop";

export function ProductPage({ id }: { id: string }) {
  const shop = useShop();
  const viewer = useViewer();
  const { data: item, error } = useAsync(
    async (signal) => {
      const it = await getItem(id, signal);
      remember([it]);
      return it;
    },
    [id],
  );
  const usual = usualQuantities(viewer.session).get(id);
  const [qty, setQty] = useState<number | null>(null);
  const [added, setAdded] = useState<number | null>(null);

  // A product page is a view.
  useEffect(() => {
    if (viewer.live) void shop.tracker.event("view", id);
    setQty(null);
    setAdded(null);
  }, [id, viewer.live, shop.tracker]);

  if (error) return <p role="alert">{error}</p>;
  if (!item) return <p className="text-stone-500">Loading…</p>;
  const quantity = qty ?? (usual ? Math.round(usual) : 1);
  const attrs = Object.entries((item.attributes ?? {}) as Record<string, unknown>);
  return (
    <div>
      <div className="mb-8 grid gap-6 md:grid-cols-2">
        <Tile item={item} size="lg" />
        <div className="flex flex-col gap-3">
          <p className="text-sm uppercase tracking-wide text-stone-500">{item.brand}</p>
          <h1 className="text-2xl font-semibold">{item.title}</h1>
          <p className="text-sm text-stone-500">{item.category}</p>
          <p className="text-xl font-semibold">{item.price != null ? `$${item.price.toFixed(2)}` : ""}</p>
          <ul className="flex flex-wrap gap-1 text-xs">
            {attrs.flatMap(([k, v]) =>
              (Array.isArray(v) ? v : [v]).map((x) => (
                <li key={`${k}:${String(x)}`} className="rounded bg-stone-100 px-2 py-0.5">
                  {prettyKey(k)}: {prettyKey(String(x))}
                </li>
              )),
            )}
          </ul>
          {usual != null && (
            <p data-badge="usual" className="w-fit rounded-full bg-emerald-100 px-2 py-0.5 text-xs font-medium text-emerald-800">
              Your usual: {formatQuantity(usual)}
            </p>
          )}
          {viewer.live && (
            <div className="flex items-center gap-3">
              <Quantity value={quantity} onChange={setQty} label={item.title} />
              <button
                type="button"
                disabled={!item.in_stock}
                className="rounded-lg bg-violet-700 px-4 py-2 font-medium text-white disabled:bg-stone-300"
                onClick={async () => {
                  await shop.tracker.event("add_to_cart", item.id, quantity);
                  setAdded(quantity);
                }}
              >
                {item.in_stock ? "Add to cart" : "Out of stock"}
              </button>
            </div>
          )}
          {added != null && (
            <p role="status" className="text-sm text-emerald-700">
              Added {added} to the cart.
            </p>
          )}
        </div>
      </div>
      <Shelf title="Similar items" surface="similar" query={{ item_id: id, limit: 4 }} />
      <Shelf title="Frequently bought together" surface="bought-together" query={{ item_id: id, limit: 4 }} hideEmpty />
    </div>
  );
}
