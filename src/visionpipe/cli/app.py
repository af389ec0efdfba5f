"""Typer application, global options, and the exit-status contract.

Exit status: 0 when every input was processed; 2 when some inputs failed (their results are still
written); 1 for usage errors and models that cannot be loaded — a one-line message, no traceback
unless ``--debug``.
"""

from __future__ import annotations

import io
import os
import signal
import sys
import warnings

import typer

from visionpipe._version import __version__
from visionpipe.cli import deploy, detect, ensemble, evaluate, jobs, models, monitor, optimize, samples, serve, video
from visionpipe.interrupt import stop_on_signals
from visionpipe.native_output import lower_native_log_levels, native_stderr_silenced

app = typer.Typer(
    name="visionpipe",
    help="Run object detectors in production: detect, evaluate and inspect models.",
    epilog="Example: visionpipe samples samples && visionpipe detect samples --save-images --out out",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
_state = {"debug": False}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"visionpipe {__version__}")
        raise typer.Exit()


@app.callback()
def _global(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
) -> None:
    _state["debug"] = debug


app.command(help=detect.HELP, epilog=detect.EXAMPLE)(detect.detect)
app.command("eval", help=evaluate.HELP, epilog=evaluate.EXAMPLE)(evaluate.evaluate)
app.add_typer(models.app, name="models")
app.add_typer(ensemble.app, name="ensemble")
app.command("samples", help=samples.HELP, epilog=samples.EXAMPLE)(samples.samples)
app.command("video", help=video.HELP, epilog=video.EXAMPLE)(video.video)
app.command("optimize", help=optimize.OPTIMIZE_HELP, epilog=optimize.OPTIMIZE_EXAMPLE)(optimize.optimize)
app.command("benchmark", help=optimize.BENCHMARK_HELP, epilog=optimize.BENCHMARK_EXAMPLE)(optimize.benchmark)
app.command("deploy", help=deploy.DEPLOY_HELP, epilog=deploy.DEPLOY_EXAMPLE)(deploy.deploy)
app.add_typer(deploy.bundle_app, name="bundle")
app.add_typer(monitor.app, name="monitor")
app.command("serve", help=serve.HELP, epilog=serve.EXAMPLE)(serve.serve)
app.command("merge", help=jobs.MERGE_HELP, epilog=jobs.MERGE_EXAMPLE)(jobs.merge)

# Typer re-exports click's Exit and Abort; its base ClickException (usage errors) is found through
# BadParameter, since recent Typer releases vendor their own click.
_ClickException = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


_SIGNAL_EXIT_CODES = (128 + signal.SIGINT, 128 + signal.SIGTERM)


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    from visionpipe.errors import printable

    sys.stderr.write(f"warning: {printable(' '.join(str(message).split()))}\n")


def main(argv: list[str] | None = None) -> None:
    from visionpipe.errors import VisionpipeError, printable

    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    lower_native_log_levels()
    warnings.showwarning = _one_line_warning
    try:
        # SIGTERM stops every command as Ctrl-C does (its clean-up runs, temporary files go).
        # detect, video and sharded jobs install their own handlers to finish their outputs and
        # summary; a signal reaching this outer one was handled by no command.
        with native_stderr_silenced(enabled=not debug), stop_on_signals() as unhandled:
            code = typer.main.get_command(app).main(args=args, prog_name="visionpipe", standalone_mode=False)
        if unhandled.received:  # Typer turned it into exit 130, whichever signal it was
            signum = unhandled.received[0]
            sys.stderr.write(f"stopped by {signal.Signals(signum).name}\n")
            code = 128 + signum
    except typer.Exit as exc:
        code = exc.exit_code
    except typer.Abort:
        typer.echo("aborted", err=True)
        code = 130
    except _ClickException as exc:  # usage errors: bad options, missing arguments
        shown = io.StringIO()
        exc.show(file=shown)
        sys.stderr.write("\n".join(printable(line) for line in shown.getvalue().splitlines()) + "\n")
        code = 1
    except (VisionpipeError, OSError, ValueError) as exc:
        if debug:
            raise
        typer.echo("error: " + printable(" ".join(str(exc).split())), err=True)  # one line, whatever the cause
        code = 1
    if code in _SIGNAL_EXIT_CODES:
        # stopped by a signal, with every output already closed and the summary written: leave
        # now rather than wait for native libraries to tear down (a stream still connecting in
        # FFmpeg, ONNX Runtime sessions), so Ctrl-C is honoured within a second
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code if isinstance(code, int) else 0)
