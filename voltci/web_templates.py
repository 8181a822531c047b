"""The web page's templates (Jinja, autoescaped: every name ends in .html)."""

BASE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
{% if refresh %}<meta http-equiv="refresh" content="{{ REFRESH_S }}">{% endif %}
<title>{% block title %}Volt CI{% endblock %}</title>
<style>
 body { font: 14px/1.45 system-ui, sans-serif; margin: 0; color: #222; }
 header { background: #263238; color: #fff; padding: .6em 1.2em; display: flex; gap: 1.5em; align-items: center; }
 header a { color: #fff; text-decoration: none; } header .brand { font-weight: 700; }
 main { padding: 1em 1.2em; max-width: 1200px; }
 table { border-collapse: collapse; width: 100%; margin: .5em 0 1.2em; }
 th, td { text-align: left; padding: .3em .6em; border-bottom: 1px solid #e0e0e0; vertical-align: top; }
 th { background: #fafafa; }
 .status { font-weight: 600; padding: .05em .5em; border-radius: 3px; color: #fff; white-space: nowrap; }
 .passed { background: #2e7d32; } .failed { background: #c62828; } .error { background: #6a1b9a; }
 .timeout { background: #ef6c00; } .cancelled { background: #616161; } .running { background: #1565c0; }
 .queued { background: #757575; } .skipped { background: #9e9e9e; } .lost { background: #8d6e63; }
 .finished { background: #455a64; }
 pre { background: #f5f5f5; padding: .6em; overflow-x: auto; white-space: pre-wrap; }
 details summary { cursor: pointer; font-family: monospace; }
 .muted { color: #757575; } code { font-size: 90%; }
 form.actions { display: inline-flex; gap: .5em; }
</style>
</head>
<body>
<header><a class="brand" href="/">Volt CI</a><a href="/">Repositories</a><a href="/runners">Runners</a>
<a href="/rq/">rq-dashboard</a></header>
<main>
{% block main %}{% endblock %}
</main>
</body>
</html>
"""

INDEX = """{% extends "base.html" %}
{% block main %}
<h1>Repositories</h1>
<p class="muted">{{ queued }} queued, {{ running|length }} running</p>
{% if not repos %}<p>No repository is watched yet. Start one with <code>volt-observe --repo PATH</code>.</p>{% endif %}
<table id="repos">
<tr><th>repository</th><th>latest</th><th>commit</th><th>branch</th><th>subject</th><th>badge</th></tr>
{% for r in repos %}
<tr>
 <td><a href="/repo/{{ r.name }}">{{ r.name }}</a></td>
 {% if r.latest %}
 <td><span class="status {{ r.latest.status.value }}">{{ r.latest.status.value }}</span></td>
 <td><a href="/build/{{ r.name }}/{{ r.latest.commit }}"><code>{{ r.latest.short }}</code></a></td>
 <td>{{ r.latest.branch }}</td><td>{{ r.latest.subject }}</td>
 {% else %}<td colspan="4" class="muted">no builds yet</td>{% endif %}
 <td><img alt="status of {{ r.name }}" src="/badge/{{ r.name }}.svg"></td>
</tr>
{% endfor %}
</table>
{% endblock %}
"""

REPO = """{% extends "base.html" %}
{% block title %}{{ repo }} · Volt CI{% endblock %}
{% block main %}
<h1>{{ repo }}</h1>
<p class="muted">{{ total }} build(s) · page {{ page }} of {{ pages }} ·
 badge: <code>/badge/{{ repo }}.svg</code> <img alt="status" src="/badge/{{ repo }}.svg"></p>
<table id="history">
<tr><th>status</th><th>commit</th><th>subject</th><th>author</th><th>branch</th><th>duration</th><th>tests</th><th>attempts</th></tr>
{% for b in builds %}
<tr>
 <td><span class="status {{ b.status.value }}">{{ b.status.value }}</span></td>
 <td><a href="/build/{{ repo }}/{{ b.commit }}"><code>{{ b.short }}</code></a></td>
 <td>{{ b.subject }}</td><td>{{ b.author }}</td><td>{{ b.branch }}</td>
 <td>{% if b.status.is_final %}{{ '%.1f'|format(b.duration_s) }} s{% endif %}</td>
 <td>{% if b.counts.total %}{{ b.counts.passed }}/{{ b.counts.total }}{% endif %}</td>
 <td>{{ b.attempt }}</td>
</tr>
{% endfor %}
</table>
<nav>
{% if page > 1 %}<a rel="prev" href="?page={{ page - 1 }}">← newer</a>{% endif %}
{% if page < pages %}<a rel="next" href="?page={{ page + 1 }}">older →</a>{% endif %}
</nav>
{% endblock %}
"""

BUILD = """{% extends "base.html" %}
{% block title %}{{ build.repo }} {{ build.short }} · Volt CI{% endblock %}
{% block main %}
<p><a id="history-link" href="/repo/{{ build.repo }}">← history of {{ build.repo }}</a></p>
<h1><span class="status {{ build.status.value }}" id="status">{{ build.status.value }}</span>
 {{ build.repo }} <code>{{ build.short }}</code></h1>
<p>{{ build.subject }} <span class="muted">— {{ build.author }} on {{ build.branch }}</span></p>
{% if build.reason %}<p id="reason"><strong>{{ build.reason }}</strong></p>{% endif %}
{% if build.first_failing %}<p id="first-failing">{{ build.first_failing.line() }} (its parent <code>{{ build.first_failing.parent[:10] }}</code> passed) <a href="/build/{{ build.repo }}/{{ build.first_failing.commit }}">its build</a></p>{% endif %}
<table>
<tr><th>tests</th><td id="counts">{{ build.counts.total }} total, {{ build.counts.passed }} passed,
 {{ build.counts.failed }} failed, {{ build.counts.errors }} errors, {{ build.counts.skipped }} skipped</td></tr>
<tr><th>commit</th><td><code>{{ build.commit }}</code></td></tr>
<tr><th>queued</th><td>{{ build.queued_at }}</td></tr>
<tr><th>started</th><td>{{ build.started_at or '—' }}</td></tr>
<tr><th>finished</th><td>{{ build.finished_at or '—' }}{% if build.status.is_final %} ({{ '%.2f'|format(build.duration_s) }} s){% endif %}</td></tr>
<tr><th>runner</th><td>{{ build.runner or '—' }}</td></tr>
</table>
{% if can_act %}
<form class="actions" method="post">
 <input type="password" name="token" placeholder="web token" aria-label="web token" required>
 {% if build.status.is_final %}<button formaction="/build/{{ build.repo }}/{{ build.commit }}/rebuild">Rebuild</button>
 {% else %}<button formaction="/build/{{ build.repo }}/{{ build.commit }}/cancel">Cancel</button>{% endif %}
</form>
{% endif %}
{% if bad %}
<h2>Failing tests ({{ bad|length }})</h2>
<div id="failing">
{% for t in bad %}
<details open><summary><span class="status {{ t.outcome.value }}">{{ t.outcome.value }}</span> {{ t.id }}</summary>
<pre class="traceback">{{ t.message }}</pre></details>
{% endfor %}
</div>
{% endif %}
<h2>Attempts</h2>
<table id="attempts">
<tr><th>#</th><th>state</th><th>runner</th><th>started</th><th>ended</th><th>why</th></tr>
{% for a in attempts %}
<tr><td>{{ a.number }}</td><td><span class="status {{ a.status or a.state.value }}">{{ a.status or a.state.value }}</span></td>
 <td>{{ a.runner }}{% if a.runner in runners %} <span class="muted">({{ 'alive' if runners[a.runner].alive else 'gone' }})</span>{% endif %}</td>
 <td>{{ a.started_at }}</td><td>{{ a.ended_at }}</td><td>{{ a.reason }}</td></tr>
{% endfor %}
</table>
<h2>Output{% if not build.status.is_final %} (live){% endif %}</h2>
{% if output_cut %}<p class="muted">The end of the output; <a href="/api/builds/{{ build.repo }}/{{ build.commit }}/log">all of it</a>.</p>{% endif %}
<pre id="log">{{ output or build.log_tail or '(nothing yet)' }}</pre>
{% if rest %}
<h2>Other tests</h2>
<table id="tests">
<tr><th>test</th><th>outcome</th><th>duration</th><th>note</th></tr>
{% for t in rest %}
<tr><td><code>{{ t.id }}</code></td><td><span class="status {{ t.outcome.value }}">{{ t.outcome.value }}</span></td>
 <td>{{ '%.3f'|format(t.duration_s) }} s</td><td>{{ t.message }}</td></tr>
{% endfor %}
</table>
{% if hidden %}<p class="muted">… and {{ hidden }} more: all of them are in <a href="/api/builds/{{ build.repo }}/{{ build.commit }}">the JSON report</a>.</p>{% endif %}
{% endif %}
{% endblock %}
"""

RUNNERS = """{% extends "base.html" %}
{% block title %}Runners · Volt CI{% endblock %}
{% block main %}
<h1>Runners</h1>
<table id="runners">
<tr><th>runner</th><th>state</th><th>host</th><th>pid</th><th>last heartbeat</th><th>working on</th></tr>
{% for r in runners %}
<tr><td>{{ r.name }}</td><td><span class="status {{ 'passed' if r.alive else 'cancelled' }}">{{ 'alive' if r.alive else 'gone' }}</span></td>
 <td>{{ r.host }}</td><td>{{ r.pid }}</td><td>{{ r.heartbeat_age_s }} s ago</td>
 <td>{% if r.build %}{{ r.build }} (attempt {{ r.attempt }}){% else %}<span class="muted">idle</span>{% endif %}</td></tr>
{% else %}<tr><td colspan="6" class="muted">no runner has sent a heartbeat</td></tr>
{% endfor %}
</table>
<h2>Recently lost attempts</h2>
<table id="lost">
<tr><th>when</th><th>build</th><th>attempt</th><th>runner</th><th>why</th><th>then</th></tr>
{% for l in lost %}
<tr><td>{{ l.lost_at }}</td><td><a href="/build/{{ l.repo }}/{{ l.commit }}"><code>{{ l.repo }} {{ l.commit[:10] }}</code></a></td>
 <td>{{ l.attempt }}</td><td>{{ l.runner }}</td><td>{{ l.reason }}</td><td>{{ l.then }}</td></tr>
{% else %}<tr><td colspan="6" class="muted">none</td></tr>
{% endfor %}
</table>
{% endblock %}
"""

ERROR = """{% extends "base.html" %}
{% block title %}{{ code }} {{ name }} · Volt CI{% endblock %}
{% block main %}
<h1>{{ code }} {{ name }}</h1>
<p id="message">{{ message }}</p>
<p><a href="/">Back to the repositories</a></p>
{% endblock %}
"""

BADGE = """<svg xmlns="http://www.w3.org/2000/svg" width="{{ label_width + status_width }}" height="20" role="img" aria-label="{{ label }}: {{ status }}">
<title>{{ label }}: {{ status }}</title>
<rect width="{{ label_width }}" height="20" fill="#555"/>
<rect x="{{ label_width }}" width="{{ status_width }}" height="20" fill="{{ colour }}"/>
<g fill="#fff" text-anchor="middle" font-family="Verdana,DejaVu Sans,sans-serif" font-size="11">
<text x="{{ label_width / 2 }}" y="14">{{ label }}</text>
<text x="{{ label_width + status_width / 2 }}" y="14">{{ status }}</text>
</g>
</svg>
"""

TEMPLATES = {"base.html": BASE, "index.html": INDEX, "repo.html": REPO, "build.html": BUILD,
             "runners.html": RUNNERS, "error.html": ERROR, "badge.svg.html": BADGE}
