import { useState } from "react";
import { Shelf } from "../components/Shelf";
import { item as getItem } from "../api/client";
import { remember, titleOf } from "../lib/catalog";
import { useAsync } from "../lib/useAsync";
import { usualQuantities, useShop, useViewer } from "../shop";
import { formatQuantity } from "../lib/badges";

/** The cart as the session holds it (so it survives a reload), cart recommendations, checkout. */
export function CartPage() {
  const shop = useShop();
  const viewer = useViewer();
  const [done, setDone] = useState(false);
  const cart = viewer.session?.cart ?? [];
  const usual = usualQuantities(viewer.session);
  const key = cart.map((l) => `${l.item_id}:${l.quantity}`).join(",");
  // After a reload the shop knows only the ids: fetch the titles of lines it has not shown yet.
  useAsync(
    async (signal) => {
      const missing = cart.filter((l) => !titleOf(l.item_id));
      remember(await Promise.all(missing.map((l) => getItem(l.item_id, signal))));
      return missing.length;
    },
    [key],
  );
  return (
    <div>
      <h1 className="mb-4 text-2xl font-semibold">Your cart</h1>
      {cart.length === 0 ? (
        <p className="mb-6 text-stone-500">{done ? "Thank you for your order!" : "The cart is empty."}</p>
      ) : (
        <ul aria-label="Cart" className="mb-6 divide-y divide-stone-200 rounded-xl border border-stone-200 bg-white">
          {cart.map((line) => (
            <li key={line.item_id} data-cart-item={line.item_id} className="flex items-center gap-3 p-3">
              <span className="flex-1 text-sm">{titleOf(line.item_id) ?? line.item_id}</span>
              <span className="text-sm tabular-nums" data-testid="cart-quantity">
                × {line.quantity}
              </span>
              {usual.has(line.item_id) && (
                <span data-badge="usual" className="rounded-full bg-emerald-100 px-2 text-[11px] text-emerald-800">
                  Your usual: {formatQuantity(usual.get(line.item_id) ?? 0)}
                </span>
              )}
              {viewer.live && (
                <button
                  type="button"
                  aria-label={`Remove ${titleOf(line.item_id) ?? line.item_id}`}
                  className="text-xs text-red-700"
                  onClick={() => void shop.tracker.event("remove_from_cart", line.item_id, line.quantity)}
                >
                  Remove
                </button>
              )}
            </li>
          ))}
        </ul>
      )}
      {viewer.live && cart.length > 0 && (
        <button
          type="button"
          className="mb-8 rounded-lg bg-emerald-700 px-4 py-2 font-medium text-white"
          onClick={async () => {
            await shop.tracker.events(cart.map((l) => ({ type: "purchase", itemId: l.item_id, quantity: l.quantity })));
            setDone(true);
          }}
        >
          Buy now
        </button>
      )}
      <Shelf title="Goes well with your cart" surface="cart" query={{ limit: 8 }} refreshKey={key} hideEmpty={cart.length === 0} />
    </div>
  );
}
