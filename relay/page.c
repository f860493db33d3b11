/* This module implements the relay's dashboard page: one HTML document with
 * inline style and script (no external assets, so it works offline) that
 * reads the event stream and shows it live. */
#include <string.h>

#include "relay/page.h"

/* Pieces, not one literal: ISO C only promises 4095 bytes per string. */
static const char *const head[] = {
    "<!DOCTYPE html>\n",
    "<html lang=\"en\"><head><meta charset=\"utf-8\">\n",
    "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n",
    "<title>mailagent events</title>\n",
    "<style>\n",
    "body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}\n",
    "header{display:flex;gap:1.5em;align-items:center;flex-wrap:wrap;padding:.8em 1.2em;",
    "background:#1d2330;color:#fff}\n",
    "header h1{font-size:1.1em;margin:0}\n",
    "#state{padding:.15em .6em;border-radius:1em;background:#777}\n",
    "#state.open{background:#2e8540}#state.error{background:#b3261e}\n",
    "main{display:grid;grid-template-columns:16em 1fr;gap:1em;padding:1em 1.2em}\n",
    "section{background:#fff;border:1px solid #dde1e7;border-radius:6px;padding:.6em .9em}\n",
    "h2{font-size:.95em;margin:.2em 0 .5em}\n",
    "table{border-collapse:collapse;width:100%}\n",
    "td,th{text-align:left;padding:.2em .5em;border-bottom:1px solid #eef0f3;vertical-align:top}\n",
    "td.n{text-align:right;font-variant-numeric:tabular-nums}\n",
    "td.data{font-family:ui-monospace,monospace;font-size:.9em;word-break:break-all}\n",
    "#resets li{color:#b3261e}\n",
    "form{display:flex;gap:.5em}input{flex:1}\n",
    "</style></head>\n",
    "<body>\n",
    "<header><h1>mailagent events</h1>\n",
    "<span id=\"state\">connecting</span>\n",
    "<span>last heartbeat: <b id=\"heartbeat\">none yet</b></span>\n",
    "<span>events: <b id=\"total\">0</b></span></header>\n",
    "<main><div>\n",
    "<section id=\"auth\" hidden><h2>Token</h2>\n",
    "<form id=\"authform\"><input id=\"token\" type=\"password\" autocomplete=\"off\" ",
    "placeholder=\"WEBHOOK_SECRET or local token\"><button>Connect</button></form></section>\n",
    "<section><h2>By type</h2><table><tbody id=\"counts\"></tbody></table></section>\n",
    "<section><h2>Resets</h2><ul id=\"resets\"></ul></section>\n",
    "</div>\n",
    "<section><h2>Events, newest first</h2><table><thead><tr><th>time</th><th>type</th>",
    "<th>internal_id</th><th>source</th><th>data</th></tr></thead>",
    "<tbody id=\"events\"></tbody></table></section>\n",
    "</main>\n",
    "<script>\n",
    NULL,
};

/* The config line goes between head and script: const CONFIG = {...}; */

