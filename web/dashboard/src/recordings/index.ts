// Recorded sessions in the dashboard: a "Recordings" link in the top bar and the routes
// `#/recordings` (search) and `#/recordings/<sessionId>?t=<seconds>` (player).
// The pages take the place of the dashboard's content while their route is open.
import type { AuthState } from "../api";
import { h } from "../dom";
import { RecordingsApi } from "./api";
import { PlayerPage } from "./player";
import "./recordings.css";
import { SearchPage, searchStateFromHash } from "./search";

const ROUTE = /^#\/recordings(?:\/([^?]+))?(?:\?(.*))?$/;
const PROJECT_STORAGE_KEY = "tandem.projectId";
const DEFAULT_PROJECT_ID = "demo";

// The routing of the last sign-in; a new sign-in replaces it.
let installedRoute: (() => void) | null = null;

/** Adds the Recordings link and routes to `root`, where the dashboard has rendered its top bar. */
export function installRecordings(root: HTMLElement, auth: AuthState): void {
  const api = new RecordingsApi(auth);
  const projectId = (): string =>
    root.querySelector<HTMLInputElement>("#project-id")?.value.trim() ||
    localStorage.getItem(PROJECT_STORAGE_KEY) ||
    DEFAULT_PROJECT_ID;
  const search = new SearchPage(api, projectId);
  const container = h("main", { class: "content recordings", hidden: true });
  const link = h("a", { class: "nav-link", href: "#/recordings", "data-testid": "nav-recordings" }, "Recordings");
  root.querySelector(".top-bar .nav")?.append(link);
  root.querySelector(".app")?.append(container);
  let player: PlayerPage | null = null;

  const route = (): void => {
    const match = ROUTE.exec(location.hash);
    const dashboardContent = root.querySelector<HTMLElement>(".app > .content:not(.recordings)");
    player?.close();
    player = null;
    container.hidden = match === null;
    if (dashboardContent) dashboardContent.hidden = match !== null;
    link.classList.toggle("is-current", match !== null);
    for (const other of root.querySelectorAll(".top-bar .nav-link:not([data-testid=nav-recordings])")) {
      other.classList.toggle("is-current", match === null);
    }
    if (match === null) return;

    const params = new URLSearchParams(match[2] ?? "");
    if (match[1]) {
      player = new PlayerPage(api, decodeURIComponent(match[1]), Number(params.get("t")) || 0);
      container.replaceChildren(player.element);
    } else {
      container.replaceChildren(search.element);
      document.title = "Recordings · Tandem";
      void search.show(searchStateFromHash(match[2] ?? ""));
    }
  };
  if (installedRoute) window.removeEventListener("hashchange", installedRoute);
  installedRoute = route;
  window.addEventListener("hashchange", route);
  route();
}
