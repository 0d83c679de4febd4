"""`hep2edge review` (the worklist web app) and `hep2edge results confirm | export | to-dataset`.

Thin commands over hep2edge.review; the web app needs the `review` extra (FastAPI, uvicorn, hl7apy), the
scripted review, CSV export and to-dataset only the base install.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import typer
from rich.markup import escape

from hep2edge.cli.app import app, err_console
from hep2edge.cli.common import console, import_stage
from hep2edge.errors import ConfigError
from hep2edge.workspace import RUNS_DIR

DEFAULT_PORT = 8765
results_app = typer.Typer(help="Confirm or correct results, export them to the LIS, turn them into a dataset.",
                          no_args_is_help=True)
app.add_typer(results_app, name="results")


def _results_folder(results: Path | None) -> Path:
    """RESULTS as given, else the folder of the newest results.db under runs/ (said aloud)."""
    if results is not None:
        return Path(results)
    found = sorted(Path(RUNS_DIR).glob("*/*/results.db"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise ConfigError(f"pass RESULTS (the folder `hep2edge watch` or `analyze` wrote); none under {RUNS_DIR}/")
    console.print(f"RESULTS: {found[-1].parent} (the newest under {RUNS_DIR}/)", highlight=False, markup=False)
    return found[-1].parent


def _needed(value: str | None, what: str) -> str:
    if not value:
        raise ConfigError(f"pass {what}")
    return value


@app.command()
def review(
    results: Path = typer.Argument(None, help="RESULTS folder (default: the newest under runs/).",
                                   show_default=False),
    port: int = typer.Option(DEFAULT_PORT, "--port", min=0, max=65535, help="TCP port (0: any free one)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on; a non-loopback one needs a token."),
    token: str = typer.Option(None, "--token", envvar="HEP2EDGE_REVIEW_TOKEN", show_default=False,
                              help="Access token (at least 16 characters) the browser must present."),
    new_token: bool = typer.Option(False, "--new-token", help="Generate an access token and print it once."),
    low_confidence: float = typer.Option(0.5, "--low-confidence", min=0.0, max=1.0,
                                         help="Flag model verdicts whose pattern probability is below this."),
    poll: float = typer.Option(2.0, "--poll", min=0.2, help="Seconds between worklist refreshes in the browser."),
) -> None:
    """Serve the review worklist over RESULTS while `watch` keeps writing it: confirm or correct each specimen."""
    web = import_stage("hep2edge.review.app")
    server = import_stage("hep2edge.review.server")
    from hep2edge.review.db import ResultsDB
    from hep2edge.review.security import allowed_hosts, resolve_token

    secret, generated = resolve_token(host, token, new_token)
    folder = _results_folder(results)
    ResultsDB(folder)  # refuses a bad RESULTS before anything listens or is written
    sock = server.bind(host, port)
    settings = web.AppSettings(folder, secret, tuple(allowed_hosts(host)), low_confidence, int(poll * 1000))
    application = web.create_app(settings)
    url = server.url_of(sock, host)
    console.print(f"review: {url} over {folder} (Ctrl+C stops)", highlight=False, markup=False)
    if generated:
        console.print(f"access token (printed once, keep it): {secret}\nopen: {url}?token={secret}",
                      highlight=False, markup=False)
    server.serve(application, sock)


@results_app.command("confirm")
def confirm(
    results: Path = typer.Argument(None, help="RESULTS folder.", show_default=False),
    specimen: str = typer.Argument(None, help="Specimen id (or the stem of an image without one).",
                                   show_default=False),
    reviewer: str = typer.Option(None, "--reviewer", help="Who reviews (required).", show_default=False),
    pattern: list[str] = typer.Option(None, "--pattern", "-p", show_default=False,
                                      help="Correct the pattern (repeat for mixed patterns, primary first)."),
    intensity: str = typer.Option(None, "--intensity", help="Correct the intensity.", show_default=False),
    comment: str = typer.Option("", "--comment", help="A note kept in the audit trail."),
) -> None:
    """Confirm a specimen's result, or correct it, in the same audit trail the web app writes."""
    from hep2edge.review.db import ResultsDB
    from hep2edge.review.reviews import ReviewRequest, record_review
    from hep2edge.review.verdicts import check_reviewer, parse_intensity_name, parse_patterns

    folder, key = Path(_needed(str(results) if results else None, "RESULTS")), _needed(specimen, "SPECIMEN")
    if not (reviewer or "").strip():
        raise ConfigError("a reviewer name is required: pass --reviewer NAME")
    name = check_reviewer(reviewer or "")
    patterns = parse_patterns(pattern) if pattern else ()
    level = parse_intensity_name(intensity) if intensity else ""
    done = record_review(ResultsDB(folder), ReviewRequest(key, name, patterns, level, comment))
    console.print(f"{done.specimen}: {done.action} by {done.reviewer}: {done.after} (review {done.id})",
                  highlight=False, markup=False)


@results_app.command("export")
def export(
    results: Path = typer.Argument(None, help="RESULTS folder (default: the newest under runs/).",
                                   show_default=False),
    fmt: str = typer.Option("hl7", "--format", help="hl7 (v2.5.1 ORU^R01) | csv."),
    out: Path = typer.Option(None, "--out", "-o", help="File to write (default: RESULTS/exports/<time>.<format>).",
                             show_default=False),
    again: bool = typer.Option(False, "--again", help="Export every reviewed specimen, also those sent before."),
) -> None:
    """Write the confirmed and corrected specimens not exported yet (each once) as HL7 v2 or CSV."""
    from hep2edge.review.db import ResultsDB
    from hep2edge.review.exports import FORMATS, export_results

    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt}: expected one of {', '.join(FORMATS)}")
    store = ResultsDB(_results_folder(results))
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    summary = export_results(store, fmt, out or store.results / "exports" / f"{stamp}.{fmt}", again)
    if summary.file is None:
        console.print(f"nothing new to export: {summary.already} reviewed specimen(s), all exported as {fmt} "
                      "before (--again sends them again)", highlight=False, markup=False)
        return
    console.print(f"{len(summary.exported)} specimen(s) -> {summary.file} ({fmt}); {summary.already} exported "
                  "before", highlight=False, markup=False)


@results_app.command("to-dataset")
def to_dataset(
    results: Path = typer.Argument(None, help="RESULTS folder.", show_default=False),
    out: Path = typer.Argument(None, help="New dataset folder (must not exist, or be empty).", show_default=False),
    skip_missing: bool = typer.Option(False, "--skip-missing",
                                      help="Leave out images whose source or mask is gone or changed."),
) -> None:
    """Reviewed specimens as an I3A-format dataset (images, predicted masks, reviewed labels) for training."""
    from hep2edge.review.dataset import to_dataset as build
    from hep2edge.review.db import ResultsDB

    store = ResultsDB(Path(_needed(str(results) if results else None, "RESULTS")))
    summary = build(store, Path(_needed(str(out) if out else None, "OUT")), skip_missing)
    for line in summary.skipped:
        err_console.print(f"[yellow]skipped[/yellow] {escape(line)}", highlight=False, soft_wrap=True)
    console.print(f"{summary.out}: {summary.specimens} reviewed specimen(s), {summary.images} image(s), masks "
                  f"predicted by the model; next: hep2edge check {summary.out}", highlight=False, markup=False)
