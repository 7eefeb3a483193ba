import type { Facets as FacetsOut } from "../api/client";
import { prettyKey } from "../lib/badges";

export type Selected = Record<string, string[]>;

function Group({
  name,
  label,
  values,
  selected,
  onChange,
}: {
  name: string;
  label: string;
  values: { value: string; count: number }[];
  selected: Selected;
  onChange: (s: Selected) => void;
}) {
  if (values.length === 0) return null;
  const chosen = selected[name] ?? [];
  return (
    <fieldset className="mb-3">
      <legend className="mb-1 text-xs font-semibold uppercase tracking-wide text-stone-500">{label}</legend>
      {values.slice(0, 8).map((v) => {
        const on = chosen.includes(v.value);
        return (
          <label key={v.value} className="flex items-center gap-2 text-sm">
            <input
              type="checkbox"
              checked={on}
              onChange={() =>
                onChange({ ...selected, [name]: on ? chosen.filter((x) => x !== v.value) : [...chosen, v.value] })
              }
            />
            <span className="truncate">{prettyKey(v.value)}</span>
            <span className="ml-auto text-xs text-stone-400">{v.count}</span>
          </label>
        );
      })}
    </fieldset>
  );
}

/** The search response's facet counts as filters. */
export function Facets({ facets, selected, onChange }: { facets: FacetsOut; selected: Selected; onChange: (s: Selected) => void }) {
  const attrs = Object.entries(facets.attributes ?? {}) as [string, { value: string; count: number }[]][];
  return (
    <details
      aria-label="Filters"
      className="w-full shrink-0 md:w-52"
      open={typeof window === "undefined" || window.innerWidth >= 768}
    >
      <summary className="mb-2 cursor-pointer text-sm font-semibold">Filters</summary>
      <Group name="brand" label="Brand" values={facets.brand} selected={selected} onChange={onChange} />
      <Group
        name="category"
        label="Category"
        values={facets.category.filter((c) => c.value.includes(">"))}
        selected={selected}
        onChange={onChange}
      />
      {attrs
        .filter(([k]) => k !== "size" && k !== "pack")
        .map(([k, values]) => (
          <Group key={k} name={k} label={prettyKey(k)} values={values} selected={selected} onChange={onChange} />
        ))}
    </details>
  );
}
