// The typed API client. Every type comes from the checked-in `openapi.json` (generated into
// `schema.d.ts` by `npm run gen`), so an API change that breaks the shop fails `npm run build`.
import createClient from "openapi-fetch";
import type { components, paths } from "./schema";

export type Schemas = components["schemas"];
export type Item = Schemas["ItemDto"];
export type SearchIn = Schemas["SearchIn"];
export type SearchOut = Schemas["SearchOut"];
export type SearchResult = Schemas["SearchResultOut"];
export type Explanation = Schemas["ExplanationOut"];
export type Recommendations = Schemas["RecommendationsOut"];
export type Recommended = Schemas["RecommendedOut"];
export type RecExplanation = Schemas["RecExplanationOut"];
export type Boost = Schemas["BoostOut"];
export type Session = Schemas["SessionOut"];
export type Affinity = Schemas["AffinityOut"];
export type EventIn = Schemas["EventIn"];
export type EventType = Schemas["EventType"];
export type Facets = Schemas["FacetsOut"];
export type Surface = "home" | "similar" | "cart" | "bought-together" | "next";

/** An API error as the server words it: `{"error": {"code", "message", "field"}}`. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly field?: string | null,
  ) {
    super(message);
  }
}

export const api = createClient<paths>({ baseUrl: "" });

function fail(status: number, error: unknown): never {
  const body = (error ?? {}) as { error?: { code?: string; message?: string; field?: string | null } };
  throw new ApiError(
    status,
    body.error?.code ?? "http_error",
    body.error?.message ?? `HTTP ${status}`,
    body.error?.field,
  );
}

export async function search(body: SearchIn, signal?: AbortSignal): Promise<SearchOut> {
  const { data, error, response } = await api.POST("/v1/search", { body, signal });
  if (data === undefined) fail(response.status, error);
  return data;
}

export interface RecQuery {
  session_id?: string | null;
  item_id?: string;
  limit?: number;
  sources?: string;
}

export async function recommendations(
  surface: Surface,
  q: RecQuery,
  signal?: AbortSignal,
): Promise<Recommendations> {
  const { data, error, response } = await api.GET("/v1/recommendations/{surface}", {
    params: {
      path: { surface },
      query: {
        session_id: q.session_id ?? undefined,
        item_id: q.item_id,
        limit: q.limit ?? 8,
        sources: q.sources,
        explain: true,
      },
    },
    signal,
  });
  if (data === undefined) fail(response.status, error);
  return data;
}

export async function item(id: string, signal?: AbortSignal): Promise<Item> {
  const { data, error, response } = await api.GET("/v1/items/{id}", {
    params: { path: { id } },
    signal,
  });
  if (data === undefined) fail(response.status, error);
  return data;
}

/** The session, or null when the server does not know it (never seen, expired or forgotten). */
export async function session(id: string, signal?: AbortSignal): Promise<Session | null> {
  const { data, error, response } = await api.GET("/v1/sessions/{session_id}", {
    params: { path: { session_id: id } },
    signal,
  });
  if (response.status === 404) return null;
  if (data === undefined) fail(response.status, error);
  return data;
}

export async function forget(id: string): Promise<void> {
  const { error, response } = await api.DELETE("/v1/sessions/{session_id}", {
    params: { path: { session_id: id } },
  });
  if (!response.ok && response.status !== 404) fail(response.status, error);
}

export async function sendEvents(events: EventIn[], keepalive = false): Promise<void> {
  if (events.length === 0) return;
  const { error, response } = await api.POST("/v1/events", { body: { events }, keepalive });
  if (!response.ok) fail(response.status, error);
}

export async function sendFeedback(
  surface: Surface,
  sessionId: string | null,
  shown: string[],
  clicked: string[],
  keepalive = false,
): Promise<void> {
  if (shown.length === 0) return;
  const { error, response } = await api.POST("/v1/feedback", {
    body: { surface, session_id: sessionId, shown: shown.slice(0, 100), clicked },
    keepalive,
  });
  if (!response.ok) fail(response.status, error);
}
