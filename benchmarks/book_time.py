"""How long the book build took: per-chapter wall time, the total against the 15-minute target, peak RSS.

Reads the build manifest `tools/build_book.py` writes (`_build/results/build.json` by default, or the
path given): per chapter the seconds of the run its outputs come from, whether this build reused it,
and the kernels' running peak memory; for the build, its total seconds and the render's.

    python benchmarks/book_time.py [path/to/build.json]

Prints a table, then one JSON object as the last line. Exit 2 when the file is missing or unreadable
(run the build first). A benchmark, not a test: the target is reported, never asserted. Only a build
that ran every chapter (a fresh `make book`, or `--force`) measures the book's build time.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PATH = ROOT / "_build" / "results" / "build.json"
TARGET_SECONDS = 15 * 60  # the default build on 2 CPU cores


def load(path: Path) -> dict:
    """The manifest's timings, or SystemExit(2) with the reason."""
    try:
        manifest = json.loads(path.read_text())
        chapters = [dict(chapter=name, seconds=float(r.get("seconds") or 0.0), status=r["status"],
                         reused=r.get("reused_in") == manifest["build_id"], peak=float(r.get("peak_rss_mb") or 0.0))
                    for name, r in manifest["chapters"].items()]
        return dict(profile=manifest.get("profile", "?"), chapters=chapters, total=float(manifest["seconds"]),
                    render=float(manifest.get("render_seconds") or 0.0))
    except OSError:
        sys.exit(f"error: {path} does not exist: build the book first (`make book`), or pass a build.json")
    except (ValueError, KeyError, TypeError) as e:
        sys.exit(f"error: {path} is not a finished build's manifest ({type(e).__name__}: {e})")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("path", nargs="?", type=Path, default=DEFAULT_PATH, help="build.json (default: %(default)s)")
    t = load(p.parse_args(argv).path)
    chapters, total = t["chapters"], t["total"]
    print(f"Book build (profile '{t['profile']}'), chapters in build order:\n")
    for c in chapters:
        how = "reused, time of its earlier run" if c["reused"] else c["status"]
        print(f"{c['chapter']:<28} {c['seconds']:8.1f} s  {how}")
    print(f"{'render (Quarto)':<28} {t['render']:8.1f} s\n{'total':<28} {total:8.1f} s")
    peak = max(chapters, key=lambda c: c["peak"], default=None)
    summary = dict(profile=t["profile"], total_seconds=total, target_seconds=TARGET_SECONDS,
                   target_ratio=round(total / TARGET_SECONDS, 4), render_seconds=t["render"],
                   slowest_chapter=max(chapters, key=lambda c: c["seconds"])["chapter"] if chapters else None,
                   reused=[c["chapter"] for c in chapters if c["reused"]],
                   failed=[c["chapter"] for c in chapters if c["status"] != "ok"],
                   peak_rss_mb=peak["peak"] if peak else None, peak_rss_chapter=peak["chapter"] if peak else None)
    print(f"\ntotal / 15-minute target: {summary['target_ratio']:.2f} "
          f"({'met' if summary['target_ratio'] <= 1 else 'MISSED'}); peak kernel RSS {summary['peak_rss_mb']:.0f} MiB"
          f" (reached by {summary['peak_rss_chapter']})" + ("; some chapters were reused: not a full build's time"
                                                           if summary["reused"] else ""))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
