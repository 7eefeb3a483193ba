// The shop's shared state: who the visitor is, their live session as the API reports it, and the
// tracker that sends what they do. A pane of the side-by-side view can be a fresh anonymous
// visitor instead: it reads the same pages without a session and sends nothing.
import { createContext, useCallback, useContext, useEffect, useMemo, useRef, useState, type ReactNode } from "react";
import * as client from "./api/client";
import type { Session } from "./api/client";
import { currentSessionId, isActive, markActive, newSessionId } from "./lib/visitor";
import { Tracker } from "./lib/tracker";

export interface Shop {
  sessionId: string;
  session: Session | null;
  /** Bumped after every applied event. */
  version: number;
  tracker: Tracker;
  refresh: () => void;
  forgetMe: () => Promise<void>;
  error: string | null;
}

const ShopContext = createContext<Shop | null>(null);

export function ShopProvider({ children }: { children: ReactNode }) {
  const [sessionId, setSessionId] = useState(currentSessionId);
  const [session, setSession] = useState<Session | null>(null);
  const [version, setVersion] = useState(0);
  const [error, setError] = useState<string | null>(null);
  const idRef = useRef(sessionId);
  idRef.current = sessionId;

  const refresh = useCallback(() => {
    markActive(idRef.current);
    setVersion((v) => v + 1);
  }, []);
  const tracker = useMemo(
    () =>
      new Tracker(
        () => idRef.current,
        refresh,
        (e) => setError(e instanceof Error ? e.message : String(e)),
      ),
    [refresh],
  );

  useEffect(() => {
    if (!isActive(sessionId)) {
      setSession(null);
      return;
    }
    const controller = new AbortController();
    client
      .session(sessionId, controller.signal)
      .then((s) => {
        setSession(s);
        setError(null);
      })
      .catch((e: unknown) => {
        if (!controller.signal.aborted) setError(e instanceof Error ? e.message : String(e));
      });
    return () => controller.abort();
  }, [sessionId, version]);

  useEffect(() => {
    const flush = () => void tracker.flush(true);
    window.addEventListener("pagehide", flush);
    return () => window.removeEventListener("pagehide", flush);
  }, [tracker]);

  const forgetMe = useCallback(async () => {
    tracker.reset();
    await client.forget(idRef.current);
    const id = newSessionId();
    idRef.current = id;
    setSession(null);
    setSessionId(id);
    setVersion((v) => v + 1);
  }, [tracker]);

  const value = useMemo(
    () => ({ sessionId, session, version, tracker, refresh, forgetMe, error }),
    [sessionId, session, version, tracker, refresh, forgetMe, error],
  );
  return <ShopContext.Provider value={value}>{children}</ShopContext.Provider>;
}

export function useShop(): Shop {
  const shop = useContext(ShopContext);
  if (!shop) throw new Error("useShop outside ShopProvider");
  return shop;
}

/** Who a pane shows the shop to: the visitor (live, tracked) or a fresh anonymous one. */
export interface Viewer {
  live: boolean;
  sessionId: string | null;
  session: Session | null;
}

const ViewerContext = createContext<Viewer | null>(null);

export function ViewerProvider({ fresh, children }: { fresh: boolean; children: ReactNode }) {
  const shop = useShop();
  const viewer = useMemo<Viewer>(
    () => (fresh ? { live: false, sessionId: null, session: null } : { live: true, sessionId: shop.sessionId, session: shop.session }),
    [fresh, shop.sessionId, shop.session],
  );
  return <ViewerContext.Provider value={viewer}>{children}</ViewerContext.Provider>;
}

/** Provides a viewer directly (component tests). */
export const ViewerContextForTests = ViewerContext.Provider;

export function useViewer(): Viewer {
  const v = useContext(ViewerContext);
  if (!v) throw new Error("useViewer outside ViewerProvider");
  return v;
}

/** The usual quantity of each item in the session. */
export function usualQuantities(session: Session | null): Map<string, number> {
  return new Map((session?.quantities ?? []).map((q) => [q.item_id, q.usual_quantity]));
}
