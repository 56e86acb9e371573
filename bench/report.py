"""bench/run.py's report: the table of figures, ratios and targets, CPU per task, rounds."""

from __future__ import annotations

from typing import Any


def verdict(ok: bool | None) -> str:
    return "" if ok is None else "PASS" if ok else "MISS"


def cpu_line(cpu: dict[str, float]) -> str:
    parts = [f"{k} {v:.0f}" for k, v in cpu.items() if k != "commands" or v >= 1]
    return ", ".join(parts) + f"; total {sum(cpu.values()):.0f}"


def table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    out = []
    for i, row in enumerate(rows):
        out.append("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |")
        if i == 0:
            out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return out


def header(res: dict) -> list[str]:
    m, nan = res["meta"], float("nan")
    return [
        "## para bench",
        "",
        f"command:  {m['command']}",
        f"machine:  {m['cpu_count']} CPUs, {m['platform']}, Python {m['python']}",
        f"versions: pyzmq {m['pyzmq']}, libzmq {m['libzmq']}, msgpack {m['msgpack']}, para {m['para_commit']}",
        f"load:     load avg at start {m['loadavg']}; during the run the machine was "
        f"{m.get('machine_busy_pct', nan):.0f}% busy (this bench and its children "
        f"{m.get('bench_cpu_pct', nan):.0f}%), steal {m.get('steal_pct', nan):.0f}%",
        f"daemon:   echo pool 2 workers, bash pool {m['bash_workers']} workers, grep pool default, "
        f"ready in {m['ready_s']:.2f}s",
        f"mode:     {m['mode']}; para and its peers alternate round by round; figures are medians "
        f"over rounds, ratios medians of per-round ratios; wall {m['wall_s']:.1f}s",
        "",
    ]


def echo_rows(res: dict) -> list[tuple[str, ...]]:
    f, r, t, ok = res["figures"], res["ratios"], res["targets"], res["pass"]
    lat, raw, relay = f["echo_latency_para"], f["echo_latency_raw_reqrep"], f["echo_latency_raw_relay"]
    et, rt = f["echo_tput_para"], f["echo_tput_raw_pipelined"]
    rows = [
        ("echo run() round trip p50", f"{lat['p50_us']:.0f} us", f"raw 2-hop relay {relay['p50_us']:.0f} us",
         f"{r['echo_latency_p50_vs_relay']:.2f}x", f"<= {t['latency_vs_relay_max']:g}x {verdict(ok['echo_latency'])}"),
        ("echo run() round trip p50", f"{lat['p50_us']:.0f} us", f"raw REQ/REP {raw['p50_us']:.0f} us",
         f"{r['echo_latency_p50_vs_raw']:.2f}x", "(info)"),
        ("echo run() round trip p99", f"{lat['p99_us']:.0f} us", f"raw REQ/REP {raw['p99_us']:.0f} us",
         f"{r['echo_latency_p99_vs_raw']:.2f}x", "(info)"),
    ]
    for name, label in (("ray", "Ray ray.get(noop.remote())"), ("dask", "Dask submit(noop).result()")):
        if name in f:
            fw = f[name]
            rows.append((f"echo run() p50 ({label.split()[0]} rounds)", f"{fw['para_echo_latency']['p50_us']:.0f} us",
                         f"{label} {fw['noop_latency']['p50_us']:.0f} us",
                         f"{r[f'echo_latency_p50_vs_{name}_noop']:.2f}x", "(info)"))
    rows.append((f"echo map(), {et['tasks']:,} tasks", f"{et['per_s']:,.0f} /s", f"raw DEALER/ROUTER {rt['per_s']:,.0f} /s",
                 f"{r['echo_tput_vs_raw']:.2f}x", f">= {t['echo_tput_min']:,.0f}/s {verdict(ok['echo_tput'])}"))
    return rows


