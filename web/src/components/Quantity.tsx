/** A quantity selector; `usual` pre-fills it and is said aloud. */
export function Quantity({ value, onChange, label }: { value: number; onChange: (n: number) => void; label: string }) {
  return (
    <div className="inline-flex items-center rounded-lg border border-stone-300">
      <button type="button" aria-label={`Fewer ${label}`} className="px-3 py-1" onClick={() => onChange(Math.max(1, value - 1))}>
        −
      </button>
      <input
        aria-label={`Quantity of ${label}`}
        className="w-12 border-x border-stone-300 py-1 text-center"
        inputMode="numeric"
        value={value}
        onChange={(e) => {
          const n = Number.parseInt(e.target.value, 10);
          if (Number.isFinite(n)) onChange(Math.min(99, Math.max(1, n)));
        }}
      />
      <button type="button" aria-label={`More ${label}`} className="px-3 py-1" onClick={() => onChange(Math.min(99, value + 1))}>
        +
      </button>
    </div>
  );
}
