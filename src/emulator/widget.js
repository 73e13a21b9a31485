// ChatHub EMULATOR stand-in widget. NOT the real SMSBAT ChatHub widget.
//
// Finds its own <script id="operator-chat-panel-script" token="..."> tag, asks
// the emulator whether the token is valid, and shows one fixed panel
// (#chathub-panel, bottom right) with the operator and organization names.
// data-status on the panel is "loading" while checking, then "ok", "invalid" or "error".
//
// When a refresh helper swaps the tag for one with a fresh token, the panel
// follows: a MutationObserver notices the new token. If the module runs again
// (a new ?v=N URL), the second copy hands over to the first, so there is only
// ever one panel. No eval, no markup strings, styles set through CSSOM only,
// so it runs under a strict Content-Security-Policy.

const SCRIPT_ID = 'operator-chat-panel-script';
const PANEL_ID = 'chathub-panel';
const ORIGIN = new URL(import.meta.url).origin;
const GLOBAL_KEY = '__chathubEmulatorWidget';
const COLORS = { loading: '#4a4a4a', ok: '#1f6f3a', invalid: '#9a5200', error: '#a3261e' };

let seq = 0;
let lastToken = null;

// document.currentScript is always null in modules, so the id is what counts.
function findTag() {
  return document.getElementById(SCRIPT_ID) ||
    document.querySelector('script[id^="' + SCRIPT_ID + '"]') ||
    document.currentScript;
}

function currentToken() {
  const tag = findTag();
  return (tag && tag.getAttribute('token')) || '';
}

function panel() {
  let p = document.getElementById(PANEL_ID);
  if (!p) {
    p = document.createElement('div');
    p.id = PANEL_ID;
    p.setAttribute('role', 'complementary');
    p.setAttribute('aria-label', 'ChatHub EMULATOR operator panel');
    Object.assign(p.style, {
      position: 'fixed', right: '16px', bottom: '16px', zIndex: '2147483647',
      width: '280px', padding: '12px 14px', borderRadius: '10px',
      font: '14px/1.45 system-ui, sans-serif', color: '#fff', textAlign: 'left',
      boxShadow: '0 4px 18px rgba(0,0,0,.35)',
    });
    (document.body || document.documentElement).appendChild(p);
  }
  return p;
}

function render(status, token, lines) {
  const p = panel();
  p.dataset.status = status;
  p.dataset.tokenSuffix = token.slice(-6);
  p.style.background = COLORS[status] || COLORS.error;
  p.replaceChildren();
  const title = document.createElement('strong');
  title.textContent = 'ChatHub EMULATOR';
  p.appendChild(title);
  for (const [name, text] of lines) {
    const line = document.createElement('div');
    line.className = 'chathub-' + name;
    line.textContent = text; // names come from the network: text only, never markup
    p.appendChild(line);
  }
}

async function refresh() {
  const token = currentToken();
  lastToken = token;
  const mine = ++seq;
  if (!token) {
    render('invalid', '', [['error', 'No token attribute on the widget tag']]);
    return;
  }
  render('loading', token, [['note', 'Checking the operator token...']]);
  let status = 'error';
  let lines;
  try {
    const r = await fetch(ORIGIN + '/api/widget/validate', {
      method: 'POST',
      mode: 'cors',
      credentials: 'omit',
      // text/plain keeps this a simple request: no CORS preflight.
      headers: { 'Content-Type': 'text/plain' },
      body: JSON.stringify({ token }),
    });
    if (!r.ok) {
      lines = [['error', 'Emulator answered HTTP ' + r.status]];
    } else {
      const v = await r.json();
      if (v.isValid) {
        status = 'ok';
        lines = [
          ['operator', 'Operator: ' + (v.operatorName || '?')],
          ['organization', 'Organization: ' + (v.organizationName || '?')],
          ['expires', 'Token valid until ' + (v.expiresAt || '?')],
        ];
      } else {
        status = 'invalid';
        lines = [['error', 'Token rejected: ' + (v.error || 'invalid')]];
      }
    }
  } catch (e) {
    lines = [['error', 'Emulator unreachable']];
  }
  if (mine === seq) render(status, token, lines); // a newer check wins
}

// Re-check only when the tag's token changed (our own panel edits also land here).
function check() {
  if (currentToken() !== lastToken) refresh();
}

const first = window[GLOBAL_KEY];
if (first) {
  first.check();
} else {
  window[GLOBAL_KEY] = { check, refresh };
  const start = () => {
    refresh();
    new MutationObserver(check).observe(document.documentElement, {
      childList: true, subtree: true, attributes: true, attributeFilter: ['token'],
    });
  };
  if (document.readyState === 'loading') {
    document.addEventListener('DOMContentLoaded', start, { once: true });
  } else {
    start();
  }
}

export { check, refresh };
