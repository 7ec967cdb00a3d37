// The dashboard's calls to the Stats API, under its base path (/dashboard or
// /share/TOKEN, where the browser sends the login's or the link's cookie).
//
// A logged-in page sends its CSRF token (from <meta name="csrf-token">) as the
// X-CSRF-Token header. At most LIMIT calls run at once, the others wait their turn:
// each call is a connection and a query on the server, and a page asks for a dozen.
// A call whose page state is gone is aborted, which cancels its query on the server.

const LIMIT = 4;

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export function client({ base, csrf, onUnauthorized }) {
  const waiting = [];
  let running = 0;

  function next() {
    while (running < LIMIT && waiting.length) {
      const { task, resolve, reject, signal } = waiting.shift();
      if (signal && signal.aborted) {
        reject(new DOMException("aborted", "AbortError"));
        continue;
      }
      running += 1;
      task().then(resolve, reject).finally(() => {
        running -= 1;
        next();
      });
    }
  }

  function schedule(task, signal) {
    return new Promise((resolve, reject) => {
      waiting.push({ task, resolve, reject, signal });
      next();
    });
  }

  async function call(path, init, signal) {
    const headers = { Accept: "application/json", ...(init.headers || {}) };
    if (csrf) headers["X-CSRF-Token"] = csrf;
    const response = await fetch(base + path, {
      ...init, headers, signal, credentials: "same-origin", cache: "no-store",
    });
    let body = null;
    try {
      body = await response.json();
    } catch (error) {
      if (error.name === "AbortError") throw error;
    }
    if (!response.ok) {
      if (response.status === 401 && onUnauthorized) onUnauthorized();
      const message = body && typeof body.error === "string" ? body.error : response.statusText;
      throw new ApiError(response.status, message);
    }
    return body;
  }

  return {
    /** POST /api/v2/query with a Plausible v2 body; its answer. */
    query(body, signal) {
      const init = {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
      };
      return schedule(() => call("/api/v2/query", init, signal), signal);
    },
    /** The site's visitors of the last 5 minutes (v1's realtime endpoint). */
    realtime(site, signal) {
      const path = `/api/v1/stats/realtime/visitors?site_id=${encodeURIComponent(site)}`;
      return schedule(() => call(path, { method: "GET" }, signal), signal);
    },
  };
}

/** Is this a refusal of the query itself (hide what asked), not a failure? */
export function refused(error) {
  return error instanceof ApiError && error.status === 400;
}

export function aborted(error) {
  return error && error.name === "AbortError";
}
