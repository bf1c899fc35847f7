// Entry point of the agents' dashboard: the sign-in page, then the dashboard.
import "@rrweb/replay/dist/style.css";
import "./dashboard.css";
import { loadAuth } from "./api";
import { DashboardApp } from "./app";
import { createLoginPage } from "./login";

function showLogin(root: HTMLElement, message: string): void {
  root.replaceChildren(createLoginPage((auth) => new DashboardApp(root, auth, (reason) => showLogin(root, reason)), message));
  document.title = "Sign in · Tandem";
}

function start(): void {
  const root = document.getElementById("app");
  if (root === null) throw new Error("The dashboard needs an element with id \"app\" in index.html.");

  const auth = loadAuth();
  if (auth === null) {
    showLogin(root, "");
  } else {
    new DashboardApp(root, auth, (reason) => showLogin(root, reason));
  }
}

start();
