"""How long the book build took: per-chapter wall time, the total against the 15-minute target, peak RSS.

Reads the ``timings.json`` that ``python tools/build_book.py`` writes into its output folder
(``_build/timings.json`` by default) or the path given as the argument:

    {"profile": ..., "chapters": [{"chapter": stem, "seconds": float, "ok": bool}],
     "total_seconds": float, "peak_rss_mb": float}

    python benchmarks/book_time.py [path/to/timings.json]

Prints a table, then one JSON object as the last line. Exit 2 when the file is missing or
unreadable (run the build first). A benchmark, not a test: the target is reported, never asserted.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PATH = ROOT / "_build" / "timings.json"
TARGET_SECONDS = 15 * 60  # the default build, chapter 7 at 10 seeds and chapters 3-6 at 5


class TimingsError(Exception):
    """The timings file is missing or not in the build tool's format."""


def load_timings(path: Path) -> dict:
    if not path.is_file():
        raise TimingsError(f"{path} does not exist. Build the book first: `python tools/build_book.py` "
                           "(it writes _build/timings.json), or pass the path of a timings.json.")
    try:
        timings = json.loads(path.read_text())
        chapters = [{"chapter": str(c["chapter"]), "seconds": float(c["seconds"]), "ok": bool(c["ok"]),
                     "peak_rss_mb_after": float(c.get("peak_rss_mb_after", "nan"))}  # older files lack it
                    for c in timings["chapters"]]
        return {"profile": timings.get("profile", "?"), "chapters": chapters,
                "total_seconds": float(timings["total_seconds"]), "peak_rss_mb": float(timings["peak_rss_mb"])}
    except (ValueError, KeyError, TypeError) as e:
        raise TimingsError(f"{path} is not a build timings file ({type(e).__name__}: {e}).") from e


def summarise(timings: dict) -> dict:
    chapters = timings["chapters"]
    total = timings["total_seconds"]
    return {
        "profile": timings["profile"],
        "total_seconds": total,
        "target_seconds": TARGET_SECONDS,
        "target_ratio": total / TARGET_SECONDS,  # <= 1 meets the target
        "chapters_seconds": sum(c["seconds"] for c in chapters),
        "slowest_chapter": max(chapters, key=lambda c: c["seconds"])["chapter"] if chapters else None,
        "n_chapters": len(chapters),
        "failed": [c["chapter"] for c in chapters if not c["ok"]],
        "all_ok": all(c["ok"] for c in chapters),
        "peak_rss_mb": timings["peak_rss_mb"],
        # the first chapter after which the running peak had reached the build's peak: the one that set it
        "peak_rss_chapter": next((c["chapter"] for c in chapters if c["peak_rss_mb_after"] >= timings["peak_rss_mb"]),
                                 None),
    }


def print_table(timings: dict, summary: dict) -> None:
    total = summary["total_seconds"]
    print(f"Book build timings (profile '{summary['profile']}'), in build order:\n")
    print(f"{'chapter':<28} {'seconds':>9} {'share':>7}  status")
    for c in timings["chapters"]:
        share = c["seconds"] / total if total else 0.0
        print(f"{c['chapter']:<28} {c['seconds']:9.1f} {share:7.1%}  {'ok' if c['ok'] else 'FAILED'}")
    other = total - summary["chapters_seconds"]
    print(f"{'(outside chapters)':<28} {other:9.1f} {other / total if total else 0.0:7.1%}")
    print(f"{'total':<28} {total:9.1f}")
    met = "met" if summary["target_ratio"] <= 1 else "MISSED"
    print(f"\ntotal / 15-minute target: {summary['target_ratio']:.2f} ({met}); "
          f"peak kernel RSS {summary['peak_rss_mb']:.0f} MiB"
          + (f", reached in {summary['peak_rss_chapter']}" if summary["peak_rss_chapter"] else ""))
    if summary["failed"]:
        print(f"failed chapters: {', '.join(summary['failed'])} (their times are not a full run)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("path", nargs="?", type=Path, default=DEFAULT_PATH,
                   help="timings.json written by tools/build_book.py (default: _build/timings.json)")
    args = p.parse_args(argv)
    try:
        timings = load_timings(args.path)
    except TimingsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    summary = summarise(timings)
    print_table(timings, summary)
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in summary.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
