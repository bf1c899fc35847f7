// Entry point of the agents' dashboard: the sign-in page, then the dashboard.
import "@rrweb/replay/dist/style.css";
import "./dashboard.css";
import { installAdmin } from "./admin";
import { type AuthState, loadAuth } from "./api";
import { DashboardApp } from "./app";
import { createLoginPage } from "./login";
import { installRecordings } from "./recordings";

function openDashboard(root: HTMLElement, auth: AuthState): void {
  new DashboardApp(root, auth, (reason) => showLogin(root, reason));
  installRecordings(root, auth);
  installAdmin(root, auth);
}

function showLogin(root: HTMLElement, message: string): void {
  root.replaceChildren(createLoginPage((auth) => openDashboard(root, auth), message));
  document.title = "Sign in · Tandem";
}

function start(): void {
  const root = document.getElementById("app");
  if (root === null) throw new Error("The dashboard needs an element with id \"app\" in index.html.");

  const auth = loadAuth();
  if (auth === null) {
    showLogin(root, "");
  } else {
    openDashboard(root, auth);
  }
}

start();
