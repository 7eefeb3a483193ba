// A drawn picture for a product: the catalogs carry no images, so each tile shows the item's
// category, tinted by its colour attribute when it has one (fashion) or by its category.
import type { Item } from "../api/client";

const NAMED: Record<string, string> = {
  black: "#1c1917", white: "#f5f5f4", grey: "#9ca3af", gray: "#9ca3af", navy_blue: "#1e3a8a", navy: "#1e3a8a",
  blue: "#3b82f6", red: "#dc2626", green: "#16a34a", yellow: "#facc15", pink: "#f472b6", purple: "#9333ea",
  brown: "#92400e", beige: "#e7d8b9", orange: "#f97316", maroon: "#7f1d1d", olive: "#65a30d", cream: "#fef3c7",
  silver: "#cbd5e1", gold: "#ca8a04", khaki: "#bdb76b", teal: "#0d9488", magenta: "#c026d3", lavender: "#c4b5fd",
  charcoal: "#374151", off_white: "#fafaf9", multi: "#a78bfa", peach: "#fdba74", rust: "#b45309", mustard: "#ca8a04",
  turquoise_blue: "#06b6d4", sea_green: "#2e8b57", tan: "#d2b48c", skin: "#f1c27d", mauve: "#c084fc", coffee_brown: "#6f4e37",
};

function hue(text: string): number {
  let h = 0;
  for (let i = 0; i < text.length; i++) h = (h * 31 + text.charCodeAt(i)) % 360;
  return h;
}

function colourOf(item: Item): string | null {
  const attrs = (item.attributes ?? {}) as Record<string, unknown>;
  for (const key of ["colour", "color", "base_colour", "basecolour"]) {
    const v = attrs[key];
    const s = Array.isArray(v) ? v[0] : v;
    if (typeof s === "string") return NAMED[s.toLowerCase().replace(/\s+/g, "_")] ?? null;
  }
  return null;
}

export function Tile({ item, size = "md" }: { item: Item; size?: "md" | "lg" }) {
  const levels = (item.category ?? "").split(">").map((s) => s.trim()).filter(Boolean);
  const leaf = levels[levels.length - 1] ?? "Item";
  const colour = colourOf(item);
  const h = hue(levels[0] ?? leaf);
  const bg = colour ?? `hsl(${h} 55% 88%)`;
  const fg = colour ? "rgba(255,255,255,0.92)" : `hsl(${h} 45% 30%)`;
  const initials = leaf
    .split(/[\s&]+/)
    .filter(Boolean)
    .slice(0, 2)
    .map((w) => w[0]?.toUpperCase())
    .join("");
  return (
    <svg
      role="img"
      aria-label={`${leaf} tile`}
      viewBox="0 0 120 90"
      className={size === "lg" ? "w-full max-w-sm rounded-xl" : "w-full rounded-lg"}
    >
      <rect width="120" height="90" rx="8" fill={bg} />
      <circle cx="96" cy="18" r="26" fill={fg} opacity="0.12" />
      <text x="14" y="52" fontSize="30" fontWeight="700" fill={fg} style={{ mixBlendMode: colour ? "difference" : "normal" }}>
        {initials}
      </text>
      <text x="14" y="76" fontSize="10" fill={fg} opacity="0.85">
        {leaf.length > 20 ? `${leaf.slice(0, 19)}…` : leaf}
      </text>
    </svg>
  );
}
