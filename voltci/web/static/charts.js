// Volt's charts, drawn with Chartist (chartist/, served from the package) from the JSON a page embeds
// (voltci/web/charts.py): a repository's trend, a test's durations, the slow tests' sparklines. Each
// bar and point is an SVG element linked to its build, with a title saying what it is.
(function () {
  'use strict';

  const SVG = 'http://www.w3.org/2000/svg';
  const PAD_TOP = 15;  // half a label's height and more: the highest label is centred on the top line
  const PAD_BOTTOM = 6;  // half a point's width (chartist.css: 10px) and more: a point at zero is whole
  const COLOURS = {passed: '#2e7d32', failed: '#c62828', error: '#6a1b9a', timeout: '#ef6c00', cancelled: '#616161',
                   skipped: '#9e9e9e', running: '#1565c0', queued: '#757575', flaky: '#f9a825'};

  function source(el) {
    const data = document.getElementById(el.dataset.source);
    return data ? JSON.parse(data.textContent) : null;
  }

  function when(iso) {
    const date = new Date(iso);
    return isNaN(date) ? '' : window.volt.exact.format(date);
  }

  // Put the drawn element in an <a> to its build, with a <title> (text only: escaped by the DOM).
  function link(element, url, title) {
    const node = element.getNode();
    const anchor = document.createElementNS(SVG, 'a');
    anchor.setAttribute('href', url);
    node.parentNode.insertBefore(anchor, node);
    anchor.appendChild(node);
    const tip = document.createElementNS(SVG, 'title');
    tip.textContent = title;
    node.appendChild(tip);
  }

  function everyNth(count, room) {
    const step = Math.max(1, Math.ceil(count / room));
    return (value, index) => (index % step === 0 ? value : null);
  }

  function trend(el, builds) {
    const duration = window.volt.duration;
    const labels = builds.map((b) => b.commit.slice(0, 7));
    const wait = builds.map((b) => ({value: b.wait_s, meta: 'wait'}));
    const run = builds.map((b) => ({value: b.duration_s || 0, meta: b.status}));
    const chart = new Chartist.BarChart(el, {labels: labels, series: [
      {name: 'wait', className: 'ct-series-wait', data: wait},
      {name: 'duration', className: 'ct-series-duration', data: run}]}, {
      stackBars: true, chartPadding: {top: PAD_TOP, right: 10, bottom: 0, left: 20},
      axisX: {showGrid: false, labelInterpolationFnc: everyNth(builds.length, 12)},
      axisY: {offset: 56, labelInterpolationFnc: (value) => (value ? duration(value) : '0')}});
    const width = Math.max(2, Math.min(28, Math.floor(el.clientWidth * 0.75 / Math.max(builds.length, 1))));
    chart.on('draw', (data) => {
      if (data.type !== 'bar') return;
      const b = builds[data.index];
      const isRun = data.seriesIndex === 1;
      data.element.attr({style: 'stroke-width: ' + width + 'px' + (isRun ? '; stroke: ' + (COLOURS[b.status] || '#999') : ''),
                         'data-status': isRun ? b.status : 'wait', 'data-commit': b.commit});
      link(data.element, b.url, b.commit + ' (' + b.branch + '): ' + b.status + ', ' +
           (b.duration_s === null ? 'not finished' : duration(b.duration_s)) + ' after ' + duration(b.wait_s) +
           ' in the queue; ' + b.tests + ' tests, ' + b.failed + ' failing\n' + when(b.queued_at) + '\n' + b.subject);
    });
  }

  // Below the trend: each build's tests and failures, a point over the middle of its bar above (an x
  // axis from -0.5 to n - 0.5, as the bars' columns are; Chartist's step axis would put each point at
  // the left edge of its column), with room at the top for the highest label and at the bottom for a
  // point at zero.
  function tests(el, builds) {
    const at = (value, index) => ({x: index, y: value});
    const chart = new Chartist.LineChart(el, {series: [
      {name: 'tests', className: 'ct-series-tests', data: builds.map((b, i) => at(b.tests || null, i))},
      {name: 'failures', className: 'ct-series-failures', data: builds.map((b, i) => at(b.tests ? b.failed : null, i))}]}, {
      showPoint: builds.length <= 60, lineSmooth: false, low: 0,
      chartPadding: {top: PAD_TOP, right: 10, bottom: PAD_BOTTOM, left: 20},
      axisX: {type: Chartist.FixedScaleAxis, low: -0.5, high: builds.length - 0.5, ticks: [], showGrid: false,
              showLabel: false, offset: 0},
      axisY: {offset: 56, onlyInteger: true}});
    chart.on('draw', (data) => {
      if (data.type !== 'point') return;
      const b = builds[data.index];
      data.element.attr({'data-commit': b.commit});
      link(data.element, b.url, b.commit + ': ' + b.tests + ' tests, ' + b.failed + ' failing');
    });
  }

  function durations(el, points) {
    const duration = window.volt.duration;
    const chart = new Chartist.LineChart(el, {labels: points.map((p) => p.commit.slice(0, 7)), series: [
      {name: 'seconds', className: 'ct-series-seconds', data: points.map((p) => p.duration_s)}]}, {
      low: 0, showPoint: true, lineSmooth: false, chartPadding: {top: PAD_TOP, right: 10, bottom: 0, left: 20},
      axisX: {showGrid: false, labelInterpolationFnc: everyNth(points.length, 12)},
      axisY: {offset: 56, labelInterpolationFnc: (value) => (value ? duration(value) : '0')}});
    chart.on('draw', (data) => {
      if (data.type !== 'point') return;
      const p = points[data.index];
      data.element.attr({style: 'stroke: ' + (COLOURS[p.outcome] || '#999'), 'data-outcome': p.outcome || 'absent'});
      link(data.element, p.url, p.commit + ': ' + (p.outcome || 'not run') + ', ' + window.volt.testDuration(p.duration_s) +
           '\n' + when(p.queued_at));
    });
  }

  function spark(el, all) {
    const series = all[Number(el.dataset.index)] || [];
    new Chartist.LineChart(el, {series: [series]}, {
      low: 0, showPoint: false, lineSmooth: false, fullWidth: true, chartPadding: 2,
      axisX: {showGrid: false, showLabel: false, offset: 0}, axisY: {showGrid: false, showLabel: false, offset: 0}});
  }

  const DRAW = {trend: trend, tests: tests, durations: durations, spark: spark};

  document.addEventListener('DOMContentLoaded', () => {
    if (!window.Chartist || !window.volt) return;  // the tables below have the same figures
    for (const el of document.querySelectorAll('[data-chart]')) {
      const data = source(el);
      if (data && DRAW[el.dataset.chart]) DRAW[el.dataset.chart](el, data);
    }
  });
})();
