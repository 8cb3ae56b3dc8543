"""Random-weight structure checks on Hugging Face BertModel / ViTModel / GPT2Model exports and a
timm-style fused-QKV ViT (issue 12 item 5).

    python tools/check_hf.py [--only bert_ts17,vit_dynamo] [--no-compress] [--seeds 3]
    python tools/check_hf.py --only gpt2_ts17,gpt2_dynamo,vitfused_ts17,vitfused_dynamo
    python tools/check_hf.py --patched [shapes,noop,isnan]   # diagnostic, tools/hf/patches.py
    python tools/check_hf.py --attn eager [--patched shapes]     # HF's eager attention

Builds a small BertModel (hidden 64, 4 layers x 4 heads, intermediate 128, vocab 100, 32
positions; input_ids, attention_mask with padding, token_type_ids) and a small ViTModel (16x16
images, patch 4, same sizes), a small GPT2Model (same sizes; fused c_attn through HF's Conv1D,
i.e. Reshape -> Gemm -> Reshape and a Split of q, k, v; causal, with a padding mask; mean over
tokens) and a ViT written like timm's (one qkv linear, reshape(B, N, 3, H, Dh).permute(2, 0, 3,
1, 4).unbind(0), SDPA; timm itself needs torchvision, which this machine's torch has no build
of), each with a linear head on the pooled output, from configs with
random weights (no hub; 1-D parameters, i.e. biases and LayerNorm, get N(0, 0.1) noise added to
HF's zeros/ones so that no two initializers are equal, as in a trained model). Exports each with
TorchScript (dynamo=False) at opsets 14 and 17 and with dynamo (opset 18), dynamic batch (and
sequence for BERT), into models/hf/. Per export: ONNX vs torch, `scmopt inspect --json` (units
by kind, heads / FFN neurons prunable, frozen reasons), random plans compile == hooked
simulation (relative error, checker full check, I/O signature, two batch sizes and two sequence
lengths), and a short scmopt.compress(keep=0.5).
Writes models/hf/results[_patched].json; prints markdown tables and every failure with its
traceback. --patched applies tools/hf/patches.py (monkeypatches standing for scmopt changes; the
CLI inspect runs with them too) to measure what those changes would give.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
import traceback
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
OUT = ROOT / "models" / "hf"

from helpers import io_signature, outputs, relative_error  # noqa: E402
from plans import random_plan  # noqa: E402

H, LAYERS, HEADS, FFN, VOCAB, POS = 64, 4, 4, 128, 100, 32
SEQ, IMG, N = 16, 16, 256
ATTN = "sdpa"  # HF's default attention; --attn eager: the plain matmul-softmax-matmul path


def build(family: str):
    import torch
    from torch import nn
    from transformers import BertConfig, BertModel, GPT2Config, GPT2Model, ViTConfig, ViTModel

    torch.manual_seed(0)
    common = dict(
        hidden_size=H, num_hidden_layers=LAYERS, num_attention_heads=HEADS, intermediate_size=FFN
    )

    class Bert(nn.Module):
        def __init__(self):
            super().__init__()
            cfg = BertConfig(vocab_size=VOCAB, max_position_embeddings=POS, **common)
            cfg._attn_implementation = ATTN
            self.bert, self.head = BertModel(cfg), nn.Linear(H, 5)

        def forward(self, input_ids, attention_mask, token_type_ids):
            o = self.bert(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            )
            return self.head(o.pooler_output)

    class ViT(nn.Module):
        def __init__(self):
            super().__init__()
            cfg = ViTConfig(image_size=IMG, patch_size=4, num_channels=3, **common)
            cfg._attn_implementation = ATTN
            self.vit, self.head = ViTModel(cfg), nn.Linear(H, 10)

        def forward(self, pixel_values):
            return self.head(self.vit(pixel_values=pixel_values).pooler_output)

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            cfg = GPT2Config(vocab_size=VOCAB, n_positions=POS, n_embd=H, n_layer=LAYERS,
                             n_head=HEADS, n_inner=FFN)  # fmt: skip
            cfg._attn_implementation = ATTN
            self.gpt, self.head = GPT2Model(cfg), nn.Linear(H, 5)

        def forward(self, input_ids, attention_mask):
            o = self.gpt(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            return self.head(o.mean(1))

    class TimmAttention(nn.Module):  # timm.layers.Attention's forward (fused_attn path)
        def __init__(self):
            super().__init__()
            self.qkv, self.proj = nn.Linear(H, 3 * H), nn.Linear(H, H)

        def forward(self, x):
            b, n, c = x.shape
            qkv = self.qkv(x).reshape(b, n, 3, HEADS, c // HEADS).permute(2, 0, 3, 1, 4)
            q, k, v = qkv.unbind(0)
            x = nn.functional.scaled_dot_product_attention(q, k, v)
            return self.proj(x.transpose(1, 2).reshape(b, n, c))

    class TimmBlock(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm1, self.attn, self.norm2 = nn.LayerNorm(H), TimmAttention(), nn.LayerNorm(H)
            self.mlp = nn.Sequential(nn.Linear(H, FFN), nn.GELU(), nn.Linear(FFN, H))

        def forward(self, x):
            x = x + self.attn(self.norm1(x))
            return x + self.mlp(self.norm2(x))

    class TimmViT(nn.Module):
        def __init__(self):
            super().__init__()
            self.patch = nn.Conv2d(3, H, 4, 4)
            self.cls = nn.Parameter(torch.randn(1, 1, H))
            self.pos = nn.Parameter(0.02 * torch.randn(1, (IMG // 4) ** 2 + 1, H))
            self.blocks = nn.Sequential(*[TimmBlock() for _ in range(LAYERS)])
            self.norm, self.head = nn.LayerNorm(H), nn.Linear(H, 10)

        def forward(self, pixel_values):
            x = self.patch(pixel_values).flatten(2).transpose(1, 2)
            x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], 1) + self.pos
            return self.head(self.norm(self.blocks(x))[:, 0])

    make = {"bert": Bert, "vit": ViT, "gpt2": GPT, "vitfused": TimmViT}
    model = make[family]().eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
    return model


def data(family: str, n: int, t: int = SEQ, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    if family.startswith("vit"):
        return {"pixel_values": rng.normal(size=(n, 3, IMG, IMG)).astype(np.float32)}
    lengths = rng.integers(max(2, t // 4), t + 1, size=n)
    lengths[0] = t  # at least one unpadded row
    mask = (np.arange(t)[None, :] < lengths[:, None]).astype(np.int64)
    ids = rng.integers(1, VOCAB, size=(n, t)).astype(np.int64) * mask  # padding id 0
    seg = rng.integers(1, t, size=n)[:, None]
    tt = ((np.arange(t)[None, :] >= seg) & (mask == 1)).astype(np.int64)
    if family == "gpt2":
        return {"input_ids": ids, "attention_mask": mask}
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": tt}


def export(family: str, how: str, model, path: Path) -> None:
    import torch

    feeds = data(family, 2, seed=1)
    names = list(feeds)
    args = tuple(torch.from_numpy(feeds[k]) for k in names)
    tokens = family in ("bert", "gpt2")
    dyn = {0: "batch", 1: "seq"} if tokens else {0: "batch"}
    io = dict(input_names=names, output_names=["logits"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if how.startswith("ts"):
            axes = {**{k: dyn for k in names}, "logits": {0: "batch"}}
            opts = dict(opset_version=int(how[2:]), dynamic_axes=axes, do_constant_folding=True)
            torch.onnx.export(model, args, str(path), dynamo=False, **opts, **io)
            return
        dims = {0: torch.export.Dim("batch", min=1, max=1024)}
        if tokens:
            dims[1] = torch.export.Dim("seq", min=2, max=POS)
        shapes = tuple(dict(dims) for _ in names)
        opts = dict(opset_version=18, optimize=True, verbose=False, dynamic_shapes=shapes)
        torch.onnx.export(model, args, dynamo=True, **opts, **io).save(
            str(path), external_data=False
        )


def torch_diff(family: str, model, path: Path) -> float:
    import torch

    feeds = data(family, 8, seed=2)
    with torch.no_grad():
        ref = model(*(torch.from_numpy(v) for v in feeds.values())).numpy()
    return float(np.abs(outputs(onnx.load(path), feeds)[0] - ref).max())


def reason_key(why: str) -> str:
    """A frozen reason without node names, so reasons of the same kind count together."""
    return re.sub(r"'[^']*'", "'…'", why)


def inspect(path: Path, patched: list[str]) -> dict:
    pre = "import sys; "
    if patched:
        pre += f"sys.path.insert(0, 'tools/hf'); import patches; patches.apply({patched!r}); "
    cli = pre + "from scmopt.cli import main; sys.argv[0] = 'scmopt'; main()"
    cmd = [sys.executable, "-c", cli, "inspect", str(path), "--json"]
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if run.returncode:
        raise RuntimeError(f"scmopt inspect exit {run.returncode}:\n{run.stdout}{run.stderr}")
    info = json.loads(run.stdout)
    kinds, frozen = info["unit_kinds"], info["frozen_units"]
    by_kind: dict[str, list[int]] = {}
    for u, k in kinds.items():
        by_kind.setdefault(k, [0, 0])
        by_kind[k][0] += 1
        by_kind[k][1] += u not in frozen
    # FFN neurons: token units of the groups that are intermediate-sized (the residual is H)
    from scmopt import units

    ug = units.analyze(onnx.load(path))
    size = {u: len(ug.groups[ug.units[u].group].units) for u in kinds}
    ffn = [u for u, k in kinds.items() if k == "token" and size[u] % FFN == 0 and size[u] != H]
    heads = [u for u, k in kinds.items() if k == "head"]
    resid = [u for u, k in kinds.items() if k == "token" and u not in ffn]
    reasons = Counter(reason_key(w) for w in frozen.values())
    return {
        "params": info["params"],
        "flops": info["flops"],
        "units": info["units"],
        "flops_unknown": len(info["flops_unknown"]),
        "prunable": info["prunable"],
        "by_kind": by_kind,
        "heads": [len(heads), sum(u not in frozen for u in heads)],
        "ffn": [len(ffn), sum(u not in frozen for u in ffn)],
        "residual": [len(resid), sum(u in frozen for u in resid)],
        "residual_reasons": Counter(reason_key(frozen[u])[:60] for u in resid if u in frozen),
        "frozen_reasons": reasons.most_common(),
    }


def dims(vi) -> list:
    return [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]


def exactness(family: str, path: Path, seeds: int) -> dict:
    from scmopt import units
    from scmopt.compiler.compile import compile_plan
    from scmopt.ops import cost
    from scmopt.runtime.hooks import simulate

    model = onnx.load(path)
    ug = units.analyze(model)
    sizes = [(3, SEQ), (7, 11)] if family in ("bert", "gpt2") else [(3, None), (7, None)]
    rows = []
    for seed in range(seeds):
        row: dict = {"seed": seed}
        try:
            plan = random_plan(ug, 0.5, seed=seed)
            row["removed"] = len(plan.actions)
            row["heads_removed"] = sum(ug.units[u].kind == "head" for u in plan.actions)
            row["counts"] = plan.counts()
            compiled = compile_plan(ug, plan).model
            sim = simulate(ug, plan)
            errs = []
            for b, t in sizes:
                feeds = data(family, b, t or SEQ, seed=10 + seed)
                errs.append(relative_error(outputs(compiled, feeds), outputs(sim, feeds)))
            row["rel_err"] = max(errs)
            row["params"] = [cost.count_params(ug.model), cost.count_params(compiled)]
            try:
                onnx.checker.check_model(compiled, full_check=True)
                row["checker"] = "pass"
            except Exception as exc:  # noqa: BLE001
                row["checker"] = f"FAIL {type(exc).__name__}: {exc}"
            row["io_same"] = io_signature(compiled) == io_signature(ug.model)
            row["dims"] = {i.name: dims(i) for i in compiled.graph.input}
            row["dims_same"] = all(
                dims(a) == dims(b)
                for a, b in zip(model.graph.input, compiled.graph.input, strict=True)
            )
        except Exception:  # noqa: BLE001
            row["error"] = traceback.format_exc()
        rows.append(row)
    return {"prunable": len(ug.prunable), "plans": rows}


def compress(family: str, path: Path) -> dict:
    import scmopt

    t0 = time.perf_counter()
    try:
        res = scmopt.compress(str(path), data(family, N, seed=3), keep=0.5, device="cpu")
    except Exception:  # noqa: BLE001
        return {"ok": False, "s": time.perf_counter() - t0, "error": traceback.format_exc()}
    r = res.report
    p, f = r["params"], r["flops"]
    return {
        "ok": True,
        "s": time.perf_counter() - t0,
        "units": r["units"],
        "params": [p["before"], p["after"]],
        "flops": [f["before"], f["after"]],
        "compile_err": r["compile_max_abs_error"],
        "fidelity": r["fidelity"],
        "fpe": r["work"]["total"],
        "missed": res.missed,
        "plan": res.plan.counts(),
        "heads_removed": sum(res.unit_graph.units[u].kind == "head" for u in res.plan.actions),
    }


EXPORTS = [f"{f}_{h}" for f in ("bert", "vit", "gpt2", "vitfused")
           for h in ("ts14", "ts17", "dynamo")]  # fmt: skip


def check(name: str, seeds: int, do_compress: bool, patched: list[str]) -> dict:
    family, how = name.split("_")
    name += "_eager" if ATTN == "eager" else ""
    path = OUT / f"{name}.onnx"
    res: dict = {"name": name, "file": str(path.relative_to(ROOT)), "patched": patched}
    t0 = time.perf_counter()
    try:
        model = build(family)
        export(family, how, model, path)
        m = onnx.load(path)
        res["inputs"] = {i.name: dims(i) for i in m.graph.input}
        res["opset"] = next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx"))
        res["torch_diff"] = torch_diff(family, model, path)
    except Exception:  # noqa: BLE001
        res["export_error"] = traceback.format_exc()
        return res
    for key, fn in [
        ("inspect", lambda: inspect(path, patched)),
        ("exact", lambda: exactness(family, path, seeds)),
        ("compress", (lambda: compress(family, path)) if do_compress else None),
    ]:
        if fn is None:
            continue
        try:
            res[key] = fn()
        except Exception:  # noqa: BLE001
            res[key] = {"error": traceback.format_exc()}
        print(f"  {name} {key} done ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    return res


def frac(a: list[int]) -> str:
    return f"{a[1]}/{a[0]}"


def table(r: dict) -> str:
    how = f", patched: {','.join(r['patched'])}" if r["patched"] else ""
    rows = [f"**{r['name']}** (`{r['file']}`{how})", "", "| | |", "|---|---|"]
    add = lambda k, v: rows.append(f"| {k} | {v} |")  # noqa: E731
    if "export_error" in r:
        add("export", "FAIL (traceback below)")
        return "\n".join(rows)
    add("opset, inputs", f"{r['opset']}, " + ", ".join(f"{k} {v}" for k, v in r["inputs"].items()))
    add("ONNX vs torch max abs diff", f"{r['torch_diff']:.1e}")
    i = r.get("inspect", {})
    if "error" in i:
        add("inspect", "FAIL")
    elif i:
        kinds = ", ".join(f"{k} {frac(v)}" for k, v in sorted(i["by_kind"].items()))
        unk = f" ({i['flops_unknown']} nodes of unknown cost)" if i["flops_unknown"] else ""
        add("params, FLOPs/sample", f"{i['params']:,}, {i['flops']:,}{unk}")
        add("units (prunable/total by kind)", f"{i['prunable']}/{i['units']}: {kinds}")
        add("heads prunable", frac(i["heads"]))
        add("FFN neurons prunable", frac(i["ffn"]))
        why = ", ".join(f"{n} {w}…" for w, n in i["residual_reasons"].items())
        add("residual-stream units frozen", f"{i['residual'][1]}/{i['residual'][0]} ({why})")
        top = "; ".join(f"{n} × {w}" for w, n in i["frozen_reasons"][:3])
        add("top frozen reasons", top.replace("|", "\\|"))
    e = r.get("exact", {})
    if "error" in e:
        add("random plans", "FAIL")
    elif e:
        ok = [p for p in e["plans"] if "error" not in p]
        errs = [p["rel_err"] for p in ok]
        fails = len(e["plans"]) - len(ok)
        rm = ", ".join(f"{p['removed']} ({p['heads_removed']} heads)" for p in ok)
        add("random half plans: units removed", rm or "-")
        add(
            "max rel error compile vs simulation",
            (f"{max(errs):.1e}" if errs else "-") + (f" ({fails} plan(s) FAILED)" if fails else ""),
        )
        add(
            "checker full / same I/O / dynamic axes kept",
            " / ".join(str({p[k] for p in ok}) for k in ("checker", "io_same", "dims_same")),
        )
    c = r.get("compress", {})
    if c and "error" in c:
        add("compress keep 0.5", f"FAIL after {c['s']:.0f} s")
    elif c:
        u = c["units"]
        add(
            "compress keep 0.5",
            f"kept {u['kept']}/{u['total']} ({u['constant']} const, {u['folded']} folded, "
            f"{c['heads_removed']} heads removed), "
            f"params {c['params'][1] / c['params'][0]:.3f}, "
            f"FLOPs {c['flops'][1] / c['flops'][0]:.3f}, compile err {c['compile_err']:.1e}, "
            f"fidelity {c['fidelity']:.3f}, {c['fpe']:.1f} FPE, {c['s']:.0f} s"
            + (f", missed: {c['missed']}" if c["missed"] else ""),
        )
    return "\n".join(rows)


def failures(r: dict) -> list[str]:
    out = [f"{r['name']} export:\n{r['export_error']}"] if "export_error" in r else []
    for key in ("inspect", "exact", "compress"):
        v = r.get(key, {})
        if "error" in v:
            out.append(f"{r['name']} {key}:\n{v['error']}")
        for p in v.get("plans", []) if isinstance(v, dict) else []:
            if "error" in p:
                out.append(f"{r['name']} plan seed {p['seed']}:\n{p['error']}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=",".join(EXPORTS))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--no-compress", action="store_true")
    ap.add_argument("--patched", nargs="?", const="shapes,noop,isnan", default="")
    ap.add_argument("--attn", choices=["sdpa", "eager"], default="sdpa")
    a = ap.parse_args()
    global ATTN
    ATTN = a.attn
    patched = [p for p in a.patched.split(",") if p]
    if patched:
        sys.path.insert(0, str(ROOT / "tools" / "hf"))
        import patches

        patches.apply(patched)
    OUT.mkdir(parents=True, exist_ok=True)
    results = []
    out = OUT / f"results{'_patched' if patched else ''}{'_eager' if ATTN == 'eager' else ''}.json"
    for name in a.only.split(","):
        results.append(check(name, a.seeds, not a.no_compress, patched))
        out.write_text(json.dumps(results, indent=1, default=str))
        print(table(results[-1]) + "\n", flush=True)
    fails = [f for r in results for f in failures(r)]
    print(f"{len(fails)} failure(s)")
    for f in fails:
        print(f"\n--- {f}")


if __name__ == "__main__":
    main()