def bash_rows(res: dict) -> list[tuple[str, ...]]:
    f, r, t, ok, n = res["figures"], res["ratios"], res["targets"], res["pass"], res["meta"]["bash_workers"]
    bt = f["bash_tput_para"]
    label, para = f"bash -c true map(), {bt['tasks']:,}", f"{bt['per_s']:,.0f} /s"
    peers = [("xargs", f"xargs -P {n}", "bash_vs_xargs_min", "bash_vs_xargs"),
             ("gnu_parallel", f"GNU parallel -j {n}", "bash_vs_parallel_min", "bash_vs_gnu_parallel"),
             ("bwrap_minimal", f"xargs -P {n} minimal bwrap", "bash_vs_bwrap_min", "bash_vs_bwrap"),
             ("bwrap_per_command", f"xargs -P {n} bwrap, a worker's mounts", None, None),
             ("floor", "relay + spawn floor", None, None)]
    rows = []
    for key, name, target, check in peers:
        if f"bash_tput_{key}" in f:
            rows.append((label, para, f"{name} {f[f'bash_tput_{key}']['per_s']:,.0f} /s", f"{r[f'bash_tput_vs_{key}']:.2f}x",
                         f">= {t[target]:g}x {verdict(ok[check])}" if target else "(info)"))
    for name, peer in (("ray", "Ray subprocess.run tasks"), ("dask", "Dask subprocess.run tasks")):
        if name in f:
            fw = f[name]
            rows.append((f"{label} ({peer.split()[0]} rounds)", f"{fw['para_bash_tput']['per_s']:,.0f} /s",
                         f"{peer} {fw['bash_tput']['per_s']:,.0f} /s", f"{r[f'bash_tput_vs_{name}']:.2f}x", "(info)"))
    own = f["bash_cpu_own_us"]
    rows.append(("para's own CPU per bash task", f"{own['para']:.0f} us", f"floor's {own['floor']:.0f} us",
                 f"{r['bash_cpu_vs_floor']:.2f}x", f"<= {t['bash_cpu_vs_floor_max']:g}x {verdict(ok['bash_cpu_vs_floor'])}"))
    return rows


def other_rows(res: dict) -> list[tuple[str, ...]]:
    f, r, t, ok = res["figures"], res["ratios"], res["targets"], res["pass"]
    s, g = f.get("sleep64"), f.get("grep")
    rows = [] if s is None else [
        (f"{s['tasks']} concurrent {s['command']}, default config", f"{s['wall_s']:.2f} s",
         f"{s['workers']} bash workers (pool {s['pool']['min_workers']}-{s['pool']['max_workers']}"
         + ("; host pressure held growth)" if s["pressure"] and s["workers"] < s["pool"]["max_workers"] else ")"), "",
         f"<= {t['sleep64_wall_max_s']:g} s {verdict(ok['sleep64_wall'])}"),
        ("  para's own PSS meanwhile", f"{s['pss_mb']:.0f} MB", f"{s['rounds'][0]['processes']} processes", "",
         f"< {t['sleep64_pss_max_mb']:g} MB {verdict(ok['sleep64_pss'])}"),
    ]
    if g:
        rows.append((f"grep, {len(g['patterns'])} patterns, map()", f"{g['para']['seconds']:.3f} s",
                     f"{len(g['patterns'])} rg --json at once {g['rg']['seconds']:.3f} s", f"{r['grep_vs_rg']:.2f}x",
                     f">= {t['grep_vs_rg_min']:g}x {verdict(ok['grep_vs_rg'])}"))
    return rows


def floor_rows(res: dict) -> list[str]:
    f, r, t, n = res["figures"], res["ratios"], res["targets"], res["meta"]["bash_workers"]
    relay, raw, ft, xt = (f["echo_latency_raw_relay"], f["echo_latency_raw_reqrep"], f["bash_tput_floor"],
                          f["bash_tput_xargs"])
    return table([
        ("floor", "measured", "peer, same rounds", "ratio", "target it bounds"),
        ("raw 2-hop relay round trip p50", f"{relay['p50_us']:.0f} us", f"raw REQ/REP {raw['p50_us']:.0f} us",
         f"{r['echo_latency_relay_vs_raw']:.2f}x", "(reference of echo p50)"),
        (f"relay + spawn, {ft['tasks']:,} bash -c true", f"{ft['per_s']:,.0f} /s", f"xargs -P {n} {xt['per_s']:,.0f} /s",
         f"{r['bash_floor_vs_xargs']:.2f}x", f"bash >= {t['bash_vs_xargs_min']:g}x xargs"),
    ])


