import { render, screen } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { describe, expect, it, vi } from "vitest";
import type { Session } from "../api/client";
import { SessionPanel } from "./SessionPanel";

const session = {
  session_id: "s",
  created_at: "",
  updated_at: "",
  expires_at: "",
  event_count: 3,
  unknown_item_events: 0,
  affinities: {
    brand: [{ key: "Oatly", score: 0.9, reasons: [{ event: "click", item_id: "x", at: "", delta: 0.5, decayed: 0.45 }] }],
    category: [],
    attribute: [
      { key: "diet:plant_based", score: 0.6, reasons: [] },
      { key: "flavor:vanilla", score: 0.3, reasons: [] },
    ],
    intent: [],
  },
  seen: [],
  skipped: [{ item_id: "chips", count: 3 }],
  cart: [],
  quantities: [],
} as Session;

describe("SessionPanel", () => {
  it("draws the top affinities as bars, widest for the strongest", () => {
    render(<SessionPanel session={session} onForget={() => {}} />);
    const plant = screen.getByRole("button", { name: "plant based: 0.60" });
    const vanilla = screen.getByRole("button", { name: "vanilla: 0.30" });
    const width = (b: HTMLElement) => (b.querySelector("[style]") as HTMLElement).style.width;
    expect(width(plant)).toBe("100%");
    expect(width(vanilla)).toBe("50%");
    expect(screen.getByText("chips ×3")).toBeTruthy();
  });

  it("shows an affinity's reasons on tap", async () => {
    render(<SessionPanel session={session} onForget={() => {}} />);
    await userEvent.click(screen.getByRole("button", { name: "Oatly: 0.90" }));
    expect(screen.getByText(/click x \+0\.50 \(now 0\.45\)/)).toBeTruthy();
  });

  it("is empty for a fresh visitor and forgets on request", async () => {
    const onForget = vi.fn();
    render(<SessionPanel session={null} onForget={onForget} />);
    expect(screen.getByTestId("session-empty")).toBeTruthy();
    await userEvent.click(screen.getByRole("button", { name: "Forget me" }));
    expect(onForget).toHaveBeenCalled();
  });
});
