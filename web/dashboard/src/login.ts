// The sign-in form.
import { type AuthState, ApiError, login } from "./api";
import { h } from "./dom";

/**
 * Creates the sign-in page. `onSignedIn` runs once the token is stored, and
 * `initialError` is shown at once, for example after the token expired.
 */
export function createLoginPage(onSignedIn: (auth: AuthState) => void, initialError = ""): HTMLElement {
  const username = h("input", {
    id: "login-username",
    name: "username",
    autocomplete: "username",
    required: true,
    "data-testid": "login-username",
  });
  const password = h("input", {
    id: "login-password",
    name: "password",
    type: "password",
    autocomplete: "current-password",
    required: true,
    "data-testid": "login-password",
  });
  const error = h("p", { class: "login-error", role: "alert", "data-testid": "login-error", hidden: true });
  const submit = h("button", { type: "submit", class: "button button-primary", "data-testid": "login-submit" }, "Sign in");

  const form = h(
    "form",
    { class: "login-form" },
    h("h1", { class: "login-brand" }, "Tandem"),
    h("p", { class: "login-intro" }, "Sign in to watch your users' live sessions."),
    h("label", { for: "login-username" }, "Username"),
    username,
    h("label", { for: "login-password" }, "Password"),
    password,
    error,
    submit,
  );

  const showError = (message: string): void => {
    error.textContent = message;
    error.hidden = message === "";
  };
  showError(initialError);

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    showError("");
    submit.disabled = true;
    submit.textContent = "Signing in…";
    try {
      onSignedIn(await login(username.value.trim(), password.value));
    } catch (failure) {
      showError(failure instanceof ApiError ? failure.message : `Sign-in failed: ${String(failure)}`);
      password.select();
    } finally {
      submit.disabled = false;
      submit.textContent = "Sign in";
    }
  });

  queueMicrotask(() => username.focus());
  return h("main", { class: "login-page" }, form);
}
