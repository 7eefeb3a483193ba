import { useState } from "react";
import type { Affinity, Session } from "../api/client";
import { prettyKey } from "../lib/badges";
import { titleOf } from "../lib/catalog";

const KINDS: { key: keyof Session["affinities"]; label: string }[] = [
  { key: "brand", label: "Brands" },
  { key: "category", label: "Categories" },
  { key: "attribute", label: "Attributes" },
  { key: "intent", label: "Search intents" },
];

function reasonText(a: Affinity): string[] {
  return a.reasons.slice(0, 3).map((r) => {
    const what = r.item_id ? (titleOf(r.item_id) ?? r.item_id) : r.query ? `“${r.query}”` : "";
    const sign = r.delta >= 0 ? "+" : "";
    return `${r.event.replace(/_/g, " ")} ${what} ${sign}${r.delta.toFixed(2)} (now ${r.decayed.toFixed(2)})`;
  });
}

function Bars({ title, list }: { title: string; list: Affinity[] }) {
  const [open, setOpen] = useState<string | null>(null);
  const top = [...list].sort((a, b) => b.score - a.score).slice(0, 5);
  const max = Math.max(...top.map((a) => Math.abs(a.score)), 1e-9);
  return (
    <div>
      <h3 className="mb-1 text-xs font-semibold uppercase tracking-wide text-stone-500">{title}</h3>
      {top.length === 0 ? (
        <p className="text-xs text-stone-400">—</p>
      ) : (
        <ul className="space-y-1">
          {top.map((a) => (
            <li key={a.key} data-affinity={a.key}>
              <button
                type="button"
                className="w-full text-left"
                aria-expanded={open === a.key}
                aria-label={`${prettyKey(a.key)}: ${a.score.toFixed(2)}`}
                onClick={() => setOpen(open === a.key ? null : a.key)}
              >
                <div className="flex justify-between text-xs">
                  <span className="truncate">{prettyKey(a.key)}</span>
                  <span className="tabular-nums text-stone-500">{a.score.toFixed(2)}</span>
                </div>
                <div className="h-1.5 rounded bg-stone-100">
                  <div
                    className={`h-1.5 rounded transition-all duration-500 ${a.score >= 0 ? "bg-violet-500" : "bg-red-400"}`}
                    style={{ width: `${Math.round((Math.abs(a.score) / max) * 100)}%` }}
                  />
                </div>
              </button>
              {open === a.key && (
                <ul className="mt-1 space-y-0.5 pl-2 text-[11px] text-stone-500">
                  {reasonText(a).map((t, i) => (
                    <li key={i}>{t}</li>
                  ))}
                </ul>
              )}
            </li>
          ))}
        </ul>
      )}
    </div>
  );
}

/** The visitor's live session: top affinities as bars that move after each action, their
 * reasons, skipped items, and "forget me". */
export function SessionPanel({ session, onForget }: { session: Session | null; onForget: () => void }) {
  return (
    <aside aria-label="Your session" className="flex flex-col gap-4 rounded-xl border border-stone-200 bg-white p-4">
      <div className="flex items-center justify-between">
        <h2 className="font-semibold">Your session</h2>
        <button
          type="button"
          onClick={onForget}
          className="rounded border border-red-300 px-2 py-1 text-xs text-red-700 hover:bg-red-50"
        >
          Forget me
        </button>
      </div>
      {!session || session.event_count === 0 ? (
        <p data-testid="session-empty" className="text-sm text-stone-500">
          A fresh visitor: nothing known yet. Click, search or add to the cart and watch this panel.
        </p>
      ) : (
        <>
          <p className="text-xs text-stone-500">{session.event_count} events so far. Tap a bar for its reasons.</p>
          {KINDS.map((k) => (
            <Bars key={k.key} title={k.label} list={session.affinities[k.key]} />
          ))}
          {session.skipped.length > 0 && (
            <div>
              <h3 className="mb-1 text-xs font-semibold uppercase tracking-wide text-stone-500">Scrolled past</h3>
              <ul className="text-xs text-stone-600">
                {session.skipped.slice(0, 5).map((s) => (
                  <li key={s.item_id}>
                    {titleOf(s.item_id) ?? s.item_id} ×{s.count}
                  </li>
                ))}
              </ul>
            </div>
          )}
        </>
      )}
    </aside>
  );
}
