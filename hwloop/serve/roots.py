"""The folders the dashboard may read, and the only way a request names a file in them.

A request names a file as (root index, path relative to that root). It is served only if the path,
with every symlink resolved, still lies inside the resolved root: no ``..``, no absolute path, no
symlink that leaves the folder. Listing walks the folders the same way and skips what would be refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from hwloop.errors import ConfigError, HwloopError
from hwloop.sweep import MANIFEST_NAME, load_manifest, summarize


class Refused(HwloopError):
    """A request named a file the dashboard does not serve (outside the folders, or not a run log)."""


@dataclass
class Roots:
    """The served folders, resolved once at start."""

    dirs: list[Path] = field(default_factory=list)

    @classmethod
    def from_args(cls, folders: list[str]) -> Roots:
        out = []
        for a in folders:
            p = Path(a).expanduser()
            if not p.is_dir():
                raise ConfigError(f"{a} is not a folder; give folders of run logs (e.g. runs/)")
            out.append(p.resolve())
        return cls(out)

    def resolve(self, root: int, rel: str, suffix: str = ".h5") -> Path:
        """The file ``rel`` under root ``root``; raises ``Refused`` for anything outside the folders."""
        if not 0 <= root < len(self.dirs):
            raise Refused(f"no served folder {root}")
        pp = PurePosixPath(rel)
        if not rel or pp.is_absolute() or "\\" in rel or any(part in ("..", "") for part in pp.parts):
            raise Refused(f"path {rel!r} is not a plain relative path inside a served folder")
        base = self.dirs[root]
        p = (base / pp).resolve()
        if not p.is_relative_to(base):
            raise Refused(f"path {rel!r} leads outside the served folder")
        if p.suffix != suffix:
            raise Refused(f"path {rel!r} is not a {suffix} file")
        return p

    def _inside(self, root: int, p: Path) -> bool:
        try:
            return p.resolve().is_relative_to(self.dirs[root])
        except OSError:
            return False

    def run_files(self) -> list[tuple[int, str, Path]]:
        """(root, relative path, resolved path) of every ``*.h5`` inside the folders (symlinks that
        leave a folder are skipped; a file reachable twice is listed once)."""
        seen: set[Path] = set()
        out = []
        for i, d in enumerate(self.dirs):
            for p in sorted(d.rglob("*.h5")):
                if not self._inside(i, p) or not p.is_file():
                    continue
                rp = p.resolve()
                if rp in seen:
                    continue
                seen.add(rp)
                out.append((i, p.relative_to(d).as_posix(), rp))
        return out

    def sweeps(self) -> list[dict]:
        """Every sweep folder (one with ``sweep.json``) inside the folders: its groups and their points."""
        out = []
        for i, d in enumerate(self.dirs):
            for mj in sorted(d.rglob(MANIFEST_NAME)):
                if not self._inside(i, mj):
                    continue
                folder = mj.parent
                rel_dir = folder.relative_to(d).as_posix()
                entry: dict = {"root": i, "rel": rel_dir, "name": folder.name if rel_dir != "." else d.name}
                try:
                    man = load_manifest(folder)
                    entry["axes"] = man.axes
                    groups: dict[str, dict] = {}
                    for p in man.points:
                        key = json.dumps({a: p.params.get(a) for a in man.group_axes}, sort_keys=True)
                        g = groups.setdefault(key, {"params": {a: p.params.get(a) for a in man.group_axes}, "runs": []})
                        lp = man.log_path(p)
                        if lp.is_relative_to(d):
                            g["runs"].append(f"{i}:{lp.relative_to(d).as_posix()}")
                    summ = {json.dumps({a: r[a] for a in man.group_axes}, sort_keys=True): r for r in summarize(man)}
                    for key, g in groups.items():
                        r = summ.get(key, {})
                        g["n_finished"] = r.get("n_finished", 0)
                        g["final_acc_pct"] = {t: list(v) for t, v in r.get("acc", {}).items()}
                    entry["groups"] = list(groups.values())
                except (HwloopError, OSError, KeyError, TypeError, ValueError) as exc:
                    entry["error"] = str(exc)
                out.append(entry)
        return out
