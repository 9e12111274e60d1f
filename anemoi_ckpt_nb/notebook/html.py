"""HTML for Jupyter: checkpoint cards and catalogue tables.

Pure functions returning ``str``. Every value that comes from a checkpoint or a
catalogue (names, tags, run ids, paths, metadata) is escaped with
:func:`html.escape`: they come from other people's files. Each output embeds its
text form in a ``<pre>``, shown when the stylesheet is not applied (an untrusted
notebook), as xarray does.
"""

from __future__ import annotations

import functools
import html
import re
import uuid as _uuid
from collections.abc import Iterable
from importlib.resources import files
from typing import Any

from anemoi_ckpt_nb.notebook import text as _text


@functools.lru_cache(maxsize=None)
def _load_static_files() -> tuple[str, str]:
    """``(icons_svg, css)`` from ``notebook/static/``, read once per process."""
    static = files("anemoi_ckpt_nb.notebook") / "static"
    return (static / "icons.svg").read_text(encoding="utf-8"), (static / "style.css").read_text(encoding="utf-8")


def stylesheet() -> str:
    """The cards' and widgets' stylesheet as a ``<style>`` element (for widgets, which hold no card)."""
    return f"<style>{_load_static_files()[1]}</style>"


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _unique_id(prefix: str) -> str:
    # Ids must be unique in the whole notebook page, so that each collapsible
    # section opens on its own when the same checkpoint is shown twice.
    return f"ackpt-{prefix}-{_uuid.uuid4()}"


def _wrap(body: str, fallback: str, *, wide: bool = False) -> str:
    icons, css = _load_static_files()
    classes = "ackpt-wrap ackpt-wide-view" if wide else "ackpt-wrap"
    return (
        f"<div>{icons}<style>{css}</style>"
        f"<pre class='ackpt-text-fallback'>{_e(fallback)}</pre>"
        # Hidden unless the stylesheet applies: then the CSS shows it and hides the <pre>.
        f"<div class='{classes}' style='display:none'>{body}</div></div>"
    )


def lineage_view(svg: str, fallback: str) -> str:
    """A lineage drawing inline in the page, where its ink follows the theme (as an image it cannot).

    Args:
        svg: The drawing, as :meth:`~anemoi_ckpt_nb.notebook.graph.LineageGraph.svg` returns it
            (built from escaped labels).
        fallback: Its text form, shown where the stylesheet does not apply.

    Returns:
        Self-contained HTML (stylesheet, icons, text fallback).
    """
    return _wrap(f"<div class='ackpt-lineage-view'>{svg}</div>", fallback, wide=True)


def tag_chips(tags: Iterable[str], *, protected: Iterable[str] = ()) -> str:
    """Tags as chips; protected ones (``production-ready``, ...) stand out.

    Args:
        tags: Tag names.
        protected: Tag names the catalogue protects.

    Returns:
        HTML, or a muted "none" when there are no tags.
    """
    protected = set(protected)
    chips = [
        f"<span class='ackpt-tag{' ackpt-protected' if tag in protected else ''}' title='{_e(tag)}'>{_e(tag)}</span>"
        for tag in tags
    ]
    return "".join(chips) or "<span class='ackpt-none'>none</span>"


def _section(title: str, body: str, *, count: int | None = None, expanded: bool = False) -> str:
    section_id = _unique_id("section")
    label = f"{_e(title)} ({count})" if count is not None else _e(title)
    checked = " checked" if expanded else ""
    return (
        f"<input id='{section_id}' class='ackpt-section-in' type='checkbox'{checked}>"
        f"<label for='{section_id}' class='ackpt-section-label'>{label}</label>"
        f"<div class='ackpt-section-body'>{body}</div>"
    )


def _fields(rows: list[tuple[str, str]], *, raw: frozenset[str] = frozenset()) -> str:
    # Every field list of a card has the same label column, so that all values start at one x;
    # a label longer than it (a module name) is cut with an ellipsis and shown whole in its tooltip.
    items = "".join(
        f"<dt title='{_e(label)}'>{_e(label)}</dt><dd>{value if label in raw else _e(value)}</dd>" for label, value in rows
    )
    return f"<dl class='ackpt-fields'>{items}</dl>"


