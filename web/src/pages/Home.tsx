import { Shelf } from "../components/Shelf";
import { titleOf } from "../lib/catalog";
import { useViewer } from "../shop";

/** Shelves from the recommendation surfaces: "For you" (the home pipeline, or the bandit for a
 * cold visitor), "Trending", and "Because you viewed …" the visitor's latest item. */
export function HomePage() {
  const viewer = useViewer();
  const last = viewer.session?.seen[0];
  return (
    <div>
      {/* Fetched when the page opens, not on every event: a list must not reorder under the
          visitor's eyes (skips arrive while they scroll). */}
      <Shelf title="For you" surface="home" query={{ limit: 8 }} />
      {last && (
        <Shelf
          title={`Because you viewed ${titleOf(last) ?? "an item"}`}
          surface="similar"
          query={{ item_id: last, limit: 4 }}
          hideEmpty
        />
      )}
      <Shelf title="Trending" surface="home" query={{ sources: "trending", limit: 8 }} />
    </div>
  );
}