/* Pieces, not one literal: ISO C only promises 4095 bytes per string. */
static const char *const script[] = {
    "'use strict';\n",
    "const MAX_ROWS = 500;\n",
    "const $ = (id) => document.getElementById(id);\n",
    "const counts = new Map();\n",
    "let total = 0, lastId = null, retryMs = 3000;\n",
    "function setState(text, cls) { const s = $('state'); s.textContent = text; ",
    "s.className = cls || ''; }\n",
    "function hhmmss(d) { return d.toLocaleTimeString(undefined, {hour12: false}); }\n",
    "function cell(tr, text, cls) { const td = document.createElement('td'); ",
    "td.textContent = text; if (cls) td.className = cls; tr.appendChild(td); }\n",
    "function showCounts() {\n",
    "  const body = $('counts'); body.textContent = '';\n",
    "  [...counts.entries()].sort().forEach(([type, n]) => {\n",
    "    const tr = document.createElement('tr'); cell(tr, type); cell(tr, String(n), 'n');\n",
    "    body.appendChild(tr); });\n",
    "}\n",
    "function onEvent(data, id) {\n",
    "  if (id) lastId = id;\n",
    "  let e; try { e = JSON.parse(data); } catch (_) { e = {event_type: '(not JSON)', data: data}; }\n",
    "  if (e === null || typeof e !== 'object') e = {event_type: '(not an object)', data: e};\n",
    "  const type = String(e.event_type ?? '?');\n",
    "  counts.set(type, (counts.get(type) || 0) + 1); total++;\n",
    "  $('total').textContent = String(total); showCounts();\n",
    "  const tr = document.createElement('tr');\n",
    "  cell(tr, typeof e.ts === 'number' ? hhmmss(new Date(e.ts * 1000)) : hhmmss(new Date()));\n",
    "  cell(tr, type);\n",
    "  cell(tr, e.internal_id === undefined || e.internal_id === null ? '-' : ",
    "String(e.internal_id), 'n');\n",
    "  cell(tr, String(e.source ?? '-'));\n",
    "  cell(tr, typeof e.data === 'string' ? e.data : JSON.stringify(e.data ?? null), 'data');\n",
    "  const body = $('events'); body.insertBefore(tr, body.firstChild);\n",
    "  while (body.rows.length > MAX_ROWS) body.deleteRow(-1);\n",
    "}\n",
    "function onPing() { $('heartbeat').textContent = hhmmss(new Date()); }\n",
    "function onReset(data) {\n",
    "  let why = data; try { why = JSON.parse(data).reason || data; } catch (_) {}\n",
    "  const li = document.createElement('li');\n",
    "  li.textContent = hhmmss(new Date()) + ' ' + why + ': events may have been missed';\n",
    "  $('resets').insertBefore(li, $('resets').firstChild);\n",
    "}\n",
    "function dispatch(type, data, id) {\n",
    "  if (type === 'mailagent') onEvent(data, id);\n",
    "  else if (type === 'ping') onPing();\n",
    "  else if (type === 'reset') onReset(data);\n",
    "}\n",
    /* EventSource: no headers, so only without a credential. */
    "function withEventSource() {\n",
    "  const es = new EventSource(CONFIG.path);\n",
    "  es.onopen = () => setState('live', 'open');\n",
    "  es.onerror = () => {\n",
    "    if (es.readyState === EventSource.CLOSED) { setState('closed, retrying', 'error');\n",
    "      setTimeout(withEventSource, retryMs); }\n",
    "    else setState('reconnecting', 'error');\n",
    "  };\n",
    "  ['mailagent', 'ping', 'reset'].forEach((t) =>\n",
    "    es.addEventListener(t, (m) => dispatch(t, m.data, m.lastEventId)));\n",
    "}\n",
    /* fetch: reads the stream itself and parses the SSE grammar. */
    "async function withFetch(token) {\n",
    "  for (;;) {\n",
    "    try {\n",
    "      const headers = {'Accept': 'text/event-stream', 'Authorization': 'Bearer ' + token,\n",
    "                       'X-MailAgent-Local-Token': token};\n",
    "      if (lastId) headers['Last-Event-ID'] = lastId;\n",
    "      setState('connecting');\n",
    "      const resp = await fetch(CONFIG.path, {headers, cache: 'no-store'});\n",
    "      if (resp.status === 401) { setState('wrong token', 'error'); $('auth').hidden = false;\n",
    "        return; }\n",
    "      if (!resp.ok || !resp.body) throw new Error('HTTP ' + resp.status);\n",
    "      setState('live', 'open');\n",
    "      await readStream(resp.body);\n",
    "      setState('ended, retrying', 'error');\n",
    "    } catch (err) { setState('error, retrying: ' + err.message, 'error'); }\n",
    "    await new Promise((ok) => setTimeout(ok, retryMs));\n",
    "  }\n",
    "}\n",
    "async function readStream(body) {\n",
    "  const reader = body.pipeThrough(new TextDecoderStream()).getReader();\n",
    "  let buf = '', type = '', data = [], id = null;\n",
    "  for (;;) {\n",
    "    const {value, done} = await reader.read();\n",
    "    if (done) return;\n",
    "    buf += value;\n",
    "    let m;\n",
    "    while ((m = /\\r\\n|\\r|\\n/.exec(buf)) !== null) {\n",
    "      if (m[0] === '\\r' && m.index === buf.length - 1) break;\n",
    "      const line = buf.slice(0, m.index); buf = buf.slice(m.index + m[0].length);\n",
    "      if (line === '') { if (data.length) dispatch(type || 'message', data.join('\\n'), id);\n",
    "        type = ''; data = []; continue; }\n",
    "      if (line[0] === ':') continue;\n",
    "      const c = line.indexOf(':');\n",
    "      const field = c < 0 ? line : line.slice(0, c);\n",
    "      let v = c < 0 ? '' : line.slice(c + 1); if (v[0] === ' ') v = v.slice(1);\n",
    "      if (field === 'event') type = v; else if (field === 'data') data.push(v);\n",
    "      else if (field === 'id') id = v;\n",
    "      else if (field === 'retry' && /^\\d+$/.test(v)) retryMs = Number(v);\n",
    "    }\n",
    "  }\n",
    "}\n",
    "function start() {\n",
    "  if (!CONFIG.tokenNeeded) { withEventSource(); return; }\n",
    "  const fromHash = new URLSearchParams(location.hash.slice(1)).get('token');\n",
    "  const token = fromHash || sessionStorage.getItem('mailagent-token');\n",
    "  $('authform').onsubmit = (ev) => { ev.preventDefault(); const t = $('token').value;\n",
    "    sessionStorage.setItem('mailagent-token', t); $('auth').hidden = true; withFetch(t); };\n",
    "  if (token) withFetch(token); else { $('auth').hidden = false; setState('token needed'); }\n",
    "}\n",
    "start();\n",
    "</script>\n",
    "</body></html>\n",
    NULL,
};

/* Appends s as a JavaScript string literal that cannot end the script
 * element: '<', '>' and '&' are written as \\u escapes. */
static void js_string(mae__buf *b, const char *s)
{
    mae__buf tmp;
    mae__buf_init(&tmp);
    mae__json_str(&tmp, s, 0);
    if (tmp.oom) {
        b->oom = true;
        return;
    }
    for (size_t i = 0; i < tmp.len; i++) {
        char c = tmp.ptr[i];
        if (c == '<')
            mae__buf_puts(b, "\\u003c");
        else if (c == '>')
            mae__buf_puts(b, "\\u003e");
        else if (c == '&')
            mae__buf_puts(b, "\\u0026");
        else
            mae__buf_putc(b, c);
    }
    mae__buf_free(&tmp);
}

void mae__page_render(mae__buf *b, const char *stream_path, bool token_needed)
{
    for (const char *const *p = head; *p; p++)
        mae__buf_puts(b, *p);
    mae__buf_puts(b, "const CONFIG = {path: ");
    js_string(b, stream_path);
    mae__buf_puts(b, token_needed ? ", tokenNeeded: true};\n" : ", tokenNeeded: false};\n");
    for (const char *const *p = script; *p; p++)
        mae__buf_puts(b, *p);
}