def _identifier(value: Any) -> str:
    """A hash, path or blob name in monospace, whose hex runs break only between groups of 16
    (a sha256 wraps as 4 x 16 or 2 x 32, never leaving 2 characters on a line)."""
    grouped = re.sub(r"[0-9a-f]{16}", r"<span class='ackpt-nobr'>\g<0></span>", _e(value))
    return f"<span class='ackpt-mono'>{grouped}</span>"


def _cut(value: str, *, title: str | None = None) -> str:
    """A table cell's text cut with an ellipsis where too long, shown whole in its tooltip."""
    return f"<span class='ackpt-cut' title='{_e(title if title is not None else value)}'>{_e(value)}</span>"


def _parents_html(record: Any) -> str:
    links = _text.parent_links(record)
    if not links:
        return "<span class='ackpt-none'>none (a root)</span>"
    return "<br>".join(
        f"<span class='ackpt-relation'>{_e(relation)}</span> <span class='ackpt-mono'>{_e(uuid)}</span>"
        for uuid, relation in links
    )


def _code_html(record: Any) -> tuple[str, int]:
    code = _text.field(record, "code")
    modules = dict(_text.field(code, "modules", {}) or {})
    git = dict(_text.field(code, "git", {}) or {})
    python = _text.field(code, "python")
    rows = ([("python", str(python))] if python else []) + sorted(modules.items())
    rows += [(f"{name} (git)", commit) for name, commit in sorted(git.items())]
    return _fields([(str(name), str(version)) for name, version in rows]), len(rows)


def checkpoint_card(
    record: Any,
    *,
    tags: Iterable[str] = (),
    protected_tags: Iterable[str] = (),
    title: str | None = None,
    locations: Iterable[Any] | None = None,
) -> str:
    """A checkpoint as an HTML card: name, uuid, kind, run, step, tags, parents, sizes, dataset, dates.

    Args:
        record: Record-like: a ``CheckpointRecord``, an ``IndexEntry`` or a mapping with their keys.
        tags: Its current tags.
        protected_tags: Tags the catalogue protects, highlighted.
        title: Heading; defaults to the record's name, else its file name, else its short uuid.
        locations: Its copies at sites (``Location`` models or mappings), shown in a "Locations" section.

    Returns:
        Self-contained HTML (stylesheet, icons, text fallback).
    """
    tags = list(tags)
    field = _text.field
    kind = str(field(record, "kind", "unknown"))
    heading = title or field(record, "name") or field(record, "filename") or _text.short_uuid(field(record, "uuid"))
    size = _text.sizes(record)
    rows = [
        ("uuid", f"<span class='ackpt-mono'>{_e(field(record, 'uuid', '-'))}</span>"),
        ("run", f"<span class='ackpt-mono'>{_e(field(record, 'run_id', '-'))}</span>"),
        ("step", _e(_text.step_text(record))),
        ("tags", tag_chips(tags, protected=protected_tags)),
        ("parents", _parents_html(record)),
        ("size", _e(_text.format_bytes(size["total"]))),
        ("parameters", _e(_text.format_count(size["parameters"]))),
        ("dataset", _e(field(record, "dataset", "-"))),
        ("saved", _e(_text.format_time(field(record, "saved_at")))),
        ("registered", _e(_text.format_time(field(record, "registered_at")))),
        ("runs with", _e(_text.runs_with_line(record))),
    ]
    body = (
        "<div class='ackpt-header'><svg class='ackpt-icon'><use href='#ackpt-icon-checkpoint'></use></svg>"
        f"<span class='ackpt-title'>{_e(heading)}</span>"
        f"<span class='ackpt-kind ackpt-{_e(kind)}'>{_e(kind)}</span></div>"
        + _fields(rows, raw=frozenset(label for label, _ in rows))
    )
    if size["weights"] is not None:
        parts = [
            (label, _text.format_bytes(size[key]))
            for label, key in (("weights", "weights"), ("optimizer state", "optimizer"), ("other", "other"))
        ]
        body += _section("Sizes", _fields(parts))
    code, count = _code_html(record)
    if count:
        body += _section("Code versions", code, count=count)
    files_rows = [
        (label, _identifier(field(record, key)) if label != "format" else _e(field(record, key)))
        for label, key in (("file", "filename"), ("format", "format"), ("sha256", "sha256"), ("blob", "blob"))
        if field(record, key) is not None
    ]
    source = field(record, "source")
    if source is not None:
        files_rows.append(("registered from", _e(f"{field(source, 'host', '?')}:{field(source, 'path', '?')}")))
    if files_rows:
        body += _section("File", _fields(files_rows, raw=frozenset(label for label, _ in files_rows)))
    fallback = _text.checkpoint_text(record, tags=tags)
    if locations is not None:
        lines = _location_lines(locations)
        body += _section("Locations", _locations_html(lines), count=len(lines), expanded=True)
        fallback += "".join(f"\nlocation: {site} ({kind}) {url}, verified {when}{', ' + problem if problem else ''}" for site, kind, url, when, problem in lines)
    return _wrap(body, fallback)


