// Volt's pages, made a little better where JavaScript runs: times in the viewer's time zone, the
// test search as you type, a branch selector that applies itself. Every page works without it.
(function () {
  'use strict';

  const exact = new Intl.DateTimeFormat(undefined, {year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit',
                                                    minute: '2-digit', second: '2-digit', timeZoneName: 'short'});
  const relative = new Intl.RelativeTimeFormat(undefined, {numeric: 'auto'});
  const UNITS = [[60, 1, 'second'], [3600, 60, 'minute'], [86400, 3600, 'hour'], [86400 * 60, 86400, 'day'],
                 [86400 * 730, 86400 * 30, 'month'], [Infinity, 86400 * 365, 'year']];

  function ago(date) {
    const seconds = (Date.now() - date.getTime()) / 1000;
    if (seconds < 10) return 'just now';
    for (const [limit, size, unit] of UNITS) {
      if (seconds < limit) return relative.format(-Math.floor(seconds / size), unit);
    }
    return '';
  }

  // <time datetime="ISO" title="UTC">3 min ago</time>: the exact time on hover, in the viewer's zone
  function localTimes(root) {
    for (const el of root.querySelectorAll('time[datetime]')) {
      const date = new Date(el.getAttribute('datetime'));
      if (isNaN(date)) continue;
      el.title = exact.format(date);
      el.textContent = ago(date);
    }
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined || seconds < 0) return '—';
    if (seconds === 0) return '0ms';
    if (seconds < 0.001) return '<1ms';
    if (seconds < 1) return Math.round(seconds * 1000) + 'ms';
    if (seconds < 10) return seconds.toFixed(1) + 's';
    const whole = Math.round(seconds);
    if (whole < 60) return whole + 's';
    if (whole < 3600) return Math.floor(whole / 60) + 'm ' + (whole % 60) + 's';
    return Math.floor(whole / 3600) + 'h ' + Math.floor(whole % 3600 / 60) + 'm';
  }

  // A test's duration, to the millisecond Volt keeps (formatting.py test_duration: the same text).
  function testDuration(seconds) {
    if (seconds === null || seconds === undefined || seconds < 0) return '—';
    const ms = Math.round(seconds * 1000);
    return ms < 1 ? '<1ms' : duration(ms / 1000);
  }

  function cell(tag, text, className) {
    const el = document.createElement(tag);
    if (text !== undefined) el.textContent = text;  // text, never HTML: test ids are escaped by the DOM
    if (className) el.className = className;
    return el;
  }

  // The build page's search: asks /api/builds/NAME/SHA/tests for the first matches as you type.
  function search(form) {
    const input = form.querySelector('input[name=q]');
    const out = document.getElementById('search-results');
    let asked = 0, timer = 0;

    async function run(query, started) {
      const mine = ++asked;
      const url = form.dataset.api + '?limit=50&q=' + encodeURIComponent(query);
      let data;
      try {
        const response = await fetch(url, {headers: {Accept: 'application/json'}});
        data = await response.json();
        if (!response.ok) throw new Error(data.error || response.statusText);
      } catch (error) {
        if (mine === asked) out.replaceChildren(cell('p', 'The search failed: ' + error.message, 'muted'));
        return;
      }
      if (mine !== asked) return;  // a newer query is on its way
      const count = cell('p', data.matched + (data.matched === 1 ? ' match' : ' matches') +
                         (data.more ? ', the first ' + data.tests.length + ' shown' : ''), 'muted');
      count.id = 'search-count';
      const table = cell('table', undefined, 'found');
      for (const test of data.tests) {
        const row = table.insertRow();
        const link = cell('a');
        link.href = test.history_url;
        link.append(cell('code', test.id));
        row.insertCell().append(link);
        row.insertCell().append(test.outcome ? cell('span', test.outcome, 'status ' + test.outcome)
                                             : cell('span', 'not run', 'muted'));
        row.insertCell().textContent = test.outcome ? testDuration(test.duration_s) : '';
      }
      out.replaceChildren(count, table);
      out.dataset.query = query;
      out.dataset.ms = String(Math.round(performance.now() - started));
      history.replaceState(null, '', '?q=' + encodeURIComponent(query) + '#search');
    }

    input.addEventListener('input', () => {
      const started = performance.now();
      clearTimeout(timer);
      if (!input.value.trim()) {
        asked++;
        out.replaceChildren();
        out.dataset.query = '';
        return;
      }
      timer = setTimeout(() => run(input.value.trim(), started), 60);
    });
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      clearTimeout(timer);
      if (input.value.trim()) run(input.value.trim(), performance.now());
    });
  }

  document.addEventListener('DOMContentLoaded', () => {
    localTimes(document);
    setInterval(() => localTimes(document), 30000);
    const form = document.getElementById('test-search');
    if (form) search(form);
    for (const select of document.querySelectorAll('select[data-autosubmit]')) {
      select.addEventListener('change', () => select.form.submit());
    }
  });

  window.volt = {duration: duration, testDuration: testDuration, exact: exact};
})();
