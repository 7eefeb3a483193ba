import { StrictMode } from "react";
import { createRoot } from "react-dom/client";
import { App } from "./App";
import { ShopProvider } from "./shop";
import "./index.css";

const root = document.getElementById("root");
if (root) {
  createRoot(root).render(
    <StrictMode>
      <ShopProvider>
        <App />
      </ShopProvider>
    </StrictMode>,
  );
}
