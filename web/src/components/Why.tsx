import { useId, useState } from "react";
import type { Explanation, RecExplanation } from "../api/client";
import { reasons } from "../lib/badges";

/** "Why?" on hover or tap: every source, boost and rule behind the card, from the explanation. */
export function Why({ explanation, title }: { explanation?: Explanation | RecExplanation | null; title: string }) {
  // Hover shows it while the pointer stays; a tap (or click) pins it until the next tap.
  const [hovered, setHovered] = useState(false);
  const [pinned, setPinned] = useState(false);
  const open = hovered || pinned;
  const id = useId();
  return (
    <span className="relative inline-block" onMouseEnter={() => setHovered(true)} onMouseLeave={() => setHovered(false)}>
      <button
        type="button"
        className="rounded-full border border-stone-300 px-2 text-xs text-stone-600 hover:bg-stone-100"
        aria-label={`Why is ${title} here?`}
        aria-expanded={open}
        aria-controls={id}
        onClick={(e) => {
          e.stopPropagation();
          e.preventDefault();
          setPinned((p) => !p);
        }}
      >
        why?
      </button>
      {open && (
        <div
          id={id}
          role="tooltip"
          className="absolute bottom-7 left-0 z-20 w-72 rounded-lg border border-stone-200 bg-white p-3 text-xs shadow-lg"
        >
          <ul className="space-y-1">
            {reasons(explanation).map((line, i) => (
              <li key={i}>{line}</li>
            ))}
          </ul>
        </div>
      )}
    </span>
  );
}