def cpu_lines(res: dict) -> list[str]:
    f = res["figures"]
    lines = [
        "CPU per task, us (user+sys, all threads, timed rounds only):",
        f"  echo run():  {cpu_line(f['echo_latency_para']['cpu_us_per_task'])}",
        f"  echo map():  {cpu_line(f['echo_tput_para']['cpu_us_per_task'])}",
        f"  bash map():  {cpu_line(f['bash_tput_para']['cpu_us_per_task'])}",
    ]
    for key, name in (("xargs", "xargs"), ("gnu_parallel", "parallel"), ("bwrap_minimal", "bwrap-min"), ("bwrap_per_command", "bwrap")):
        if f"bash_tput_{key}" in f:
            lines.append(f"  {name + ':':<12} {name} + bash {f[f'bash_tput_{key}']['cpu_us_per_task']['total']:.0f}")
    lines.append(f"  floor:       {cpu_line(f['bash_tput_floor']['cpu_us_per_task'])}")
    return lines


def round_lines(res: dict) -> list[str]:
    f = res["figures"]
    lat, raw, relay = f["echo_latency_para"], f["echo_latency_raw_reqrep"], f["echo_latency_raw_relay"]
    bash = " / ".join(f"{k} {f[f'bash_tput_{k}']['rounds_per_s']}"
                      for k in ("para", "xargs", "gnu_parallel", "bwrap_minimal", "bwrap_per_command", "floor") if f"bash_tput_{k}" in f)
    lines = [
        "rounds:",
        f"  run() p50 para {lat['rounds_p50_us']} / relay {relay['rounds_p50_us']} / REQ-REP {raw['rounds_p50_us']} us",
        f"  run() p99 para {lat['rounds_p99_us']} / REQ-REP {raw['rounds_p99_us']} us",
        f"  echo map() {f['echo_tput_para']['rounds_per_s']} / raw pipelined {f['echo_tput_raw_pipelined']['rounds_per_s']} per s",
        f"  bash map() {bash} per s",
    ]
    if "sleep64" in f:
        lines.append(f"  sleep64 {[(r['wall_s'], r['pss_mb'], r['workers']) for r in f['sleep64']['rounds']]} (s, MB, workers)")
    if "grep" in f:
        lines.append(f"  grep para {f['grep']['para']['rounds_s']} / rg {f['grep']['rg']['rounds_s']} s")
    for name in ("ray", "dask"):
        if name in f:
            fw = f[name]
            lines.append(f"  {name} {fw['version']}: bash para {fw['para_bash_tput']['rounds_per_s']} / {name} "
                         f"{fw['bash_tput']['rounds_per_s']} per s; p50 para {fw['para_echo_latency']['rounds_p50_us']}"
                         f" / {name} {fw['noop_latency']['rounds_p50_us']} us")
    return lines


def report(res: dict[str, Any]) -> str:
    """The whole report as text."""
    f, m, g = res["figures"], res["meta"], res["figures"].get("grep")
    lines = header(res)
    lines += table([("figure", "para", "peer / floor, same rounds", "ratio", "target"),
                    *echo_rows(res), *bash_rows(res), *other_rows(res)])
    lines += ["", "Floors of para's shape, with no para code (see bench/README.md). para's code only adds to",
              "them: a floor at or near a target leaves no room for any Python supervisor relaying to Python workers.",
              ""]
    lines += floor_rows(res)
    lines += ["", *cpu_lines(res), "", *round_lines(res), ""]
    for key, name in (("xargs", "xargs"), ("gnu_parallel", "parallel"), ("bwrap_minimal", "bwrap-min"), ("bwrap_per_command", "bwrap")):
        if f"bash_tput_{key}" in f:
            cmd = f[f"bash_tput_{key}"]["command"]
            lines.append(f"{name + ':':<9} {cmd if len(cmd) < 200 else cmd[:120] + ' ... ' + cmd[-40:]}")
    if g:
        lines.append(f"grep:     {g['root']} ({g['files']:,} files, {g['bytes'] / 1e6:,.0f} MB); patterns {g['patterns']}; "
                     f"matching lines para {g['para']['matches']}, rg {g['rg']['matches']}")
        lines.append(f"rg:       {g['rg']['command']}")
    if m.get("gnu_parallel"):
        lines.append(f"GNU:      {m['gnu_parallel']}")
    for note in res["notes"]:
        lines.append(f"note:     {note}")
    return "\n".join(lines)
