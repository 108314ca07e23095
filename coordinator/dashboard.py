"""The dashboard page (``GET /``): one static HTML page that reads
``/v1/cluster`` every two seconds and draws shards and nodes as tables."""

from __future__ import annotations

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>slotkeeper</title>
<style>
 body { font: 14px system-ui, sans-serif; margin: 1.5em; color: #222; }
 h1 { font-size: 1.3em; } h2 { font-size: 1.05em; margin-top: 1.5em; }
 table { border-collapse: collapse; } td, th { padding: .25em .7em; border-bottom: 1px solid #ddd;
 text-align: left; font-variant-numeric: tabular-nums; } th { background: #f4f4f4; }
 .online { color: #176c2c; } .loading { color: #a46a00; } .fail { color: #b3261e; font-weight: bold; }
 .muted { color: #888; } code { font-size: 12px; }
</style></head>
<body>
<h1>slotkeeper <span id="cluster"></span></h1>
<div id="summary" class="muted">loading…</div>
<h2>Shards</h2><table id="shards"></table>
<h2>Nodes</h2><table id="nodes"></table>
<h2>Recent history</h2><table id="history"></table>
<script>
const esc = s => String(s ?? "").replace(/[&<>"]/g, c => ({"&":"&amp;","<":"&lt;",">":"&gt;",'"':"&quot;"}[c]));
const id8 = s => s ? `<code title="${esc(s)}">${esc(s.slice(0, 8))}</code>` : "";
function table(el, head, rows) {
  el.innerHTML = "<tr>" + head.map(h => `<th>${h}</th>`).join("") + "</tr>" +
    rows.map(r => "<tr>" + r.map(c => `<td>${c}</td>`).join("") + "</tr>").join("");
}
async function refresh() {
  try {
    const c = await (await fetch("v1/cluster")).json();
    document.getElementById("cluster").textContent = c.cluster;
    const lead = c.leader ? `${esc(c.leader.id)} (${esc(c.leader.api)})` : "none";
    document.getElementById("summary").innerHTML =
      `epoch <b>${c.epoch}</b> · leader ${lead} · ${c.shards.length} shards · ${c.nodes.length} nodes` +
      (c.paused ? " · <b>paused</b>" : "");
    table(document.getElementById("shards"), ["shard", "slots", "primary", "replicas", "sync", "lease"],
      c.shards.map(s => [id8(s.id), s.slots.map(r => r[0] === r[1] ? r[0] : `${r[0]}-${r[1]}`).join(" "),
        id8(s.primary), s.replicas.map(id8).join(" "), s.sync_replicas.map(id8).join(" "),
        s.lease ? id8(s.lease) : '<span class="fail">none</span>']));
    table(document.getElementById("nodes"),
      ["node", "address", "zone", "shard", "role", "state", "health", "flags", "offset", "lag"],
      c.nodes.map(n => [id8(n.id), esc(`${n.addr}:${n.port}`), esc(n.zone), id8(n.shard), esc(n.role),
        esc(n.state), `<span class="${esc(n.health)}">${esc(n.health)}</span>`,
        [n.hidden ? "hidden" : "", n.nofailover ? "nofailover" : "", n.priority ? `prio ${n.priority}` : "",
         n.alive ? "" : "gone"].filter(Boolean).join(" "),
        n.status ? n.status.repl_offset : "", n.lag ?? ""]));
    const h = await (await fetch("v1/history?limit=10")).json();
    table(document.getElementById("history"), ["epoch", "time", "kind", "why"],
      h.history.map(e => [e.epoch, new Date(e.time * 1000).toLocaleTimeString(), esc(e.kind), esc(e.why)]));
  } catch (e) {
    document.getElementById("summary").textContent = "coordinator unreachable: " + e;
  }
}
refresh(); setInterval(refresh, 2000);
</script>
</body></html>
"""

__all__ = ["PAGE"]
