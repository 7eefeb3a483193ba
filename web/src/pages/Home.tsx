import { item as getItem } from "../api/client";
import { Shelf } from "../components/Shelf";
import { remember, titleOf } from "../lib/catalog";
import { useAsync } from "../lib/useAsync";
import { useViewer } from "../shop";

/** Shelves from the recommendation surfaces: "For you" (the home pipeline, or the bandit for a
 * cold visitor), "Because you viewed …" the visitor's latest item, and "Trending". */
export function HomePage() {
  const viewer = useViewer();
  const last = viewer.session?.seen[0];
  // After a reload the shop knows the latest item's id only: fetch its title for the shelf.
  const { data: lastTitle } = useAsync(
    async (signal) => {
      if (!last) return null;
      const known = titleOf(last);
      if (known) return known;
      const it = await getItem(last, signal);
      remember([it]);
      return it.title;
    },
    [last],
  );
  return (
    <div>
      {/* Fetched when the page opens, not on every event: a list must not reorder under the
          visitor's eyes (skips arrive while they scroll). */}
      <Shelf title="For you" surface="home" query={{ limit: 8 }} />
      {last && (
        <Shelf
          title={`Because you viewed ${lastTitle ?? titleOf(last) ?? "…"}`}
          surface="similar"
          query={{ item_id: last, limit: 4 }}
          hideEmpty
        />
      )}
      <Shelf title="Trending" surface="home" query={{ sources: "trending", limit: 8 }} />
    </div>
  );
}
