"""The Plan: the one contract between analysis and compiler.

Per unit: kept (absent from the plan) | constant | folded. A removed unit is replaced at every
cut it occupies by `sum_k coef[k] * a_k + offset`, where the a_k are kept units of the same cut
(no coefficients for a constant) and the offset is a scalar or one value per position of the
channel (block x spatial positions). Its simulation (scmopt.intervene.simulate) is the reference
semantics; the compiled model must compute the same thing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from scmopt.errors import ScmoptError
from scmopt.units.analysis import Cut, UnitGraph

FORMAT = "scmopt-plan/1"


@dataclass
class Replacement:
    """What a removed unit becomes at one cut."""

    offset: np.ndarray  # shape () or (positions,)
    coef: dict[str, float] = field(default_factory=dict)  # kept unit id -> coefficient


@dataclass
class Action:
    kind: str  # "constant" | "folded"
    at: dict[str, Replacement]  # cut tensor -> replacement


@dataclass
class Plan:
    actions: dict[str, Action] = field(default_factory=dict)

    # construction ---------------------------------------------------------------------------
    def set_constant(self, unit: str, offsets: dict[str, np.ndarray | float]) -> Plan:
        at = {c: Replacement(np.asarray(v, dtype=np.float64)) for c, v in offsets.items()}
        self.actions[unit] = Action("constant", at)
        return self

    def set_folded(
        self, unit: str, at: dict[str, tuple[dict[str, float], np.ndarray | float]]
    ) -> Plan:
        self.actions[unit] = Action(
            "folded",
            {
                c: Replacement(np.asarray(off, dtype=np.float64), dict(coef))
                for c, (coef, off) in at.items()
            },
        )
        return self

    # queries --------------------------------------------------------------------------------
    @property
    def removed(self) -> set[str]:
        return set(self.actions)

    def counts(self) -> dict[str, int]:
        kinds = [a.kind for a in self.actions.values()]
        return {"constant": kinds.count("constant"), "folded": kinds.count("folded")}

    def cut_rows(self, cut: Cut) -> tuple[dict[int, dict[int, float]], np.ndarray]:
        """(rows, B): the replaced cut is M @ channels + B with M the identity except the
        removed channels' rows, given sparsely as rows[i] = {kept channel k: coefficient};
        B is [C, P] (P = 1 or the number of positions)."""
        index = {u: i for i, u in enumerate(cut.units)}
        rows: dict[int, dict[int, float]] = {}
        offsets: list[tuple[int, np.ndarray]] = []
        for i, u in enumerate(cut.units):
            act = self.actions.get(u)
            if act is None:
                continue
            rep = act.at[cut.tensor]
            row: dict[int, float] = {}
            for k, a in rep.coef.items():
                row[index[k]] = row.get(index[k], 0.0) + a
            rows[i] = row
            offsets.append((i, np.atleast_1d(rep.offset)))
        p = max((len(o) for _, o in offsets), default=1)
        b = np.zeros((cut.channels, p))
        for i, off in offsets:
            b[i] = off
        return rows, b

    def cut_affine(self, cut: Cut) -> tuple[np.ndarray, np.ndarray]:
        """(M, B) with replaced cut = M @ channels + B: M is [C, C] (dense, for the hooks)."""
        rows, b = self.cut_rows(cut)
        m = np.eye(cut.channels)
        for i, row in rows.items():
            m[i, i] = 0.0
            for k, a in row.items():
                m[i, k] += a
        return m, b

    def touches(self, cut: Cut) -> bool:
        return any(u in self.actions for u in cut.units)

    # validation -----------------------------------------------------------------------------
    def validate(self, ug: UnitGraph) -> Plan:
        """Raises ScmoptError unless the plan is compilable on `ug`; returns self."""
        removed = self.removed
        for uid, act in self.actions.items():
            unit = ug.units.get(uid)
            if unit is None:
                raise ScmoptError(f"plan names unknown unit {uid!r}")
            if not unit.prunable:
                raise ScmoptError(f"plan removes frozen unit {uid!r} ({unit.frozen})")
            if act.kind not in ("constant", "folded"):
                raise ScmoptError(f"unit {uid!r}: unknown action {act.kind!r}")
            if set(act.at) != set(unit.cuts):
                raise ScmoptError(f"unit {uid!r}: replacement must cover cuts {unit.cuts}")
            for t, rep in act.at.items():
                cut = ug.cuts[t]
                if rep.offset.ndim > 1 or (
                    rep.offset.ndim == 1 and rep.offset.shape[0] not in (1, cut.positions)
                ):
                    raise ScmoptError(f"unit {uid!r} at {t!r}: offset has the wrong shape")
                if act.kind == "constant" and rep.coef:
                    raise ScmoptError(f"unit {uid!r}: a constant has no coefficients")
                for k in rep.coef:
                    if k not in cut.units or k in removed:
                        raise ScmoptError(f"unit {uid!r} folds onto {k!r}, not kept in {t!r}")
                if not np.all(np.isfinite(rep.offset)) or not all(
                    np.isfinite(a) for a in rep.coef.values()
                ):
                    raise ScmoptError(f"unit {uid!r}: non-finite replacement")
        for cut in ug.cuts.values():
            if all(u in removed for u in cut.units):
                raise ScmoptError(
                    f"plan removes every unit of cut {cut.tensor!r}; keep at least one"
                )
        return self

    # JSON -----------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        units = {}
        for uid, act in sorted(self.actions.items()):
            at = {}
            for t, rep in act.at.items():
                entry: dict = {"offset": rep.offset.tolist()}
                if act.kind == "folded":
                    entry["coef"] = rep.coef
                at[t] = entry
            units[uid] = {"action": act.kind, "at": at}
        return {"format": FORMAT, "units": units}

    @classmethod
    def from_dict(cls, data: dict) -> Plan:
        if data.get("format") != FORMAT:
            raise ScmoptError(f"not a plan (format {data.get('format')!r}, expected {FORMAT})")
        plan = cls()
        for uid, entry in data["units"].items():
            at = {
                t: Replacement(np.asarray(r["offset"], dtype=np.float64), dict(r.get("coef", {})))
                for t, r in entry["at"].items()
            }
            plan.actions[uid] = Action(entry["action"], at)
        return plan

    def to_json(self, path: str | Path | None = None) -> str:
        text = json.dumps(self.to_dict())
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_json(cls, text_or_path: str | Path) -> Plan:
        text = str(text_or_path)
        if not text.lstrip().startswith("{"):
            text = Path(text_or_path).read_text()
        return cls.from_dict(json.loads(text))
