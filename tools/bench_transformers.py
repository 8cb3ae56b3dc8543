"""Transformers: peers at equal FLOPs, side by side in one run (issue 12 item 8).

    python tools/bench_transformers.py
    python tools/bench_transformers.py --models vit_digits --keeps 0.5

For vit_digits and text_encoder and each keep (0.5, 0.3 of the heads and of the other units),
scmopt (curvature + fold) is run first; its compiled model's FLOPs (scmopt.ops.cost.count_flops
on one test sample) are the budget every peer is brought to (within 1%): scmopt's own `--flops`
rule (risk per FLOP saved; swap p 0.5 and 0.1), FLAP-style, Kwon-style
(with and without the least-squares rescaling), onnxsim 0.8.1 head / FFN pruning (with and
without its ridge refit) and scmopt variance (its own keep; FLOPs not matched) as the internal
baseline. Peers are in tools/peers/transformer_peers.py. Everything is measured on the test
split: top-1 agreement with the original, accuracy, FLOPs ratio, parameters, onnxruntime CPU
latency at batch 32 (median of 100 runs after 5 warm-up runs, interleaved across models in 10
rounds, and the lowest round median; 1 and 2 intra-op threads, the same session options for
all: tools/benchlib.session; "before" is the zoo's ONNX file as exported). FLOPs of models with
fused com.microsoft::Attention nodes (onnxsim's head pruning needs them) are counted on the
decomposed graph from their head and neuron counts (transformer_peers.structural_flops).
Writes benchmarks/transformers.{json,csv}.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as B  # noqa: E402
import numpy as np  # noqa: E402
import onnx  # noqa: E402
from peers import transformer_peers as TP  # noqa: E402

from scmopt import units  # noqa: E402
from scmopt.ops import cost  # noqa: E402

KEEPS = [0.5, 0.3]
MODEL_TYPE = {"vit_digits": "vit", "text_encoder": "bert"}


def latency(
    models: dict, feeds: dict, batch: int, threads: int, runs: int = 100, rounds: int = 10
) -> dict[str, dict]:
    """onnxruntime CPU latency per model (benchlib.session options), runs interleaved across
    models in `rounds`: median over all runs, and the lowest round median (robust to other
    jobs on a shared machine), load average at the end."""
    import os

    n = len(next(iter(feeds.values())))
    reps = -(-batch // n)
    x = {k: np.ascontiguousarray(np.concatenate([v] * reps)[:batch]) for k, v in feeds.items()}
    sess = {k: B.session(m, threads) for k, m in models.items()}
    for s in sess.values():
        for _ in range(5):
            s.run(None, x)
    times: dict[str, list[list[float]]] = {k: [] for k in models}
    per = max(1, runs // rounds)
    for _ in range(rounds):
        for k, s in sess.items():
            ts = []
            for _ in range(per):
                t0 = time.perf_counter()
                s.run(None, x)
                ts.append(time.perf_counter() - t0)
            times[k].append(ts)
    load = os.getloadavg()[0]
    return {k: {"median_ms": float(np.median(np.concatenate(v)) * 1e3),
                "best_round_median_ms": float(min(np.median(r) for r in v) * 1e3),
                "runs": per * rounds, "load1": load} for k, v in times.items()}  # fmt: skip


def survivors(tu: TP.TUnits, ug, plan) -> dict:
    """Surviving heads and FFN neurons per layer (and other prunable cuts) of a plan."""
    removed = plan.removed
    out = {"heads_per_layer": [], "ffn_neurons_per_layer": [], "other_cuts": {}}
    for c, cut in ug.cuts.items():
        ids = list(dict.fromkeys(cut.units))
        if not all(ug.units[u].prunable for u in ids):
            continue
        kept = sum(u not in removed for u in ids)
        if c in tu.kind:
            key = "heads_per_layer" if tu.kind[c] == "head" else "ffn_neurons_per_layer"
            out[key].append(kept)
        else:
            out["other_cuts"][c] = f"{kept}/{len(ids)}"
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=["vit_digits", "text_encoder"])
    ap.add_argument("--keeps", nargs="*", type=float, default=KEEPS)
    ap.add_argument("--criteria", nargs="*", default=["variance"])
    ap.add_argument("--fisher-samples", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--name", default="transformers")
    ap.add_argument("--tables", action="store_true", help="print the markdown tables and exit")
    ap.add_argument(
        "--pairwise-latency",
        action="store_true",
        help="re-run scmopt and time it against the export alone (3 sessions), "
        "stored in the JSON's meta.latency_pairwise",
    )
    args = ap.parse_args()
    if args.tables:
        print(tables(B.OUT / f"{args.name}.json"))
        return
    if args.pairwise_latency:
        pairwise_latency(args)
        return
    t_start = time.perf_counter()
    rows: list[dict] = []
    meta: dict = {
        "keeps": args.keeps,
        "models": {},
        "latency": "batch 32, median of 100 runs after 5 warm-up, 10 interleaved "
        "rounds, ORT_ENABLE_ALL, intra_op 1 and 2, inter_op 1; before = zoo file",
    }
    for name in args.models:
        t_model = time.perf_counter()
        original = B.load_model(name)
        ug = units.analyze(original)
        calib, ycal = B.split(name, "calib")
        test, y = B.split(name, "test")
        sample = {k: v[:1] for k, v in test.items()}
        seq = next(iter(test.values())).shape[1] if name == "text_encoder" else None
        tu = TP.TUnits.build(ug, sample)
        seq = seq or ug.cuts[tu.cuts[0]].spatial[0]
        ref = TP.logits(ug.model, test)
        pred0 = ref.argmax(1)
        B.log(name, f"f0 {tu.f0}, unit FLOPs {sorted(set(tu.unit_cost.values()))}, "
              f"acc {np.mean(pred0 == y):.3f}")  # fmt: skip
        acts = TP.capture(tu, calib)
        tokw = TP.token_weights(calib, len(ycal), max(seq, 1))
        nf = args.fisher_samples
        sub = {k: v[:nf] for k, v in calib.items()}
        t0 = time.perf_counter()
        fisher = TP.kwon_fisher(tu, sub, ycal[:nf], {c: a[:nf] for c, a in acts.items()})
        t_fisher = time.perf_counter() - t0
        B.log(name, f"Fisher of {len(fisher)} masks in {t_fisher:.1f}s")
        # onnxsim graph forms, once per model
        heads = ug.cuts[[c for c in tu.cuts if tu.kind[c] == "head"][0]].channels
        hidden = tu.weight([c for c in tu.cuts if tu.kind[c] == "head"][0]).shape[1]
        raw = onnx.load(str(B.model_path(name)))
        routes, route_notes = TP.onnxsim_routes(raw, MODEL_TYPE[name], heads, hidden)
        route_report, fused, best = [], None, None
        for label, m in routes:  # onnxsim at sparsity 0.5 on each graph form: what it matches
            try:
                before = TP.attention_heads(m)
                pm = TP.onnxsim_prune(m, 0.5, 0.5)
                fl, rem = TP.structural_flops(tu, pm)
                heads_rm = sum(v for c, v in rem.items() if tu.kind.get(c) == "head")
                ffn_rm = sum(v for c, v in rem.items() if tu.kind.get(c) == "ffn")
                route_report.append({"route": label, "attention_nodes": len(before),
                                     "num_heads_before": before,
                                     "num_heads_after_sparsity_0.5": TP.attention_heads(pm),
                                     "heads_removed_at_0.5": heads_rm,
                                     "ffn_neurons_removed_at_0.5": ffn_rm,
                                     "other_removed_at_0.5": {c: rem.get(c) for c in tu.other},
                                     "flops_ratio_at_0.5": fl / tu.f0 if fl else None})  # fmt: skip
                if heads_rm and fl is not None and (best is None or fl < best):
                    fused, best = (label, m), fl
            except Exception as exc:  # noqa: BLE001
                route_report.append({"route": label, "error": f"{type(exc).__name__}: {exc}"})
        B.log(name, "onnxsim routes", route_report, route_notes)
        meta["models"][name] = {"flops_original": tu.f0, "unit_flops": tu.unit_cost,
                                "fisher_seconds": t_fisher, "fisher_samples": nf,
                                "onnxsim_routes": route_report, "onnxsim_route_notes": route_notes,
                                "onnxsim_head_route": fused[0] if fused else None,
                                "params_original": cost.count_params(ug.model)}  # fmt: skip
        batches = [{k: v[i : i + 256] for k, v in calib.items()} for i in range(0, len(ycal), 256)]

        for keep in args.keeps:
            cands: dict[str, dict] = {}

            def add(method, model, family, secs, cands=cands, **extra):
                cands[method] = {"model": model, "family": family, "seconds": secs, **extra}

            # scmopt: the budget
            t0 = time.perf_counter()
            res, secs, _ = B.run_scmopt(str(B.model_path(name)), str(B.calib_path(name)),
                                        keep=keep, seed=args.seed)  # fmt: skip
            target = cost.count_flops(res.model, sample)
            add(
                "scmopt curvature+fold",
                res.model,
                "scmopt",
                secs,
                survivors=survivors(tu, res.unit_graph, res.plan),
                plan_counts=res.plan.counts(),
            )
            B.log(name, keep, f"scmopt FLOPs {target / tu.f0:.3f} ({secs:.0f}s)")
            # scmopt's FLOPs rule at that budget: risk per FLOP saved (and with the fits made
            # nearer plain inputs, swap p 0.1)
            for p_swap in (0.5, 0.1):
                rf, sf, _ = B.run_scmopt(str(B.model_path(name)), str(B.calib_path(name)),
                                         flops=target / tu.f0, swap_p=p_swap,
                                         seed=args.seed)  # fmt: skip
                add(f"scmopt --flops (risk per FLOP), swap p {p_swap:g}", rf.model, "scmopt", sf,
                    survivors=survivors(tu, rf.unit_graph, rf.plan),
                    plan_counts=rf.plan.counts())  # fmt: skip
            for crit in args.criteria:
                try:
                    r2, s2, _ = B.run_scmopt(str(B.model_path(name)), str(B.calib_path(name)),
                                             keep=keep, seed=args.seed, criterion=crit,
                                             fold=False)  # fmt: skip
                    add(
                        f"scmopt {crit}",
                        r2.model,
                        "scmopt",
                        s2,
                        survivors=survivors(tu, r2.unit_graph, r2.plan),
                    )
                except Exception as exc:  # noqa: BLE001
                    cands[f"scmopt {crit}"] = {"error": f"{type(exc).__name__}: {exc}"}
            # FLAP
            t0 = time.perf_counter()
            try:
                removed, m = TP.flap(tu, acts, tokw, target)
                add(
                    "FLAP (var x |W|^2, z-score, mean bias)",
                    m,
                    "peer",
                    time.perf_counter() - t0,
                    survivors=TP.counts(tu, removed),
                )
            except Exception as exc:  # noqa: BLE001
                traceback.print_exc()
                cands["FLAP (var x |W|^2, z-score, mean bias)"] = {"error": repr(exc)}
            # Kwon
            for resc in (True, False):
                label = "Kwon (Fisher/FLOPs" + (", LS rescale)" if resc else ", no rescale)")
                t0 = time.perf_counter()
                try:
                    removed, m, scales = TP.kwon(tu, fisher, acts, tokw, target, rescale=resc)
                    add(label, m, "peer", t_fisher + time.perf_counter() - t0,
                        survivors=TP.counts(tu, removed),
                        scale_range=[min(scales.values()), max(scales.values())] if scales
                        else None)  # fmt: skip
                except Exception as exc:  # noqa: BLE001
                    traceback.print_exc()
                    cands[label] = {"error": repr(exc)}
            # onnxsim
            osim_forms = [("FFN only, raw export", raw, False)]
            if fused:
                osim_forms.insert(0, (f"heads+FFN on {fused[0]}", fused[1], True))
            for form, base, heads_too in osim_forms:
                label = f"onnxsim l2 {form}"
                t0 = time.perf_counter()
                try:
                    m, s, fl, ev = TP.onnxsim_to_flops(tu, base, target, heads_too)
                    extra = {"sparsity": s, "evaluations": ev, "equiv_flops": fl,
                             "flops_counted_as_is": TP.equiv_flops(m, sample, seq),
                             "removed_per_cut": TP.structural_flops(tu, m)[1],
                             "attention_num_heads": TP.attention_heads(m)}  # fmt: skip
                    add(label, m, "onnxsim", time.perf_counter() - t0, **extra)
                    t1 = time.perf_counter()
                    try:
                        mf = TP.onnxsim_finetune(base, m, batches)
                        add(
                            label + " +ridge refit",
                            mf,
                            "onnxsim",
                            cands[label]["seconds"] + time.perf_counter() - t1,
                            **extra,
                        )
                    except Exception as exc:  # noqa: BLE001
                        cands[label + " +ridge refit"] = {"error": f"{type(exc).__name__}: {exc}"}
                except Exception as exc:  # noqa: BLE001
                    traceback.print_exc()
                    cands[label] = {"error": f"{type(exc).__name__}: {exc}"}
            add("(unpruned: scmopt's canonical form of the original)", ug.model, "reference", 0.0)
            if fused:
                add(
                    f"(unpruned original on {fused[0]})",
                    fused[1],
                    "reference",
                    0.0,
                    equiv_flops=TP.structural_flops(tu, fused[1])[0],
                )

            # judge everything on the test split
            good = {k: v for k, v in cands.items() if "model" in v}
            lat = {}
            for th in (1, 2):
                try:
                    lat[th] = latency({"original": raw, **{k: v["model"]
                                      for k, v in good.items()}}, test, 32, th)  # fmt: skip
                except Exception as exc:  # noqa: BLE001
                    B.log("latency failed", exc)
                    lat[th] = {}
            for method, c in cands.items():
                row = {"model": name, "keep": keep, "method": method,
                       "family": c.get("family"), "target_flops": target}  # fmt: skip
                if "error" in c:
                    row["error"] = c["error"]
                    rows.append(row)
                    B.log(name, keep, method, "ERROR", c["error"])
                    continue
                m = c["model"]
                try:
                    lg = TP.logits(m, test)
                    p = lg.argmax(1)
                    if c.get("equiv_flops") is not None:
                        fl = c["equiv_flops"]
                    else:
                        fl = cost.count_flops(m, sample)
                    row.update(
                        test_agreement=float(np.mean(p == pred0)),
                        test_accuracy=float(np.mean(p == y)),
                        accuracy_original=float(np.mean(pred0 == y)),
                        flops=int(fl), flops_ratio=fl / tu.f0,
                        flops_vs_target=fl / target - 1.0,
                        params=cost.count_params(m),
                        params_ratio=cost.count_params(m) / cost.count_params(ug.model),
                        seconds=c["seconds"],
                    )  # fmt: skip
                    for th in (1, 2):
                        if method in lat[th]:
                            row[f"latency_ms_{th}t"] = lat[th][method]["median_ms"]
                            row[f"latency_ratio_{th}t"] = (
                                lat[th][method]["median_ms"] / lat[th]["original"]["median_ms"]
                            )
                            row[f"latency_original_ms_{th}t"] = lat[th]["original"]["median_ms"]
                            row[f"latency_best_round_ms_{th}t"] = lat[th][method][
                                "best_round_median_ms"
                            ]
                            row[f"latency_best_round_ratio_{th}t"] = (
                                lat[th][method]["best_round_median_ms"]
                                / lat[th]["original"]["best_round_median_ms"]
                            )
                            row[f"load1_{th}t"] = lat[th][method]["load1"]
                    for k in ("survivors", "plan_counts", "sparsity", "evaluations",
                              "attention_num_heads", "scale_range", "flops_counted_as_is",
                              "removed_per_cut"):  # fmt: skip
                        if c.get(k) is not None:
                            row[k] = c[k]
                    B.log(f"{name:12s} keep {keep:.1f} {method:58s} agree "
                          f"{row['test_agreement']:.3f} acc {row['test_accuracy']:.3f} FLOPs "
                          f"{row['flops_ratio']:.3f} lat1 {B.fmt(row.get('latency_ratio_1t'))} "
                          f"lat2 {B.fmt(row.get('latency_ratio_2t'))}")  # fmt: skip
                except Exception as exc:  # noqa: BLE001
                    traceback.print_exc()
                    row["error"] = f"evaluation: {type(exc).__name__}: {exc}"
                rows.append(row)
            meta["models"][name]["seconds"] = time.perf_counter() - t_model
            meta["seconds_total"] = time.perf_counter() - t_start
            B.write_results(args.name, rows, meta)
    meta["seconds_total"] = time.perf_counter() - t_start
    B.write_results(args.name, rows, meta)
    B.log(f"done in {meta['seconds_total']:.0f}s")


def pairwise_latency(args) -> None:
    """scmopt's compiled model timed with only the exported file and scmopt's canonical form
    of it in the process (the main run holds 12 sessions; its 'unpruned canonical form' row
    showed a bias that a 3-session A/B does not)."""
    import json

    path = B.OUT / f"{args.name}.json"
    doc = json.loads(path.read_text())
    out = []
    for name in args.models:
        raw = onnx.load(str(B.model_path(name)))
        can = B.load_model(name)
        test, _ = B.split(name, "test")
        sample = {k: v[:1] for k, v in test.items()}
        f0 = cost.count_flops(can, sample)
        for keep in args.keeps:
            res, _, _ = B.run_scmopt(str(B.model_path(name)), str(B.calib_path(name)),
                                     keep=keep, seed=args.seed)  # fmt: skip
            fl = cost.count_flops(res.model, sample)
            for th in (1, 2):
                r = latency({"export": raw, "canonical": can, "scmopt": res.model}, test, 32,
                            th, runs=200, rounds=20)  # fmt: skip
                row = {"model": name, "keep": keep, "threads": th, "flops_ratio": fl / f0,
                       **{f"{k}_ms": v["median_ms"] for k, v in r.items()},
                       **{f"{k}_best_round_ms": v["best_round_median_ms"] for k, v in r.items()},
                       "ratio": r["scmopt"]["median_ms"] / r["export"]["median_ms"],
                       "ratio_best_round": r["scmopt"]["best_round_median_ms"]
                       / r["export"]["best_round_median_ms"],
                       "load1": r["export"]["load1"]}  # fmt: skip
                B.log(row)
                out.append(row)
    doc["meta"]["latency_pairwise"] = out
    path.write_text(json.dumps(doc, indent=1))


def tables(path: Path = B.OUT / "transformers.json") -> str:
    """Markdown tables (one per model and keep) from benchmarks/transformers.json."""
    import json

    doc = json.loads(Path(path).read_text())
    out = [f"_Run {doc['machine']['date']} on {B.machine_line(doc['machine'])}; load average at "
           f"start {', '.join(f'{x:.2f}' for x in doc['machine']['loadavg_at_start'])}; "
           f"{doc['meta'].get('seconds_total', 0):.0f} s in total._"]  # fmt: skip
    seen = []
    for r in doc["rows"]:
        if (r["model"], r["keep"]) not in seen:
            seen.append((r["model"], r["keep"]))
    for name, keep in seen:
        rs = [r for r in doc["rows"] if r["model"] == name and r["keep"] == keep]
        r0 = next(r for r in rs if "latency_original_ms_1t" in r)
        f0 = doc["meta"]["models"][name]["flops_original"]
        out.append(f"\n**{name}, scmopt keep {keep}** (budget {rs[0]['target_flops']:,} FLOPs per "
                   f"sample = {rs[0]['target_flops'] / f0:.3f}"
                   f" of the original; original: accuracy {r0['accuracy_original']:.3f}, params "
                   f"{doc['meta']['models'][name]['params_original']:,}, latency "
                   f"{r0['latency_original_ms_1t']:.2f} ms (1 thread) / "
                   f"{r0['latency_original_ms_2t']:.2f} ms (2 threads) at batch 32)\n")  # fmt: skip
        out.append(
            "| method | fidelity (test) | accuracy | FLOPs ratio | params | latency 1t ms "
            "(ratio) | latency 2t ms (ratio) | heads per layer | FFN neurons per layer |"
        )
        out.append("|---|---|---|---|---|---|---|---|---|")
        for r in rs:
            if "error" in r:
                out.append(f"| {r['method']} | failed: {r['error'][:160]} |||||||| ")
                continue
            sv = r.get("survivors") or {}
            heads = sv.get("heads_per_layer", sv.get("heads"))
            ffn = sv.get("ffn_neurons_per_layer", sv.get("ffn"))
            if heads is None and r.get("removed_per_cut"):
                rem = list(r["removed_per_cut"].values())
                heads = [4 - v for v in rem[:4]]
                ffn = [128 - v for v in rem[4:8]]
            out.append(
                f"| {r['method']} | {r['test_agreement']:.3f} | {r['test_accuracy']:.3f} | "
                f"{r['flops_ratio']:.3f} | {r['params']:,} | "
                f"{B.fmt(r.get('latency_ms_1t'), 2)} ({B.fmt(r.get('latency_ratio_1t'), 2)}) | "
                f"{B.fmt(r.get('latency_ms_2t'), 2)} ({B.fmt(r.get('latency_ratio_2t'), 2)}) | "
                f"{' '.join(map(str, heads)) if heads else '-'} | "
                f"{' '.join(map(str, ffn)) if ffn else '-'} |")  # fmt: skip
    return "\n".join(out)


if __name__ == "__main__":
    main()
