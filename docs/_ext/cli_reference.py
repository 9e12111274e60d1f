"""The ``anemoi-ckpt`` command reference, generated from the real argparse parsers.

``{anemoi-ckpt-reference}`` in a page becomes one section per command (and per action of a
command with actions, such as ``site add``): its usage line as argparse prints it, its
description, every argument and option with its help and default, and its exit statuses.
Nothing is written by hand, so the reference cannot drift from the parsers: a new command in
``anemoi_ckpt_nb.cli.COMMANDS`` appears here on the next build.

Exit statuses: every command shares those of ``anemoi_ckpt_nb.cli.main`` (``COMMON_EXIT_STATUS``
below); a command module that returns others declares them in a module-level
``EXIT_STATUS: dict[int, str]``, which is listed first.
"""

from __future__ import annotations

import argparse
import importlib

from docutils import nodes
from sphinx.util.docutils import SphinxDirective

#: What ``anemoi_ckpt_nb.cli.main`` returns for every command (see its ``except`` clauses).
COMMON_EXIT_STATUS: dict[int, str] = {
    0: "success",
    2: "an error the command explains in one line on stderr (bad input, missing file or checkpoint, "
    "refused operation), or wrong arguments (argparse's usage message)",
    3: "an unexpected error (a bug: please report it with the output of ANEMOI_CKPT_DEBUG=1)",
    130: "interrupted (Ctrl-C); nothing is left half-written",
    141: "the reader of the output went away (`anemoi-ckpt ls | head`); the command stops quietly",
}


def _subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return None


def _paragraphs(text: str | None) -> list[nodes.Node]:
    # Plain text on purpose: help strings hold `*`, backquotes and brackets that are not markup.
    return [nodes.paragraph(text=part.strip()) for part in (text or "").split("\n\n") if part.strip()]


def _argument_row(action: argparse.Action) -> nodes.definition_list_item:
    if action.option_strings:
        name = ", ".join(action.option_strings)
        if action.nargs != 0:
            metavar = action.metavar or action.dest.upper()
            name += f" {metavar if isinstance(metavar, str) else ' '.join(metavar)}"
    else:
        name = action.metavar if isinstance(action.metavar, str) else action.dest
        if action.nargs in ("+", "*"):
            name += " ..."
    help_text = (action.help or "").replace("%(default)s", str(action.default)).replace("%%", "%")
    extras = []
    if action.choices and not isinstance(action, argparse._SubParsersAction):
        extras.append("choices: " + ", ".join(str(choice) for choice in action.choices))
    if action.required and action.option_strings:
        extras.append("required")
    # A help text that names its default already ("default 24", "default: ...") is not told it twice.
    if (action.option_strings and action.default not in (None, False, argparse.SUPPRESS) and action.nargs != 0
            and action.default != [] and "default" not in help_text):
        extras.append(f"default: {action.default}")
    if extras:
        help_text = f"{help_text} ({'; '.join(extras)})" if help_text else "; ".join(extras)
    term = nodes.term("", "", nodes.literal(text=name))
    definition = nodes.definition("", nodes.paragraph(text=help_text or "(no description)"))
    return nodes.definition_list_item("", term, definition)


def _command_section(
    document: nodes.document, title: str, parser: argparse.ArgumentParser, summary: str | None,
    exit_status: dict[int, str],
) -> nodes.section:
    section = nodes.section(ids=[nodes.make_id(title)], names=[nodes.fully_normalize_name(title)])
    section += nodes.title(text=title)
    document.note_implicit_target(section)
    if summary:
        section += nodes.paragraph(text=summary[0].upper() + summary[1:] + ("" if summary.endswith(".") else "."))
    section += nodes.literal_block(text=parser.format_usage().removeprefix("usage: ").strip(), language="text")
    section += _paragraphs(parser.description)
    actions = [action for action in parser._actions
               if action.help != argparse.SUPPRESS and not isinstance(action, (argparse._HelpAction,
                                                                               argparse._SubParsersAction))]
    if actions:
        section += nodes.rubric(text="Arguments")
        section += nodes.definition_list("", *(_argument_row(action) for action in actions))
    children = _subparsers(parser)
    if children is not None:
        helps = {choice.dest: choice.help for choice in children._choices_actions}
        for name, child in children.choices.items():
            section += _command_section(document, f"{title} {name}", child, helps.get(name), exit_status)
    else:
        section += nodes.rubric(text="Exit status")
        merged = {**COMMON_EXIT_STATUS, **exit_status}
        items = [nodes.definition_list_item("", nodes.term("", "", nodes.literal(text=str(code))),
                                            nodes.definition("", nodes.paragraph(text=meaning)))
                 for code, meaning in sorted(merged.items())]
        section += nodes.definition_list("", *items)
    return section


class CliReference(SphinxDirective):
    """``{anemoi-ckpt-reference}``: every command of ``anemoi-ckpt``, from its parser."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        from anemoi_ckpt_nb import cli

        parser = cli.build_parser()
        self.env.note_dependency(cli.__file__)
        result: list[nodes.Node] = [nodes.literal_block(text=parser.format_usage().removeprefix("usage: ").strip(),
                                                        language="text")]
        result += _paragraphs(parser.description)
        global_actions = [action for action in parser._actions
                          if action.option_strings and not isinstance(action, argparse._HelpAction)]
        result.append(nodes.definition_list("", *(_argument_row(action) for action in global_actions)))
        commands = _subparsers(parser)
        helps = {choice.dest: choice.help for choice in commands._choices_actions}
        for name, module_name in cli.COMMANDS.items():
            module = importlib.import_module(f"anemoi_ckpt_nb.cli.{module_name}")
            self.env.note_dependency(module.__file__)
            result.append(_command_section(self.state.document, f"anemoi-ckpt {name}", commands.choices[name],
                                           helps.get(name), getattr(module, "EXIT_STATUS", {})))
        return result


def setup(app):
    app.add_directive("anemoi-ckpt-reference", CliReference)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
