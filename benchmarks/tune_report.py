"""The tune step's report: tune.json (everything measured), tune.md (built only from that JSON) and
tune.png (served throughput against p99 for every candidate, the budget as a line)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path


def write(result: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "tune.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "tune.md").write_text(markdown(result))
    plot(result, out / "tune.png")


def _flags(host: dict) -> str:
    return ", ".join(host["flags"]) or "none of the tracked ones"


def markdown(r: dict) -> str:
    o, host = r["options"], r["host"]
    lines = [
        f"# Tune: {r['model']} on {host['cpu_model']} ({host['cores']} cores)",
        "",
        f"{r['started']}; {r['seconds']:.0f} s. CPU flags: {_flags(host)}; GPU: {host['gpu'] or 'none'}. "
        f"Commit {r['environment']['git_commit']}.",
        f"Reproduce: `{r.get('command', 'python -m benchmarks.tune --model ' + r['model'])}`.",
        "",
        f"Objective: the highest served throughput (JPEG in, closed loop, concurrency {o['concurrency']}, "
        f"{o['images_per_request']} image(s) per request, client on the same cores) whose median p99 stays within "
        f"{o['p99_budget_ms']:g} ms; {o['repeats']} repeats of {o['duration_s']:g} s per candidate, interleaved.",
        "",
        f"**Verdict: {r['verdict']}**" + (f" — winner: {r['winner']['label']}" if r["winner"] else ""),
        "",
    ]
    if r.get("ratios"):
        if r.get("ratios_of", "winner") != "winner":
            lines += [f"No winner was chosen; the ratios below are those of the {r['ratios_of']}.", ""]
        ranges = r.get("ratio_ranges", {})
        lines += ["| ratio | value | per-round range |", "|---|---:|---|"]
        lines += [
            f"| {k.replace('_', ' ')} | {v:.2f}x | "
            + (f"{ranges[k][0]:.2f}-{ranges[k][1]:.2f}x |" if k in ranges else "- |")
            for k, v in r["ratios"].items()
        ]
        rounds = ", ".join(f"{n} for {k.replace('_', ' ')}" for k, n in r.get("ratios_paired_rounds", {}).items())
        h2h = r.get("head_to_head")
        if h2h:
            first = h2h["candidates"][0]
            stage = ", ".join(f"{k.replace('_', ' ')} {v:.2f}x" for k, v in h2h["stage_ratios"].items())
            lines += [
                "",
                f"Ratios to the references: measured head to head after the stages, the {r['ratios_of'].split(':')[0]} "
                f"and the references alone on one server, {h2h['rounds']} interleaved rounds of "
                f"{h2h['duration_s']:g} s (seconds apart, so "
                f"a machine whose speed drifts meets each pair alike); the median of the per-round ratios ({rounds}). "
                f"From the stages' rounds (minutes apart) the same ratios were: {stage}.",
                "",
                "| head to head | role | "
                + " | ".join(f"round {x['round']} img/s" for x in first["runs"])
                + " | p99 ms (median) | CPU us/image (median) | cores busy (median) |",
                "|---|---|" + "---:|" * (len(first["runs"]) + 3),
            ]
            cores = host["cores"]
            for c in h2h["candidates"]:
                p99 = f"{c['latency_ms_p99']:.1f}" if c["latency_ms_p99"] is not None else "-"
                measured = [x for x in c["runs"] if x.get("cpu_us_per_image")]
                cpu = [sum(x["cpu_us_per_image"].values()) for x in measured]
                busy = [x["throughput_img_s"] * us / 1e6 for x, us in zip(measured, cpu, strict=True)]
                lines.append(
                    f"| {c['label']} | {c['role'] or r['ratios_of'].split(':')[0]} | "
                    + " | ".join(f"{x['throughput_img_s']:,.0f}" for x in c["runs"])
                    + f" | {p99} | {f'{statistics.median(cpu):,.0f}' if cpu else '-'} "
                    + f"| {f'{statistics.median(busy):.2f} of {cores}' if busy else '-'} |"
                )
            lines += [
                "",
                "CPU per image: client + tritonserver + model processes; cores busy: the CPU seconds they spent "
                "per second (throughput x CPU per image), so a ratio of two throughputs is the inverse ratio of their "
                "CPU per image times the ratio of their cores busy. The serving floor is the leader's input "
                "form, protocol, batching and instances with a model that answers zeros (`server/models/floor.py`; for "
                "an ensemble leader the one-step BYTES form, one Python-backend hop instead of two): the ceiling the "
                "client, the server and the Python-backend hop leave on this host.",
            ]
            split = h2h.get("cpu_us_per_image")
            if split:
                who = "winner" if r["ratios_of"] == "winner" else "leader"
                lines += [
                    "",
                    f"Where the {who}'s CPU per image goes: {split['leader']:,.0f} us served = the serving floor "
                    f"{split['serving_floor']:,.0f} + the model's own work {split['work_offline']:,.0f} (decode, "
                    f"preprocess and engine measured apart, same engine and threads, batch {split['work_batch']}, "
                    f"the engine's average in the head to head) + {split['lost_sharing_cores']:,.0f} lost to the "
                    "processes taking turns on the same cores. A path that spent only floor + work would serve at "
                    f"most about {split['ceiling_over_untuned_default']:.2f}x the untuned default "
                    f"({split['untuned_default']:,.0f} us per image) on this host.",
                ]
                if "engine_calls" in split:  # reports made before the work was split by thread have none
                    lines[-1] += (
                        f" The work, by thread: decoding and preprocessing {split['decode_preprocess']:,.0f}, "
                        f"the engine's calls {split['engine_calls']:,.0f}, and "
                        f"{split['engine_waiting_between_calls']:,.0f} that the engine's threads spent between "
                        "its calls while the next batch was decoded (they wait actively: `python -m "
                        "benchmarks.idle_wait`); a path whose engine did not wait so would reach about "
                        f"{split['ceiling_without_engine_waiting']:.2f}x."
                    )
        else:
            lines += [
                "",
                f"Ratios to the references: the median over the rounds in which both ran ({rounds}; the references "
                "are measured again beside stage 2), so a machine whose speed drifts between rounds does not tilt "
                "them.",
            ]
        lines.append("")
    held = r["held_out"]
    lines += [
        f"## Accuracy ({held['images']} held-out images from {held['source']}, "
        f"{'labelled' if held['labelled'] else 'unlabelled'}; weights: {r['weights']})",
        "",
        "| engine | top-1 agreement with FP32 | top-1 delta (points) | min logit cosine | servable | why |",
        "|---|---:|---:|---:|---|---|",
    ]
    for a in r["accuracy"].values():
        delta = f"{a['top1_delta_pct']:+.2f}" if "top1_delta_pct" in a else "-"
        lines.append(
            f"| {a['engine']} | {a['top1_agreement_pct']:.2f}% | {delta} | {a['min_logit_cosine']:.4f} | "
            f"{'yes' if a['ok'] else 'no'} | {a['why']} |"
        )
    lines += [
        "",
        "## Offline (same images, same threads)",
        "",
        "| engine | batch | threads | engine only img/s | end to end img/s (decode + preprocess + engine) "
        "| end to end CPU us/image |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for engine, f in r["offline"].items():
        cpu = f.get("end_to_end_cpu_us_per_image")
        lines.append(
            f"| {engine} | {f['batch']} | {f['threads']} | {f['engine_img_s']:,.0f} | {f['end_to_end_img_s']:,.0f} "
            f"| {'-' if cpu is None else f'{cpu:,.0f}'} |"
        )
    lines += [
        "",
        "## Served candidates",
        "",
        "| candidate | role | img/s (median) | p99 ms (median) | repeat spread "
        "| CPU us/image (client / server / models) | verdict |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    for c in sorted(r["candidates"], key=lambda c: -c["throughput_img_s"]):
        cpu = c["runs"][-1]["cpu_us_per_image"] if c["runs"] else {}
        cpu_text = " / ".join(f"{cpu.get(k, 0):.0f}" for k in ("client", "server", "models"))
        p99 = f"{c['latency_ms_p99']:.1f}" if c["latency_ms_p99"] is not None else "-"
        lines.append(
            f"| {c['label']} | {c['role'] or ''} | {c['throughput_img_s']:,.0f} | {p99} | "
            f"{c['repeat_spread_pct']:.0f}% | {cpu_text} | {c['verdict']} |"
        )
    lines += [
        "",
        "Paths: `ensemble` = preprocess model -> classifier model (two Python-backend hops); `direct` = one model "
        "decodes, preprocesses and runs the engine (BYTES input); `direct-raw` = the same with one JPEG per request "
        "as UINT8 bytes (ragged batching, no BYTES deserialisation). Protocols: `grpc` = tritonclient's grpc.aio "
        "(the client's default); `http` = the client's lean HTTP/1.1 wire (`client/wire.py`, what `AsyncClassifier` "
        "sends over HTTP). `AxBt` = A classifier instances of B engine threads; `/Cs` = each instance's batch "
        "cut into C parts run side by side on OpenVINO streams of B/C threads (`engines/openvino.py`); `delay` = the "
        "dynamic batcher's "
        "window; `pref` = preferred batch sizes. CPU per image: the load generator (client), tritonserver (server) "
        "and the model processes (models), from /proc over the measured run.",
        "",
    ]
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    markers = {"ensemble": "o", "direct": "s", "direct-raw": "^"}
    for c in result["candidates"]:
        if c["latency_ms_p99"] is None:
            continue
        won = result["winner"] and c["label"] == result["winner"]["label"]
        ax.scatter(
            c["latency_ms_p99"],
            c["throughput_img_s"],
            marker=markers.get(c["path"], "o"),
            s=90 if won or c["role"] else 40,
            color="tab:green" if won else ("tab:red" if c["role"] else "tab:blue"),
            alpha=0.9,
        )
        if won or c["role"]:
            ax.annotate(
                "winner" if won else c["role"],
                (c["latency_ms_p99"], c["throughput_img_s"]),
                fontsize=8,
                xytext=(5, 5),
                textcoords="offset points",
            )
    budget = result["options"]["p99_budget_ms"]
    ax.axvline(budget, color="gray", linestyle="--", label=f"p99 budget {budget:g} ms")
    for request_path, marker in markers.items():
        ax.scatter([], [], marker=marker, color="tab:blue", label=request_path)
    ax.set_xlabel("p99 latency (ms, median of repeats)")
    ax.set_ylabel("served images/s (median of repeats)")
    o, host = result["options"], result["host"]
    ax.set_title(
        f"{result['model']}: candidates at concurrency {o['concurrency']}, {o['images_per_request']} img/request\n"
        f"{host['cpu_model']}, {host['cores']} cores",
        fontsize=10,
    )
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
