// Moltbot web chat: a client of the gateway's WebSocket control plane (protocol 3).
//
// It connects only to its own origin, next to the page (`<page>/ws`), never to a URL from the
// query string. The secret lives in sessionStorage (this tab only); a `#token=` fragment is taken
// once and removed from the address bar. Everything the gateway sends is shown with textContent,
// never parsed as HTML.
"use strict";

(() => {
  const PROTOCOL = 3;
  const STORE = { secret: "moltbot.secret", agent: "moltbot.agent", session: "moltbot.session" };
  const REQUEST_TIMEOUT_MS = 30000;
  const HANDSHAKE_TIMEOUT_MS = 10000;
  const RECONNECT_MAX_MS = 15000;
  const DEFAULT_MAX_PAYLOAD = 512 * 1024;
  const HISTORY_LIMIT = 200;
  const SESSION_LIMIT = 50;
  const MAX_TOOL_NAMES = 1000;

  const $ = (id) => document.getElementById(id);
  const ui = {
    conn: $("conn"),
    agentBox: $("agent-box"),
    agent: $("agent"),
    logout: $("logout"),
    login: $("login"),
    loginForm: $("login-form"),
    secret: $("secret"),
    loginError: $("login-error"),
    app: $("app"),
    sidebar: $("sidebar"),
    sessionsToggle: $("sessions-toggle"),
    newSession: $("new-session"),
    sessions: $("sessions"),
    chatTitle: $("chat-title"),
    messages: $("messages"),
    chatError: $("chat-error"),
    composer: $("composer"),
    message: $("message"),
    send: $("send"),
    stop: $("stop"),
  };

  const state = {
    ws: null,
    hello: null,
    pending: new Map(), // request id -> {resolve, reject, timer}
    nextId: 1,
    agentId: null,
    sessionKey: null,
    bubbles: new Map(), // run id -> the assistant message element being streamed
    toolNames: new Map(), // tool call id -> tool name, for the session shown
    activeRun: null, // the run this tab started in the open session, while it runs
    retries: 0,
    retryTimer: null,
    refreshTimer: null,
  };

  // -- small helpers ------------------------------------------------------------------------

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function randomId() {
    // crypto.randomUUID needs a secure context; a LAN http:// page is not one.
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function mainKey(agentId) {
    return `agent:${agentId}:main`;
  }

  function showError(target, message) {
    target.textContent = message || "";
  }

  function setConn(text, kind) {
    ui.conn.textContent = text;
    ui.conn.dataset.kind = kind || "";
  }

  // -- the secret -------------------------------------------------------------------------

  function takeFragmentToken() {
    const hash = location.hash.startsWith("#") ? location.hash.slice(1) : "";
    const params = new URLSearchParams(hash);
    if (!params.has("token")) return;
    const token = params.get("token");
    params.delete("token");
    const rest = params.toString();
    history.replaceState(null, "", location.pathname + location.search + (rest ? `#${rest}` : ""));
    if (token) sessionStorage.setItem(STORE.secret, token);
  }

  function showLogin(message) {
    ui.app.hidden = true;
    ui.agentBox.hidden = true;
    ui.logout.hidden = true;
    ui.login.hidden = false;
    showError(ui.loginError, message);
    setConn("offline", "off");
    ui.secret.focus();
  }

  function showApp() {
    ui.login.hidden = true;
    ui.app.hidden = false;
    ui.agentBox.hidden = false;
    ui.logout.hidden = false;
  }

  // -- the socket -------------------------------------------------------------------------

  function socketUrl() {
    const url = new URL("ws", location.href); // same origin, beside the page
    url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    url.search = "";
    url.hash = "";
    return url.href;
  }

  function connect() {
    clearTimeout(state.retryTimer);
    const secret = sessionStorage.getItem(STORE.secret);
    if (!secret) {
      showLogin("");
      return;
    }
    setConn("connecting…", "wait");
    const ws = new WebSocket(socketUrl());
    state.ws = ws;
    let refused = null;
    const deadline = setTimeout(() => ws.close(), HANDSHAKE_TIMEOUT_MS);

    ws.addEventListener("message", (message) => {
      if (state.ws !== ws) return;
      let frame;
      try {
        frame = JSON.parse(message.data);
      } catch {
        return;
      }
      if (frame.type === "res") {
        settle(frame);
      } else if (frame.type === "event" && frame.event === "connect.challenge") {
        request("connect", connectParams(secret), ws)
          .then((hello) => {
            clearTimeout(deadline);
            onHello(hello);
          })
          .catch((error) => {
            clearTimeout(deadline);
            refused = error;
          });
      } else if (frame.type === "event") {
        onEvent(frame.event, frame.payload);
      }
    });

    ws.addEventListener("close", (event) => {
      clearTimeout(deadline);
      if (state.ws !== ws) return;
      state.ws = null;
      failPending("connection closed");
      if (refused) {
        // A wrong secret: forget it and ask again; no retry loop against the rate limit.
        sessionStorage.removeItem(STORE.secret);
        showLogin(refused.message);
        return;
      }
      if (!sessionStorage.getItem(STORE.secret)) return; // logged out
      scheduleReconnect(event.reason);
    });
  }

  function connectParams(secret) {
    return {
      minProtocol: PROTOCOL,
      maxProtocol: PROTOCOL,
      client: {
        id: "webchat-ui",
        version: "1",
        platform: navigator.platform || "web",
        mode: "webchat",
      },
      // Typed once, without saying which it is: the gateway checks the one its mode uses.
      auth: { token: secret, password: secret },
    };
  }

  function scheduleReconnect(reason) {
    const delay = Math.min(RECONNECT_MAX_MS, 1000 * 2 ** state.retries);
    state.retries += 1;
    const why = reason ? ` (${reason})` : "";
    setConn(`disconnected${why}; retrying in ${Math.round(delay / 1000)} s`, "off");
    state.retryTimer = setTimeout(connect, delay);
  }

  function onHello(hello) {
    state.hello = hello;
    state.retries = 0;
    setConn("connected", "ok");
    const fromLogin = !ui.login.hidden;
    showApp();
    if (fromLogin) ui.message.focus(); // where the user goes next; a reconnect keeps focus
    loadAgents().catch((error) => showError(ui.chatError, error.message));
  }

  function request(method, params, ws = state.ws) {
    return new Promise((resolve, reject) => {
      if (!ws || ws.readyState !== WebSocket.OPEN) {
        reject(new Error("not connected"));
        return;
      }
      const id = String(state.nextId++);
      const frame = JSON.stringify({ type: "req", id, method, params });
      const limit = (state.hello && state.hello.policy && state.hello.policy.maxPayload) ||
        DEFAULT_MAX_PAYLOAD;
      if (new TextEncoder().encode(frame).length > limit) {
        reject(new Error(`too long: the gateway takes at most ${limit} bytes a message`));
        return;
      }
      const timer = setTimeout(() => {
        state.pending.delete(id);
        reject(new Error(`${method}: no answer within ${REQUEST_TIMEOUT_MS / 1000} s`));
      }, REQUEST_TIMEOUT_MS);
      state.pending.set(id, { resolve, reject, timer });
      ws.send(frame);
    });
  }

  function settle(frame) {
    const pending = state.pending.get(frame.id);
    if (!pending) return;
    state.pending.delete(frame.id);
    clearTimeout(pending.timer);
    if (frame.ok) {
      pending.resolve(frame.payload);
    } else {
      const error = frame.error || {};
      pending.reject(new Error(error.message || error.code || "request failed"));
    }
  }

  function failPending(reason) {
    for (const pending of state.pending.values()) {
      clearTimeout(pending.timer);
      pending.reject(new Error(reason));
    }
    state.pending.clear();
  }

  // -- agents and sessions ----------------------------------------------------------------

  async function loadAgents() {
    const result = await request("agents.list", {});
    const agents = result.agents || [];
    ui.agent.replaceChildren(
      ...agents.map((agent) => {
        const identity = agent.identity || {};
        const name = agent.name || identity.name || agent.id;
        const label = identity.emoji ? `${identity.emoji} ${name}` : name;
        const option = el("option", "", label);
        option.value = agent.id;
        return option;
      }),
    );
    const stored = sessionStorage.getItem(STORE.agent);
    const chosen = agents.some((a) => a.id === stored) ? stored : result.defaultId;
    ui.agent.value = chosen;
    await selectAgent(chosen);
  }

  async function selectAgent(agentId) {
    state.agentId = agentId;
    sessionStorage.setItem(STORE.agent, agentId);
    const stored = sessionStorage.getItem(STORE.session);
    const key = stored && stored.startsWith(`agent:${agentId}:`) ? stored : mainKey(agentId);
    await loadSessions();
    await openSession(key);
  }

  async function loadSessions() {
    const agentId = state.agentId;
    const listed = await request("sessions.list", {
      agentId,
      limit: SESSION_LIMIT,
      includeDerivedTitles: true,
    });
    const rows = listed.sessions || [];
    if (!rows.some((row) => row.key === mainKey(agentId))) rows.unshift({ key: mainKey(agentId) });
    const previews = await request("sessions.preview", {
      keys: rows.map((row) => row.key),
      limit: 1,
      maxChars: 120,
    });
    if (agentId !== state.agentId) return; // the user picked another agent meanwhile
    const found = new Map((previews.previews || []).map((p) => [p.key, p]));
    ui.sessions.replaceChildren(...rows.map((row) => sessionItem(row, found.get(row.key))));
    showTitle();
  }

  function showTitle() {
    const key = state.sessionKey || "";
    const item = ui.sessions.querySelector(`[data-key="${CSS.escape(key)}"] .session-title`);
    ui.chatTitle.textContent = item ? item.textContent : key;
  }

  function sessionTitle(row, preview) {
    if (row.key === mainKey(state.agentId)) return "Main session";
    if (preview && preview.status === "empty") return "New session";
    return row.derivedTitle || row.key.split(":").slice(2).join(":");
  }

  function sessionItem(row, preview) {
    const item = el("li", "session");
    item.dataset.key = row.key;
    const title = sessionTitle(row, preview);
    const lastText = ((preview && preview.items) || []).map((i) => i.text).join(" ");
    const open = el("button", "session-open");
    open.type = "button";
    open.append(el("span", "session-title", title), el("span", "session-preview", lastText));
    if (row.key === state.sessionKey) open.setAttribute("aria-current", "true");
    open.addEventListener("click", () => {
      openSession(row.key).catch((error) => showError(ui.chatError, error.message));
      toggleSidebar(false);
    });
    const reset = el("button", "quiet small session-reset", "Reset");
    reset.type = "button";
    reset.setAttribute("aria-label", `Reset ${title}`);
    reset.addEventListener("click", () => resetSession(row.key, title));
    item.append(open, reset);
    if (row.key !== mainKey(state.agentId)) {
      const remove = el("button", "quiet small danger session-delete", "Delete");
      remove.type = "button";
      remove.setAttribute("aria-label", `Delete ${title}`);
      remove.addEventListener("click", () => deleteSession(row.key, title));
      item.append(remove);
    }
    return item;
  }

  function refreshSessionsSoon() {
    clearTimeout(state.refreshTimer);
    state.refreshTimer = setTimeout(() => {
      loadSessions().catch(() => {}); // the list catches up on the next change
    }, 300);
  }

  async function newSession() {
    const key = `agent:${state.agentId}:webchat-${randomId().slice(0, 12)}`;
    try {
      await request("sessions.reset", { key }); // creates it, empty
      // Opened before the list is refreshed: a session clicked meanwhile wins.
      const opened = openSession(key);
      ui.message.focus();
      await loadSessions();
      await opened;
    } catch (error) {
      showError(ui.chatError, error.message);
    }
  }

  async function resetSession(key, title) {
    if (!confirm(`Start "${title}" afresh? Its history will no longer be shown.`)) return;
    try {
      await request("sessions.reset", { key });
      if (key === state.sessionKey) await openSession(key);
      await loadSessions();
    } catch (error) {
      showError(ui.chatError, error.message);
    }
  }

  async function deleteSession(key, title) {
    if (!confirm(`Delete "${title}" and its history?`)) return;
    try {
      await request("sessions.delete", { key });
      if (key === state.sessionKey) await openSession(mainKey(state.agentId));
      await loadSessions();
      ui.newSession.focus();
    } catch (error) {
      showError(ui.chatError, error.message);
    }
  }

  // -- the chat ---------------------------------------------------------------------------

  async function openSession(key) {
    state.sessionKey = key;
    sessionStorage.setItem(STORE.session, key);
    state.bubbles.clear();
    state.toolNames.clear();
    setRunning(null);
    showError(ui.chatError, "");
    for (const button of ui.sessions.querySelectorAll(".session-open")) {
      const current = button.parentElement.dataset.key === key;
      if (current) button.setAttribute("aria-current", "true");
      else button.removeAttribute("aria-current");
    }
    showTitle();
    // Cleared now and the history put in front of what arrives meanwhile: a message sent (or
    // a run's events) before the history comes back belongs to this session and stays.
    ui.messages.replaceChildren();
    // Reading the history also subscribes this socket to the session's chat events.
    const history = await request("chat.history", { sessionKey: key, limit: HISTORY_LIMIT });
    if (key !== state.sessionKey) return;
    ui.messages.prepend(...(history.messages || []).map(messageElement));
    scrollToEnd(true);
  }

  async function sendMessage() {
    const text = ui.message.value;
    if (!text.trim() || state.activeRun || !state.sessionKey) return;
    showError(ui.chatError, "");
    const runId = randomId(); // the idempotency key is the run id
    const sessionKey = state.sessionKey;
    appendMessage({ role: "user", content: [{ type: "text", text }] });
    const bubble = appendMessage({ role: "assistant", content: [] });
    bubble.classList.add("streaming");
    state.bubbles.set(runId, bubble);
    setRunning(runId);
    ui.message.value = "";
    try {
      const result = await request("chat.send", {
        sessionKey,
        message: text,
        idempotencyKey: runId,
      });
      if (!result || !result.runId) {
        // A stop word: it stopped the session's runs instead of starting one.
        bubble.remove();
        state.bubbles.delete(runId);
        if (state.activeRun === runId) setRunning(null);
      }
    } catch (error) {
      bubble.classList.remove("streaming");
      bubble.append(el("p", "note error", error.message));
      state.bubbles.delete(runId);
      if (state.activeRun === runId) setRunning(null);
      if (!ui.message.value) ui.message.value = text; // not lost: try again
    }
  }

  async function stopRun() {
    const runId = state.activeRun;
    if (!runId) return;
    try {
      await request("chat.abort", { sessionKey: state.sessionKey, runId });
    } catch (error) {
      showError(ui.chatError, error.message);
    }
  }

  function setRunning(runId) {
    state.activeRun = runId;
    const stopFocused = document.activeElement === ui.stop;
    ui.stop.hidden = !runId;
    ui.send.disabled = Boolean(runId);
    if (!runId && stopFocused) ui.message.focus();
  }

  function onEvent(name, payload) {
    if (name === "chat") onChat(payload || {});
    else if (name === "shutdown") setConn("gateway restarting…", "wait");
  }

  function onChat(event) {
    if (event.sessionKey !== state.sessionKey) {
      if (event.state !== "delta") refreshSessionsSoon();
      return;
    }
    let bubble = state.bubbles.get(event.runId);
    if (!bubble) {
      // A run started elsewhere (another tab, the HTTP API) on this session.
      bubble = appendMessage({ role: "assistant", content: [] });
      state.bubbles.set(event.runId, bubble);
    }
    if (event.message) fillMessage(bubble, event.message);
    if (event.state === "delta") {
      bubble.classList.add("streaming");
      if (!state.activeRun) setRunning(event.runId); // e.g. after a reload: still stoppable
    } else {
      bubble.classList.remove("streaming");
      if (event.state === "aborted") bubble.append(el("p", "note", "stopped"));
      if (event.state === "error") {
        bubble.append(el("p", "note error", event.errorMessage || "the run failed"));
      }
      state.bubbles.delete(event.runId);
      if (state.activeRun === event.runId) setRunning(null);
      refreshSessionsSoon();
    }
    scrollToEnd(false);
  }

  // -- rendering messages (textContent only) ----------------------------------------------

  const ROLE_LABELS = { user: "You", assistant: "Assistant", toolResult: "Tool", system: "System" };

  function appendMessage(message) {
    const node = messageElement(message);
    ui.messages.append(node);
    scrollToEnd(true);
    return node;
  }

  function messageElement(message) {
    const role = String(message.role || "other");
    const node = el("article", `msg msg-${ROLE_LABELS[role] ? role : "other"}`);
    node.append(el("h3", "who", ROLE_LABELS[role] || role), el("div", "body"));
    fillMessage(node, message);
    return node;
  }

  function fillMessage(node, message) {
    const body = node.querySelector(".body");
    const blocks = contentBlocks(message.content).map(blockNode);
    if (message.role === "toolResult") {
      const details = el("details", `tool-result${message.isError ? " error" : ""}`);
      const name = message.toolName || state.toolNames.get(message.toolCallId) || "tool";
      details.append(el("summary", "", `${name} result${message.isError ? " (error)" : ""}`));
      details.append(...blocks);
      body.replaceChildren(details);
    } else {
      body.replaceChildren(...blocks);
    }
    // A stopped answer's errorMessage is only the abort reason ("rpc"): "stopped" says it.
    if (message.stopReason === "aborted") body.append(el("p", "note", "stopped"));
    else if (message.errorMessage) body.append(el("p", "note error", message.errorMessage));
  }

  function contentBlocks(content) {
    if (typeof content === "string") return [{ type: "text", text: content }];
    return Array.isArray(content) ? content : [];
  }

  function blockNode(block) {
    const type = block && typeof block === "object" ? String(block.type) : "unknown";
    if (type === "text") return el("p", "text", String(block.text ?? ""));
    if (type === "image") {
      return el("span", "badge", block.mimeType ? `image (${block.mimeType})` : "image");
    }
    if (type === "toolCall") {
      if (block.id && block.name) rememberToolName(String(block.id), String(block.name));
      const details = el("details", "tool-call");
      details.append(el("summary", "", `Tool call: ${block.name || "?"}`));
      details.append(el("pre", "args", formatArguments(block.arguments)));
      return details;
    }
    return el("span", "badge", type);
  }

  function formatArguments(args) {
    let value = args ?? {};
    if (typeof value === "string") {
      try {
        value = JSON.parse(value); // the gateway sends the arguments as JSON text
      } catch {
        return value;
      }
    }
    try {
      return JSON.stringify(value, null, 2);
    } catch {
      return String(args);
    }
  }

  function rememberToolName(id, name) {
    // So a tool result (which carries only the call's id) can say which tool it came from.
    if (state.toolNames.size >= MAX_TOOL_NAMES) state.toolNames.clear();
    state.toolNames.set(id, name);
  }

  function scrollToEnd(always) {
    const box = ui.messages;
    const nearEnd = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
    if (always || nearEnd) box.scrollTop = box.scrollHeight;
  }

  function toggleSidebar(open) {
    const show = open ?? !ui.sidebar.classList.contains("open");
    ui.sidebar.classList.toggle("open", show);
    ui.sessionsToggle.setAttribute("aria-expanded", String(show));
  }

  // -- wiring -----------------------------------------------------------------------------

  ui.loginForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const secret = ui.secret.value;
    if (!secret) {
      showError(ui.loginError, "Enter the gateway token or password.");
      return;
    }
    ui.secret.value = "";
    showError(ui.loginError, "");
    sessionStorage.setItem(STORE.secret, secret);
    connect();
  });

  ui.logout.addEventListener("click", () => {
    sessionStorage.removeItem(STORE.secret);
    const ws = state.ws;
    state.ws = null;
    failPending("logged out");
    if (ws) ws.close(1000, "logged out");
    clearTimeout(state.retryTimer);
    showLogin("");
  });

  ui.agent.addEventListener("change", () => {
    selectAgent(ui.agent.value).catch((error) => showError(ui.chatError, error.message));
  });

  ui.newSession.addEventListener("click", newSession);
  ui.sessionsToggle.addEventListener("click", () => toggleSidebar());

  ui.composer.addEventListener("submit", (event) => {
    event.preventDefault();
    sendMessage();
  });

  ui.message.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      sendMessage();
    } else if (event.key === "Escape" && state.activeRun) {
      event.preventDefault();
      stopRun();
    }
  });

  ui.stop.addEventListener("click", stopRun);

  takeFragmentToken();
  connect();
})();
