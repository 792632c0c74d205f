// The API docs' pages, /docs (Swagger UI) and /redoc (ReDoc): <body data-renderer> says which.
//
// /openapi.json needs an API key whenever the service has keys, so this script fetches the document
// itself, with the key the dashboard keeps in sessionStorage ("fleet-key"), and hands the renderer the
// document rather than its URL. With no stored key it tries without one (enough in protected mode, from
// loopback); when refused (401/403) it shows a form that asks for a key, stores it and tries again.
// Swagger UI's "Try it out" requests carry the stored key too, unless its own Authorize dialog set one.
"use strict";

(() => {
  const KEY_NAME = "fleet-key";
  const SPEC_URL = "/openapi.json";

  const renderer = document.body.dataset.renderer;
  const status = document.getElementById("docs-status");
  const form = document.getElementById("docs-key");
  const input = document.getElementById("docs-key-input");
  const message = document.getElementById("docs-key-message");
  let memoryKey = ""; // the key given here, should sessionStorage be unavailable

  function storedKey() {
    try {
      return sessionStorage.getItem(KEY_NAME) || "";
    } catch {
      return ""; // storage disabled: behave as if no key were stored
    }
  }

  function storeKey(key) {
    try {
      sessionStorage.setItem(KEY_NAME, key);
    } catch {
      // storage disabled: the key then lasts as long as this page (see storedKey)
    }
    memoryKey = key;
  }

  const currentKey = () => storedKey() || memoryKey;

  function showStatus(text) {
    status.textContent = text;
    status.hidden = !text;
  }

  function askForKey(text) {
    showStatus("");
    message.textContent = text;
    form.hidden = false;
    input.value = "";
    input.focus();
  }

  // The error's own words: {"error": {"message": ...}} for the JSON API.
  async function refusal(response) {
    try {
      const body = await response.json();
      const error = body && body.error;
      return (error && (error.message || error)) || "";
    } catch {
      return "";
    }
  }

  async function fetchSpec(key) {
    const headers = key ? { Authorization: `Bearer ${key}` } : {};
    const response = await fetch(SPEC_URL, { headers, cache: "no-store", credentials: "same-origin" });
    if (response.status === 401 || response.status === 403) {
      return { refused: response.status, why: await refusal(response) };
    }
    if (!response.ok) {
      throw new Error(`${SPEC_URL} answered ${response.status}`);
    }
    return { spec: await response.json() };
  }

  function hasAuthorization(headers) {
    return Object.keys(headers || {}).some((name) => name.toLowerCase() === "authorization");
  }

  function renderSwagger(spec) {
    window.SwaggerUIBundle({
      spec,
      dom_id: "#swagger-ui",
      deepLinking: true,
      validatorUrl: null, // the default validator is a remote service
      requestInterceptor: (request) => {
        const key = currentKey();
        if (key && !hasAuthorization(request.headers)) {
          request.headers = { ...request.headers, Authorization: `Bearer ${key}` };
        }
        return request;
      },
    });
  }

  function renderRedoc(spec) {
    window.Redoc.init(spec, {}, document.getElementById("redoc"));
  }

  async function load() {
    form.hidden = true;
    showStatus("Loading the API description…");
    const key = currentKey();
    let answer;
    try {
      answer = await fetchSpec(key);
    } catch (error) {
      showStatus(`Could not load the API description: ${error.message}`);
      return;
    }
    if (answer.refused) {
      const what = key ? `The service refused this key (${answer.refused}).` : "This service needs an API key.";
      askForKey(answer.why ? `${what} ${answer.why}` : what);
      return;
    }
    showStatus("");
    if (renderer === "redoc") {
      renderRedoc(answer.spec);
    } else {
      renderSwagger(answer.spec);
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const key = input.value.trim();
    if (key) {
      storeKey(key);
      load();
    }
  });

  load();
})();
