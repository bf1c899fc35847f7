// The search bar, filter menus and sort order above the live list. The search
// uses the syntax of recorded-session search (`user:alice browser:chrome
// meta.plan:pro`). Each filter menu shows how many live sessions have each
// value, and choosing one writes or replaces one `field:value` term.
import { h } from "./dom";
import { formatCountry } from "./format";
import type { Facets, ListQuery } from "./protocol";

/** Menus always shown, in this order, before one menu per metadata key. */
const FIELD_MENUS: Array<[string, string]> = [
  ["browser", "Browser"],
  ["os", "OS"],
  ["device", "Device"],
  ["country", "Country"],
  ["language", "Language"],
  ["active", "Status"],
];

const SORTS: Array<[string, string]> = [
  ["startedAt:desc", "Newest first"],
  ["startedAt:asc", "Oldest first"],
  ["duration:desc", "Longest first"],
  ["duration:asc", "Shortest first"],
];

export interface LiveFiltersOptions {
  /** Called with the new search and order; the offset is back at the first page. */
  onChange: (query: Pick<ListQuery, "query" | "sort" | "order">) => void;
}

export class LiveFilters {
  readonly element: HTMLElement;
  private readonly input: HTMLInputElement;
  private readonly sortSelect: HTMLSelectElement;
  private readonly menus: HTMLElement;
  private readonly error: HTMLElement;
  private facets: Facets = {};

  constructor(private readonly options: LiveFiltersOptions) {
    this.input = h("input", {
      type: "search",
      class: "search-input",
      placeholder: "Search: user:alice browser:chrome country:FR meta.plan:pro",
      spellcheck: false,
      "aria-label": "Search live sessions",
      "data-testid": "live-search",
    });
    this.sortSelect = h(
      "select",
      { class: "sort-select", "aria-label": "Order", "data-testid": "live-sort" },
      ...SORTS.map(([value, label]) => h("option", { value }, label)),
    );
    this.menus = h("div", { class: "filter-menus", "data-testid": "live-filter-menus" });
    this.error = h("p", { class: "search-error", role: "alert", "data-testid": "live-search-error", hidden: true });

    const form = h(
      "form",
      { class: "search-form", role: "search" },
      this.input,
      h("button", { type: "submit", class: "button button-primary", "data-testid": "live-search-submit" }, "Search"),
      this.sortSelect,
    );
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.emit();
    });
    this.sortSelect.addEventListener("change", () => this.emit());
    this.menus.addEventListener("change", (event) => this.applyMenu(event.target as HTMLSelectElement));

    this.element = h("section", { class: "live-filters" }, form, this.error, this.menus);
  }

  /** Shows `query` in the controls without emitting a change. */
  setQuery(query: ListQuery): void {
    this.input.value = query.query;
    this.sortSelect.value = `${query.sort}:${query.order}`;
    this.showError("");
    this.renderMenus();
  }

  setFacets(facets: Facets): void {
    this.facets = facets;
    this.renderMenus();
  }

  /** Shows why the server rejected the search, or hides the message when `message` is empty. */
  showError(message: string): void {
    this.error.textContent = message;
    this.error.hidden = message === "";
    this.input.toggleAttribute("aria-invalid", message !== "");
  }

  private emit(): void {
    const [sort, order] = this.sortSelect.value.split(":") as [ListQuery["sort"], ListQuery["order"]];
    this.showError("");
    this.options.onChange({ query: this.input.value.trim(), sort, order });
  }

  private applyMenu(select: HTMLSelectElement): void {
    const field = select.dataset.field;
    if (!field) return;
    this.input.value = replaceTerm(this.input.value, field, select.value);
    this.emit();
  }

  private renderMenus(): void {
    const metadataMenus = Object.keys(this.facets)
      .filter((name) => name.startsWith("meta."))
      .sort()
      .map((name): [string, string] => [name, name.slice("meta.".length)]);
    const current = termValues(this.input.value);
    const menus = [...FIELD_MENUS, ...metadataMenus].map(([field, label]) => this.createMenu(field, label, current.get(field)));
    this.menus.replaceChildren(...menus);
  }

  private createMenu(field: string, label: string, selected: string | undefined): HTMLElement {
    const values = this.facets[field] ?? [];
    const options = [h("option", { value: "" }, `Any ${label.toLowerCase()}`)];
    for (const { value, count } of values) {
      options.push(h("option", { value }, `${displayValue(field, value)} (${count})`));
    }
    // A value typed in the search bar stays selectable even when no live session has it now.
    if (selected !== undefined && !values.some((entry) => entry.value === selected)) {
      options.push(h("option", { value: selected }, `${displayValue(field, selected)} (0)`));
    }
    const select = h("select", { class: "filter-menu", "data-field": field, "data-testid": `filter-${field}`, "aria-label": label }, ...options);
    select.value = selected ?? "";
    return h("label", { class: "filter" }, h("span", { class: "filter-label" }, label), select);
  }
}

function displayValue(field: string, value: string): string {
  if (field === "country") return formatCountry(value);
  if (field === "active") return value === "true" ? "Active" : "Inactive";
  return value;
}

/** Splits a search into its terms, keeping quoted strings whole. */
function splitTerms(text: string): string[] {
  return text.match(/(?:[^\s"']+|"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*')+/g) ?? [];
}

function unquote(value: string): string {
  if (value.length >= 2 && (value[0] === '"' || value[0] === "'") && value.endsWith(value[0])) {
    return value.slice(1, -1).replace(/\\(.)/g, "$1");
  }
  return value;
}

function quote(value: string): string {
  return /^[^\s"'()[\]]+$/.test(value) ? value : `"${value.replace(/["\\]/g, "\\$&")}"`;
}

/** Returns the value of each `field:value` term of a search, by field name. */
function termValues(text: string): Map<string, string> {
  const values = new Map<string, string>();
  for (const term of splitTerms(text)) {
    const match = /^([A-Za-z0-9_.-]+)[:=](.+)$/.exec(term);
    if (match) values.set(match[1].toLowerCase().replace(/^metadata\./, "meta."), unquote(match[2]));
  }
  return values;
}

/** Replaces every `field:…` term of a search with `field:value`, or removes them when `value` is empty. */
export function replaceTerm(text: string, field: string, value: string): string {
  const prefixes = field.startsWith("meta.") ? [field, `metadata.${field.slice(5)}`] : [field];
  const kept = splitTerms(text).filter((term) => {
    const lowered = term.toLowerCase();
    return !prefixes.some((prefix) => lowered.startsWith(`${prefix}:`) || lowered.startsWith(`${prefix}=`));
  });
  if (value !== "") kept.push(`${field}:${quote(value)}`);
  return kept.join(" ");
}
