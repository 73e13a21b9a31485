// chathub-proxy helper: served by the proxy itself at inject.helper_path and
// inserted (deferred, just before the widget tag) by the proxy. Two jobs:
//
// 1. Fallback: when the widget module fails to load (404, network, blocked by
//    CSP), clone <template data-fallback> into the page, so visitors still see
//    a way to get in touch.
// 2. Token refresh (data-token-path): before the token in the widget tag
//    expires, fetch a fresh one from the proxy's token endpoint (same origin,
//    session cookie) and replace the widget tag with a new one (same id, new
//    token, ?v=N so the module runs again), keeping exactly one widget tag.
//
// A classic external script: no inline code, no eval, no markup strings, so a
// Content-Security-Policy that lets the page run it needs nothing else.
(function () {
  'use strict';

  var me = document.currentScript;
  if (!me || window.__chathubProxyHelper) return;
  window.__chathubProxyHelper = true;

  var data = me.dataset;
  var scriptId = data.widget || 'operator-chat-panel-script';
  var tokenAttr = data.tokenAttribute || 'token';
  var nonce = me.nonce || '';
  var first = document.getElementById(scriptId);

  // --- 1. Fallback -------------------------------------------------------

  var fallbackShown = false;

  function showFallback(reason) {
    if (fallbackShown || !data.fallback) return;
    var template = document.getElementById(data.fallback);
    if (!template || !template.content) return;
    fallbackShown = true;
    var box = document.createElement('div');
    box.id = data.fallback + '-contact';
    box.setAttribute('data-reason', reason);
    box.appendChild(template.content.cloneNode(true));
    template.parentNode.insertBefore(box, template.nextSibling);
  }

  function watch(tag) {
    if (!tag) return;
    // A deferred classic script runs before the (later, also deferred) module
    // executes, so the module's load or error event is still to come.
    tag.addEventListener('error', function () { showFallback('widget_error'); });
  }

  watch(first);

  // --- 2. Token refresh --------------------------------------------------

  var tokenPath = data.tokenPath;
  if (!tokenPath || !first) return;

  var base = first.getAttribute('src') || '';
  var current = first.getAttribute(tokenAttr) || '';
  var expiresAt = Date.parse(data.expiresAt || '');
  var version = 0;
  var timer = null;
  var inFlight = false;
  var ttPolicy = null;

  // Half of what is left, so that a token the proxy's cache still hands out
  // (it refreshes ahead of expiry in the background) is asked for again well
  // before it runs out; never more often than every 2 s.
  function delayFor(until) {
    var left = until - Date.now();
    if (!(left > 0)) return 2000;
    var wait = Math.max(2000, left / 2);
    wait = wait * (0.9 + Math.random() * 0.1); // spread pages opened together
    return Math.min(wait, 24 * 3600 * 1000);
  }

  function schedule(ms) {
    if (timer) clearTimeout(timer);
    timer = setTimeout(refresh, ms);
  }

  function widgetUrl() {
    version += 1;
    return base + (base.indexOf('?') >= 0 ? '&' : '?') + 'v=' + version;
  }

  function setSrc(el, url) {
    try {
      el.src = url;
    } catch (e) {
      // Trusted Types enforced: the URL is the widget's own, with a counter.
      if (!window.trustedTypes) throw e;
      ttPolicy = ttPolicy || window.trustedTypes.createPolicy('chathub-proxy', {
        createScriptURL: function (s) { return s; },
      });
      el.src = ttPolicy.createScriptURL(url);
    }
  }

  function swap(token) {
    var el = document.createElement('script');
    el.type = 'module';
    el.id = scriptId;
    el.setAttribute(tokenAttr, token);
    if (nonce) el.nonce = nonce;
    setSrc(el, widgetUrl());
    watch(el);
    var old = document.querySelectorAll('script[id="' + scriptId + '"]');
    if (old.length) {
      old[0].replaceWith(el);
      for (var i = 1; i < old.length; i++) old[i].remove();
    } else {
      (document.body || document.documentElement).appendChild(el);
    }
    current = token;
  }

  function refresh() {
    if (inFlight) return;
    inFlight = true;
    var url = new URL(tokenPath, location.origin);
    fetch(url.href, {
      credentials: 'same-origin',
      cache: 'no-store',
      headers: { Accept: 'application/json' },
    })
      .then(function (r) {
        if (!r.ok) throw new Error('token endpoint answered ' + r.status);
        return r.json();
      })
      .then(function (body) {
        var token = body && typeof body.token === 'string' ? body.token : '';
        var at = Date.parse(body && body.expiresAt);
        if (!token || !(at > 0)) throw new Error('unexpected token answer');
        if (token !== current) swap(token);
        expiresAt = at;
        schedule(delayFor(expiresAt));
      })
      .catch(function () {
        // Try again; sooner as the token nears its end, at most every 2 s.
        schedule(Math.min(delayFor(expiresAt), 60000));
      })
      .then(function () { inFlight = false; });
  }

  // Timers are throttled in background tabs and stop while a laptop sleeps:
  // check again as soon as the page is visible.
  document.addEventListener('visibilitychange', function () {
    if (document.visibilityState === 'visible' && !(expiresAt - Date.now() > 60000)) {
      refresh();
    }
  });

  schedule(expiresAt > 0 ? delayFor(expiresAt) : 2000);
})();
