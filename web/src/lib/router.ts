// A tiny client-side router: four pages, the History API, no dependency.
import { useEffect, useState } from "react";

export type Route =
  | { page: "home" }
  | { page: "search"; query: string }
  | { page: "item"; id: string }
  | { page: "cart" };

export function parse(loc: { pathname: string; search: string }): Route {
  const path = loc.pathname;
  if (path === "/search") return { page: "search", query: new URLSearchParams(loc.search).get("q") ?? "" };
  if (path.startsWith("/item/")) return { page: "item", id: decodeURIComponent(path.slice(6)) };
  if (path === "/cart") return { page: "cart" };
  return { page: "home" };
}

export function href(route: Route): string {
  switch (route.page) {
    case "home":
      return "/";
    case "search":
      return `/search?q=${encodeURIComponent(route.query)}`;
    case "item":
      return `/item/${encodeURIComponent(route.id)}`;
    case "cart":
      return "/cart";
  }
}

const EVENT = "attune:navigate";

/** Goes to `route`; `replace` keeps the history entry (typing in the search box). */
export function navigate(route: Route, replace = false): void {
  const url = href(route);
  if (replace) history.replaceState(null, "", url);
  else history.pushState(null, "", url);
  window.dispatchEvent(new Event(EVENT));
  if (!replace) window.scrollTo(0, 0);
}

export function useRoute(): Route {
  const [route, setRoute] = useState(() => parse(window.location));
  useEffect(() => {
    const update = () => setRoute(parse(window.location));
    window.addEventListener("popstate", update);
    window.addEventListener(EVENT, update);
    return () => {
      window.removeEventListener("popstate", update);
      window.removeEventListener(EVENT, update);
    };
  }, []);
  return route;
}
