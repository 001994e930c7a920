"""The pymail command: mailx's sending options, turned into a request."""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from pymail import __version__, logs
from pymail.errors import EX_SOFTWARE, EX_USAGE, PymailError

# Options that take a value, for finding a `--` that ends pymail's options.
VALUE_OPTIONS = frozenset("scbraSMqCA")
FLAG_OPTIONS = frozenset("nEvVt")


def split_sendmail_args(args: list[str]) -> tuple[list[str], list[str]]:
    """Split argv at the `--` after which mailx passes sendmail options.

    A `--` before any address ends the options instead, as getopt reads it
    (`mail -s subject -- "$ADDRESS"`); the addresses follow it.
    """
    i = 0
    seen_address = False
    while i < len(args):
        arg = args[i]
        if arg == "--" and not seen_address:
            rest = args[i + 1:]
            addresses, theirs = (rest[:rest.index("--")], rest[
                rest.index("--") + 1:]) if "--" in rest else (rest, [])
            # Click reads what follows its own `--` as arguments only.
            return args[:i] + ["--", *addresses], theirs
        if arg == "--":
            return args[:i], args[i + 1:]
        if not arg.startswith("-") or arg == "-":
            seen_address = True
        if (arg.startswith("-") and not arg.startswith("--") and len(arg) > 1
                and set(arg[1:-1]) <= FLAG_OPTIONS
                and arg[-1] in VALUE_OPTIONS):
            i += 1  # the option's value follows as its own word
        i += 1
    return args, []


def parse_sendmail_args(args: list[str]) -> str | None:
    """Honour -f/-r (envelope sender) of the sendmail options; note others."""
    sender = None
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in ("-f", "-r") and i + 1 < len(args):
            sender = args[i + 1]
            i += 2
            continue
        if arg[:2] in ("-f", "-r") and len(arg) > 2:
            sender = arg[2:]
        else:
            logs.Logger("pymail").info("sendmail option %s ignored", arg)
        i += 1
    return sender