def checkpoint_card_of(checkpoint: Any) -> str:
    """The card of a registered checkpoint (a :class:`~anemoi_ckpt_nb.notebook.handed.HandedCheckpoint`)
    with its tags and copies: what ``cat.get(uuid)`` shows, and the widgets show the same."""
    try:
        locations = checkpoint.locations()
    except Exception:  # noqa: BLE001 - a display must not raise (e.g. the catalogue is unreachable)
        locations = None
    return checkpoint_card(
        checkpoint.record, tags=checkpoint.tags, protected_tags=checkpoint.catalogue.protected_tags, locations=locations
    )


def _location_lines(locations: Iterable[Any]) -> list[tuple[str, str, str, str, str]]:
    """``(site, kind, url, verified, problem)`` text of each copy."""
    field = _text.field
    lines = []
    for loc in locations:
        when = field(loc, "verified_at")
        when = when.isoformat(timespec="seconds") if hasattr(when, "isoformat") else str(when or "never")
        lines.append((str(field(loc, "site", "?")), str(field(loc, "kind", "?")), str(field(loc, "url", "?")), when, str(field(loc, "problem", ""))))
    return lines


def _locations_html(lines: list[tuple[str, str, str, str, str]]) -> str:
    if not lines:
        return "<span class='ackpt-none'>no copy recorded</span>"
    # The place wraps (a long path or URL), so that the table fits the card and its status shows.
    rows = "".join(
        f"<tr><td>{_e(site)}</td><td>{_e(kind)}</td><td class='ackpt-cell-wrap'>{_identifier(url)}</td><td>{_e(when)}</td>"
        f"<td class='ackpt-cell-wrap'>{_e(problem) if problem else 'ok'}</td></tr>"
        for site, kind, url, when, problem in lines
    )
    head = "".join(f"<th>{h}</th>" for h in ("site", "kind", "where", "verified", "status"))
    return f"<div class='ackpt-scroll'><table class='ackpt-table'><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>"


#: Listing columns of free text, cut to a width (whole in the tooltip) so that the table fits;
#: lists (parents, sites) wrap between their words instead.
_CUT_COLUMNS = frozenset({"name", "dataset"})
_WRAP_COLUMNS = frozenset({"parents", "sites"})


def catalogue_table(
    rows: Any,
    *,
    title: str = "Catalogue",
    protected_tags: Iterable[str] = (),
    max_rows: int = 50,
) -> str:
    """A catalogue listing as an HTML table.

    Sort and filter with the data, not the page: pass ``catalogue.to_pandas().sort_values(...)``
    or the result of ``catalogue.search(...)``.

    Args:
        rows: A DataFrame (``Catalogue.to_pandas()``) or an iterable of record-likes.
        title: Heading, e.g. the catalogue's URL.
        protected_tags: Tags the catalogue protects, highlighted.
        max_rows: Rows shown; the rest are counted in a footer.

    Returns:
        Self-contained HTML (stylesheet, icons, text fallback).
    """
    records = _text.table_rows(rows)
    columns = _text.table_columns(records)
    protected = list(protected_tags)
    head = "".join(f"<th>{_e(column)}</th>" for column in columns)
    lines = []
    for row in records[:max_rows]:
        cells = []
        for column in columns:
            value = row.get(column)
            if column == "tags" and isinstance(value, (list, tuple)):
                cells.append(f"<td class='ackpt-cell-tags'>{tag_chips(value, protected=protected)}</td>")
            elif column in ("uuid", "run_id"):
                cells.append(f"<td class='ackpt-mono' title='{_e(value)}'>{_e(_text.short_uuid(value))}</td>")
            elif column.endswith("_at"):  # to the minute; the second and the zone in the tooltip
                full = _text.cell_text(column, value)
                cells.append(f"<td title='{_e(full)}'>{_e(full[:16])}</td>")
            elif column in _CUT_COLUMNS:
                cells.append(f"<td>{_cut(_text.cell_text(column, value))}</td>")
            elif column in _WRAP_COLUMNS:
                cells.append(f"<td class='ackpt-cell-words'>{_e(_text.cell_text(column, value))}</td>")
            else:
                cells.append(f"<td>{_e(_text.cell_text(column, value))}</td>")
        lines.append("<tr>" + "".join(cells) + "</tr>")
    count = len(records)
    body = (
        "<div class='ackpt-header'><svg class='ackpt-icon'><use href='#ackpt-icon-catalogue'></use></svg>"
        f"<span class='ackpt-title'>{_e(title)}</span>"
        f"<span class='ackpt-kind'>{count} checkpoint{'s' if count != 1 else ''}</span></div>"
    )
    if records:
        body += (
            f"<div class='ackpt-scroll'><table class='ackpt-table ackpt-wide'><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(lines)}</tbody></table></div>"
        )
    if count > max_rows:
        body += (
            f"<div class='ackpt-footer'>{count - max_rows} more not shown: "
            "narrow with search(...) or see all with to_pandas()</div>"
        )
    return _wrap(body, _text.catalogue_text(records, title=title, max_rows=max_rows))


