"""The nightly report's page: one self-contained HTML file (inline CSS, inline SVG, no script).

`string.Template` on purpose: every value substituted here is a fragment that `build` has
already escaped, so the template engine needs no escaping rules of its own.
"""

from __future__ import annotations

from string import Template

PAGE = Template(
    """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy"
      content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">
<title>$title</title>
<style>
:root { --ink:#0f172a; --muted:#64748b; --line:#e2e8f0; --bg:#f8fafc; --card:#ffffff;
        --critical:#b91c1c; --high:#ea580c; --medium:#ca8a04; --low:#2563eb; --good:#15803d; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--ink);
       font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif; }
header { background:#0f172a; color:#f8fafc; padding:20px 32px; }
header h1 { margin:0; font-size:22px; font-weight:650; }
header p { margin:4px 0 0; color:#cbd5e1; }
main { max-width:1180px; margin:0 auto; padding:24px 32px 48px; }
section { margin-top:28px; }
h2 { font-size:17px; margin:0 0 10px; border-bottom:1px solid var(--line); padding-bottom:6px; }
.cards { display:grid; grid-template-columns:repeat(auto-fit,minmax(170px,1fr)); gap:12px; }
.card { background:var(--card); border:1px solid var(--line); border-radius:8px;
        padding:12px 14px; }
.card .label { color:var(--muted); font-size:12px; text-transform:uppercase; letter-spacing:.04em; }
.card .value { font-size:24px; font-weight:650; margin-top:2px; }
.card .sub { color:var(--muted); font-size:12px; }
.grid2 { display:grid; grid-template-columns:repeat(auto-fit,minmax(420px,1fr)); gap:16px; }
.panel { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:14px; }
table { border-collapse:collapse; width:100%; background:var(--card); }
th, td { text-align:left; padding:5px 8px; border-bottom:1px solid var(--line);
         vertical-align:top; }
th { font-size:12px; color:var(--muted); font-weight:600; background:#f1f5f9; }
td.num, th.num { text-align:right; font-variant-numeric:tabular-nums; }
.mono { font-family:ui-monospace,SFMono-Regular,Menlo,monospace; font-size:12px;
        word-break:break-all; }
.nowrap { white-space:nowrap; }
.sev { display:inline-block; padding:0 7px; border-radius:9px; color:#fff; font-size:11px;
       font-weight:600; text-transform:uppercase; }
.sev-critical { background:var(--critical); } .sev-high { background:var(--high); }
.sev-medium { background:var(--medium); } .sev-low { background:var(--low); }
.rate { display:flex; align-items:center; gap:8px; }
.rate .track { width:90px; flex:none; height:8px; background:var(--line); border-radius:4px;
               overflow:hidden; }
.rate .fill { height:100%; background:var(--good); }
.up { color:var(--critical); } .down { color:var(--good); }
.note { color:var(--muted); font-size:12px; }
svg.chart { display:block; max-width:100%; height:auto; }
footer { color:var(--muted); font-size:12px; margin-top:36px; }
</style>
</head>
<body>
<header>
<h1>$title</h1>
<p>Built $built_at · business date $business_date · $previous_line</p>
</header>
<main>
<section id="summary">
<div class="cards">$cards</div>
</section>
<section id="changes">
<h2>What changed since the previous report</h2>
$changes
</section>
<section id="charts">
<h2>The day by hour (UTC)</h2>
<div class="panel">$volume_chart</div>
<div class="panel" style="margin-top:12px">$breaks_chart</div>
<h2 style="margin-top:24px">Net fees</h2>
<div class="grid2">
<div class="panel">$fees_account_chart</div>
<div class="panel">$fees_market_chart</div>
</div>
</section>
<section id="events">
<div class="grid2">
<div><h2>Events per source</h2>$events_table</div>
<div><h2>Match rates</h2>$match_table</div>
</div>
</section>
<section id="breaks">
<div class="grid2">
<div><h2>Breaks of the day by kind</h2>$kinds_table</div>
<div><h2>Open breaks by age</h2>$age_table</div>
</div>
</section>
<section id="open-breaks">
<h2>Open breaks</h2>
$open_table
</section>
<section id="gaps">
<h2>Stream and feed gaps</h2>
<p class="note">Windows in which ingest was disconnected and may have missed events.</p>
$gaps_table
</section>
<footer>The same data: $files. polyrecon nightly reconciliation report.</footer>
</main>
</body>
</html>
"""
)