class MailxCommand(click.Command):
    """A click command that keeps what follows `--` for sendmail options."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ours, theirs = split_sendmail_args(list(args))
        ctx.meta["sendmail_args"] = theirs
        return super().parse_args(ctx, ours)


EPILOG = """\b
After the addresses, `-- -f ADDR` sets the envelope sender (other sendmail
options are ignored).
\b
Settings: /etc/mail.rc (not with -n), $MAILRC or ~/.mailrc, /etc/pymail.env,
~/.config/pymail/pymail.env, $PYMAIL_ENV_FILE, PYMAIL_* variables, -S.
\b
Exit status: 0 sent or queued; 64 usage; 65 bad input; 66 missing file;
68 unknown host; 69 refused (5xx); 70 internal error; 73 cannot save; 75
try later; 76 TLS; 77 login refused; 78 configuration. Undelivered mail is
kept in ~/dead.letter.
"""


@click.command(cls=MailxCommand, epilog=EPILOG, context_settings={
    "help_option_names": ["--help"], "max_content_width": 88})
@click.argument("addresses", nargs=-1)
@click.option("-s", "subject", metavar="SUBJECT", help="Subject of the message.")
@click.option("-c", "cc", multiple=True, metavar="ADDR",
              help="Carbon copy recipients (repeatable, comma-separated).")
@click.option("-b", "bcc", multiple=True, metavar="ADDR",
              help="Blind carbon copy recipients (repeatable).")
@click.option("-r", "from_", metavar="ADDR",
              help="From address and envelope sender.")
@click.option("-a", "attach", multiple=True, metavar="FILE",
              help="Attach a file (repeatable).")
@click.option("-S", "assign", multiple=True, metavar="VAR[=VALUE]",
              help="Set a mail.rc variable; beats the files.")
@click.option("-M", "body_type", metavar="TYPE", default="text/plain",
              help="Send stdin as this MIME type (e.g. text/html).")
@click.option("-q", "quote_file", metavar="FILE",
              help="Put this file's text before stdin's.")
@click.option("-C", "custom_headers", multiple=True, metavar="'FIELD: VALUE'",
              help="Add a header (repeatable).")
@click.option("-t", "read_headers", is_flag=True,
              help="stdin starts with headers; To, Cc, Bcc there are "
              "recipients.")
@click.option("-A", "account", metavar="NAME",
              help="Use the settings of `account NAME { ... }` in a mail.rc.")
@click.option("-n", "no_system", is_flag=True,
              help="Do not read /etc/mail.rc.")
@click.option("-E", "skip_empty", is_flag=True,
              help="Send nothing if the body is empty.")
@click.option("-v", "verbose", is_flag=True,
              help="Show the SMTP dialogue on stderr (credentials masked).")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.option("--flush", "mode", flag_value="flush",
              help="Deliver the queued messages that are due; with ids as "
              "arguments, those messages now.")
@click.option("--queue", "mode", flag_value="queue",
              help="List the queued messages.")
@click.option("--delete", "mode", flag_value="delete",
              help="Delete the queued messages whose ids are the arguments.")
@click.option("--check", "mode", flag_value="check",
              help="Diagnose: connect to the relay, show TLS, the certificate, "
              "EHLO and AUTH, and send nothing.")
@click.option("--resend", "mode", flag_value="resend",
              help="Send again what ~/dead.letter (or the files given as "
              "arguments) keeps, to the original recipients.")
@click.option("--demo", is_flag=True,
              help="Send a message through a local TLS relay and show it.")
@click.option("-V", "--version", "version", is_flag=True,
              help="Show the version and exit.")
@click.pass_context
def command(ctx: click.Context, /, addresses: tuple[str, ...],
            **options: Any) -> None:
    """Send mail, as mailx does: `echo text | pymail -s subject address`."""
    if options.pop("version"):
        click.echo(f"pymail {__version__}")
        return
    from pymail.notices import setup_logging
    from pymail.request import Request

    verbose, debug = options["verbose"], options["debug"]
    setup_logging(verbose or debug, debug)
    if options.pop("demo"):
        from pymail.demo import run_demo

        ctx.exit(run_demo())
    mode = options.pop("mode")
    if mode:
        ctx.exit(maintain(mode, list(addresses), options))
    sendmail_args = ctx.meta.get("sendmail_args", [])
    request = Request(
        to=addresses, subject=options["subject"], cc=options["cc"],
        bcc=options["bcc"], from_=options["from_"], attach=options["attach"],
        assign=options["assign"], read_system=not options["no_system"],
        skip_empty=options["skip_empty"], verbose=verbose, debug=debug,
        envelope_sender=parse_sendmail_args(sendmail_args),
        sendmail_args=sendmail_args, body_type=options["body_type"],
        quote_file=options["quote_file"],
        custom_headers=options["custom_headers"],
        read_headers=options["read_headers"], account=options["account"])
    if not (request.to or request.cc or request.bcc or request.read_headers):
        raise click.UsageError("no recipients given")
    from pymail.send import send_request

    ctx.exit(send_request(request))


def maintain(mode: str, args: list[str], options: dict[str, Any]) -> int:
    """--flush, --queue, --delete, --resend, --check: the arguments are ids
    or files. Their report on stdout may be cut short by its reader."""
    try:
        return _maintain(mode, args, options)
    except BrokenPipeError:
        from pymail.files import stdout_gone

        return stdout_gone()


def _maintain(mode: str, args: list[str], options: dict[str, Any]) -> int:
    from pymail import maintenance
    from pymail.notices import check_secrets
    from pymail.settings import Settings, resolve_variables

    def settings_for(account: str | None) -> Settings:
        return resolve_variables(read_system=not options["no_system"],
                                 assignments=list(options["assign"]),
                                 account=account)

    settings = settings_for(options["account"])
    check_secrets(settings)
    if mode == "flush":
        return maintenance.flush(settings, args, settings_for)
    if mode == "queue":
        return maintenance.list_queue(settings)
    if mode == "check":
        from pymail.diagnose import check

        return check(settings)
    if mode == "delete":
        return maintenance.delete(settings, args)
    # -A with --resend sends everything with that account.
    return maintenance.resend(settings, args, None if options["account"]
                              else settings_for)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the command and turn every outcome into an exit code."""
    args = sys.argv[1:] if argv is None else argv
    if argv is None:
        from pymail.files import steady_streams

        steady_streams()
    if argv is None and os.path.basename(sys.argv[0]) in ("sendmail", "mailq"):
        from pymail.sendmail import main as sendmail_main

        sendmail_main()
    try:
        code = command.main(args, prog_name="pymail", standalone_mode=False)
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except click.ClickException as exc:
        exc.show()
        code = EX_USAGE
    except (click.Abort, KeyboardInterrupt):
        code = 130
    except PymailError as exc:
        click.echo(f"pymail: {exc.line()}", err=True)
        code = exc.code
    except Exception:
        if "--debug" in args:
            raise
        click.echo("pymail: internal error (run with --debug for details)",
                   err=True)
        code = EX_SOFTWARE
    sys.exit(code or 0)
