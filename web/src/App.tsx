import { useEffect, useState } from "react";
import { SessionPanel } from "./components/SessionPanel";
import { navigate, useRoute, type Route } from "./lib/router";
import { CartPage } from "./pages/Cart";
import { HomePage } from "./pages/Home";
import { ProductPage } from "./pages/Product";
import { SearchPage } from "./pages/Search";
import { useShop, ViewerProvider } from "./shop";

function Page({ route }: { route: Route }) {
  switch (route.page) {
    case "home":
      return <HomePage />;
    case "search":
      return <SearchPage query={route.query} />;
    case "item":
      return <ProductPage key={route.id} id={route.id} />;
    case "cart":
      return <CartPage />;
  }
}

function SearchBox({ route }: { route: Route }) {
  const [text, setText] = useState(route.page === "search" ? route.query : "");
  useEffect(() => {
    if (route.page !== "search") setText("");
  }, [route.page]);
  return (
    <form
      role="search"
      className="flex-1"
      onSubmit={(e) => {
        e.preventDefault();
        navigate({ page: "search", query: text });
      }}
    >
      <input
        type="search"
        aria-label="Search the shop"
        placeholder="Search: oat milk, yogurt, chips…"
        className="w-full rounded-lg border border-stone-300 px-3 py-2"
        value={text}
        onChange={(e) => {
          setText(e.target.value);
          // Search as you type: every keystroke updates the results page (debounced there).
          navigate({ page: "search", query: e.target.value }, route.page === "search");
        }}
      />
    </form>
  );
}

export function App() {
  const shop = useShop();
  const route = useRoute();
  const [compare, setCompare] = useState(false);
  const [panel, setPanel] = useState(true);
  const cartCount = (shop.session?.cart ?? []).reduce((n, l) => n + l.quantity, 0);
  return (
    <div className="mx-auto max-w-7xl p-3 sm:p-4">
      <header className="mb-4 flex flex-wrap items-center gap-3">
        <a
          href="/"
          className="text-xl font-bold text-violet-800"
          onClick={(e) => {
            e.preventDefault();
            navigate({ page: "home" });
          }}
        >
          Attune Market
        </a>
        <SearchBox route={route} />
        <a
          href="/cart"
          className="rounded-lg border border-stone-300 px-3 py-2 text-sm"
          aria-label={`Cart, ${cartCount} items`}
          onClick={(e) => {
            e.preventDefault();
            navigate({ page: "cart" });
          }}
        >
          Cart <span data-testid="cart-count">{cartCount}</span>
        </a>
        <label className="flex items-center gap-2 text-sm">
          <input type="checkbox" checked={compare} onChange={(e) => setCompare(e.target.checked)} />
          Compare with a fresh visitor
        </label>
        <button
          type="button"
          className="rounded-lg border border-stone-300 px-3 py-2 text-sm lg:hidden"
          aria-expanded={panel}
          onClick={() => setPanel((p) => !p)}
        >
          Your session
        </button>
      </header>
      {shop.error && (
        <p role="alert" className="mb-3 rounded bg-red-50 p-2 text-sm text-red-800">
          {shop.error}
        </p>
      )}
      <div className="flex flex-col gap-4 lg:flex-row">
        <main className={`grid flex-1 gap-4 ${compare ? "md:grid-cols-2" : ""}`}>
          <div data-pane="you" className="@container">
            {compare && <h2 className="mb-2 text-sm font-semibold text-violet-700">You</h2>}
            <ViewerProvider fresh={false}>
              <Page route={route} />
            </ViewerProvider>
          </div>
          {compare && (
            <div data-pane="fresh" className="@container border-t border-dashed border-stone-300 pt-4 md:border-l md:border-t-0 md:pl-4 md:pt-0">
              <h2 className="mb-2 text-sm font-semibold text-stone-600">A fresh visitor (read-only)</h2>
              <ViewerProvider fresh>
                <Page route={route} />
              </ViewerProvider>
            </div>
          )}
        </main>
        {panel && (
          <div className="w-full shrink-0 lg:sticky lg:top-4 lg:w-72 lg:self-start">
            <SessionPanel
              session={shop.session}
              onForget={() => {
                void shop.forgetMe().then(() => navigate({ page: "home" }));
              }}
            />
          </div>
        )}
      </div>
      <footer className="mt-10 text-center text-xs text-stone-400">
        Attune demo shop. Every click, add and skip goes to <code>/v1/events</code>; the API is documented at{" "}
        <a className="underline" href="/openapi.json">
          /openapi.json
        </a>
        .
      </footer>
    </div>
  );
}