class CatalogueTable:
    """A listing that displays as :func:`catalogue_table` and keeps its data in ``frame``.

    Args:
        frame: A DataFrame (``Catalogue.to_pandas(...)``); sort or filter it as any DataFrame.
        title: Heading, e.g. the catalogue's URL.
        protected_tags: Tags the catalogue protects, highlighted.
    """

    def __init__(self, frame: Any, *, title: str = "Catalogue", protected_tags: Iterable[str] = ()) -> None:
        self.frame = frame
        self.title = title
        self.protected_tags = list(protected_tags)

    def __len__(self) -> int:
        return len(self.frame)

    def _repr_html_(self) -> str:
        return catalogue_table(self.frame, title=self.title, protected_tags=self.protected_tags)

    def __repr__(self) -> str:
        return _text.catalogue_text(self.frame, title=self.title)


def convert_report(outcomes: Iterable[Any], *, title: str = "Conversion") -> str:
    """A batch conversion (``ConvertOutcome`` values) as an HTML table: one row per input.

    Args:
        outcomes: What :func:`anemoi_ckpt_nb.api.convert_many` returned.
        title: Heading, e.g. the output folder.

    Returns:
        Self-contained HTML (stylesheet, icons, text fallback).
    """
    from anemoi_ckpt_nb.errors import describe_error

    outcomes = list(outcomes)
    failed = sum(1 for outcome in outcomes if not outcome.ok)
    rows = []
    for outcome in outcomes:
        if outcome.ok:
            r = outcome.result
            rows.append(
                "<tr><td><span class='ackpt-tag'>converted</span></td>"
                f"<td class='ackpt-cell-wrap'>{_identifier(r.source)}</td><td class='ackpt-cell-wrap'>{_identifier(r.destination)}</td>"
                f"<td>{_e(_text.format_bytes(r.size))}</td>"
                f"<td class='ackpt-mono' title='{_e(r.uuid)}'>{_e(_text.short_uuid(r.uuid))}</td>"
                f"<td>{r.seconds:.1f} s</td></tr>"
            )
        else:
            rows.append(
                "<tr><td><span class='ackpt-tag ackpt-protected'>failed</span></td>"
                f"<td class='ackpt-cell-wrap'>{_identifier(outcome.source)}</td>"
                f"<td class='ackpt-cell-wrap' colspan='4'>{_e(describe_error(outcome.error))}</td></tr>"
            )
    summary = f"{len(outcomes) - failed} converted" + (f", {failed} failed" if failed else "")
    body = (
        "<div class='ackpt-header'><svg class='ackpt-icon'><use href='#ackpt-icon-checkpoint'></use></svg>"
        f"<span class='ackpt-title'>{_e(title)}</span><span class='ackpt-kind'>{_e(summary)}</span></div>"
        "<div class='ackpt-scroll'><table class='ackpt-table ackpt-wide'><thead><tr><th>status</th><th>source</th>"
        f"<th>output</th><th>size</th><th>uuid</th><th>time</th></tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
    )
    return _wrap(body, _text.convert_text(outcomes))
