// meshnode API docs: Swagger UI (vendored in /docs/swagger-ui-bundle.js) over this node's
// /openapi.json. The document is fetched here, not by Swagger, so that an API key goes in the
// Authorization header (never in a URL), and Swagger's "Authorize" starts out filled with it.
"use strict";

// The dashboard's name: a key given to either page in this tab serves both.
const KEY_STORE = "meshnode-api-key";

// -- the key: from #key=... once (the fragment never reaches the server), then this tab's storage
(function takeKeyFromFragment() {
  const match = location.hash.match(/(?:^#|&)key=([^&]+)/);
  if (match) {
    sessionStorage.setItem(KEY_STORE, decodeURIComponent(match[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
})();

function setStatus(state, text) {
  const status = document.getElementById("status");
  status.dataset.state = state;
  status.textContent = text;
}

function askForKey(problem) {
  setStatus("key", problem || "API key needed");
  const form = document.getElementById("key-form");
  form.hidden = false;
  form.querySelector("input").focus();
}

async function load() {
  const key = sessionStorage.getItem(KEY_STORE);
  const headers = { Accept: "application/json" };
  if (key) headers.Authorization = "Bearer " + key;
  let response;
  try {
    response = await fetch("/openapi.json", { headers, cache: "no-store" });
  } catch (error) {
    setStatus("error", "cannot reach this node: " + error);
    return;
  }
  if (response.status === 401 || response.status === 403) {
    askForKey(response.status === 403 ? "This key may not read the API document." : null);
    return;
  }
  if (!response.ok) {
    setStatus("error", "the API document did not load: HTTP " + response.status);
    return;
  }
  const spec = await response.json();
  document.getElementById("key-form").hidden = true;
  const ui = SwaggerUIBundle({
    spec,
    dom_id: "#swagger-ui",
    layout: "BaseLayout",
    presets: [SwaggerUIBundle.presets.apis],
    deepLinking: true,
    validatorUrl: null, // the default badge asks validator.swagger.io about the document
    displayRequestDuration: true,
    defaultModelsExpandDepth: 0,
    persistAuthorization: false, // the key stays in this tab's session storage only
  });
  if (key) ui.preauthorizeApiKey("bearer", key);
  window.ui = ui;
  setStatus("ready", "");
}

document.getElementById("key-form").addEventListener("submit", (submitted) => {
  submitted.preventDefault();
  const input = document.getElementById("key-input");
  if (!input.value.trim()) return;
  sessionStorage.setItem(KEY_STORE, input.value.trim());
  input.value = "";
  setStatus("loading", "loading the API document…");
  load();
});

load();
