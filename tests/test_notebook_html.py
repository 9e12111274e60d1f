"""HTML cards and catalogue tables: escaping of hostile values, text fallback, unique ids."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from anemoi_ckpt_nb.catalogue import schema
from anemoi_ckpt_nb.notebook import html, text

HOSTILE = "<script>alert(1)</script>"


def make_record(**overrides) -> schema.CheckpointRecord:
    values = dict(
        uuid="0b6f2a52-5c1e-4c3b-9a57-1d2c3e4f5a6b",
        metadata_uuid="0b6f2a52-5c1e-4c3b-9a57-1d2c3e4f5a6b",
        name="aifs-e2",
        kind="training",
        run_id="run-1",
        parents=[schema.ParentLink(uuid="11111111-2222-3333-4444-555555555555", relation="resumed-from")],
        epoch=2,
        global_step=200,
        sha256="ab" * 32,
        size=1_234_567,
        blob="blobs/sha256/" + "ab" * 32,
        filename="aifs-e2.ckpt",
        source=schema.SourceLocation(host="hpc-login1", path="/scratch/aifs-e2.ckpt"),
        sizes=schema.Sizes(
            total_bytes=1_234_567, weights_bytes=400_000, optimizer_bytes=800_000, other_bytes=34_567,
            parameter_count=100_000,
        ),
        dataset="aifs-od-an-oper-0001-mars-o96-1979-2022-6h-v6",
        code=schema.CodeVersions(python="3.11.9", modules={"anemoi.models": "0.5.2"}, git={"anemoi.training": "abc123"}),
        saved_at="2025-05-01T12:00:00",
        registered_at=dt.datetime(2025, 5, 2, 8, 30, tzinfo=dt.timezone.utc),
        registered_by=schema.Who(user="alice", host="hpc-login1"),
    )
    values.update(overrides)
    return schema.CheckpointRecord(**values)


def visible_text(markup: str) -> str:
    """The markup minus the stylesheet: what could be interpreted as HTML."""
    return re.sub(r"<style>.*?</style>", "", markup, flags=re.S)


@pytest.mark.parametrize("where", ["name", "run_id", "dataset", "filename"])
def test_card_escapes_hostile_record_fields(where):
    record = make_record(**{where: HOSTILE})
    card = html.checkpoint_card(record)
    assert HOSTILE not in card
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in card
    assert "<script" not in card


def test_card_escapes_hostile_tags_and_parent_relation_values():
    record = make_record(parents=[schema.ParentLink(uuid=HOSTILE, relation="forked-from")])
    card = html.checkpoint_card(record, tags=[HOSTILE, "a'b\"c"], protected_tags=[HOSTILE])
    assert "<script" not in card
    # Quotes in a tag cannot close an attribute either.
    assert "a&#x27;b&quot;c" in card
    # The protected hostile tag is still shown, highlighted and escaped.
    assert "ackpt-protected' title='&lt;script&gt;alert(1)&lt;/script&gt;'>&lt;script&gt;" in card


def test_card_shows_the_fields_a_user_looks_for():
    card = html.checkpoint_card(make_record(), tags=["candidate", "production-ready"], protected_tags=["production-ready"])
    for expected in (
        "aifs-e2", "0b6f2a52-5c1e-4c3b-9a57-1d2c3e4f5a6b", "training", "run-1", "epoch 2, step 200",
        "resumed-from", "11111111-2222-3333-4444-555555555555", "1.2 MB", "100,000",
        "aifs-od-an-oper-0001", "2025-05-01 12:00:00", "2025-05-02 08:30:00+00:00", "anemoi.models", "0.5.2", "hpc-login1:/scratch/aifs-e2.ckpt",
    ):
        assert expected in card, expected
    assert "<span class='ackpt-tag ackpt-protected' title='production-ready'>production-ready</span>" in card
    assert "<span class='ackpt-tag' title='candidate'>candidate</span>" in card


def test_card_embeds_escaped_text_fallback_and_stylesheet():
    card = html.checkpoint_card(make_record(name=HOSTILE), tags=["candidate"])
    fallback = re.search(r"<pre class='ackpt-text-fallback'>(.*?)</pre>", card, flags=re.S).group(1)
    assert fallback.startswith("Checkpoint &lt;script&gt;")
    assert "tags        candidate" in fallback
    # The rich part is hidden unless the stylesheet (which un-hides it) is applied.
    assert "class='ackpt-wrap' style='display:none'" in card
    assert ".ackpt-wrap { display: block !important" in card
    assert "<symbol id=\"ackpt-icon-checkpoint\"" in card


def test_ids_are_unique_across_renders():
    first = html.checkpoint_card(make_record())
    second = html.checkpoint_card(make_record())
    ids = re.findall(r"id='(ackpt-section-[^']+)'", first + second)
    assert len(ids) >= 4
    assert len(ids) == len(set(ids))
    # Every label points at a checkbox of its own card.
    assert sorted(re.findall(r"for='([^']+)'", first + second)) == sorted(ids)


def test_card_of_index_entry_and_of_plain_mapping():
    entry = schema.IndexEntry(
        uuid="u-1", kind="inference", sha256="cd" * 32, size=2048, filename="x.ckpt",
        registered_at="2025-05-02T08:30:00+00:00", registered_by="alice@h", tags=["candidate"],
    )
    card = html.checkpoint_card(entry, tags=entry.tags)
    assert "2.0 kB" in card and "inference" in card and "none (a root)" in card
    # Sections that need a full record are left out rather than shown empty.
    assert "Code versions" not in card and "Sizes" not in card
    mapping_card = html.checkpoint_card({"uuid": "u-2", "kind": "training"})
    assert "u-2" in mapping_card and "Checkpoint u-2" in mapping_card


def test_catalogue_table_escapes_every_cell_and_header():
    rows = [
        {"uuid": HOSTILE, "name": HOSTILE, "kind": "training", "run_id": HOSTILE, "tags": [HOSTILE], "size": 10},
        {"uuid": "u-2", "name": "ok", "kind": "inference", "run_id": "r", "tags": [], "size": 2_000_000, HOSTILE: 1},
    ]
    table = html.catalogue_table(rows, title=HOSTILE)
    assert "<script" not in table
    assert table.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 4
    assert "2 checkpoints" in table


def test_catalogue_table_from_dataframe_orders_columns_and_truncates():
    pandas = pytest.importorskip("pandas")
    frame = pandas.DataFrame(
        [{"registered_at": f"2025-01-0{i}", "size": 1000 * i, "kind": "training", "name": f"c{i}", "uuid": f"u{i}",
          "tags": ["candidate"] if i == 1 else []} for i in range(1, 8)]
    )
    table = html.catalogue_table(frame, max_rows=5, protected_tags=["candidate"])
    headers = re.findall(r"<th>([^<]+)</th>", table)
    assert headers == ["name", "uuid", "kind", "tags", "size", "registered_at"]
    assert table.count("<tr>") == 1 + 5
    assert "2 more not shown" in table
    assert "ackpt-protected' title='candidate'>candidate" in table
    fallback = re.search(r"<pre class='ackpt-text-fallback'>(.*?)</pre>", table, flags=re.S).group(1)
    assert fallback.splitlines()[0] == "Catalogue: 7 checkpoints"
    assert fallback.splitlines()[-1] == "... 2 more"


def test_empty_catalogue_table():
    table = html.catalogue_table([], title="memory://x")
    assert "0 checkpoints" in table and "<table" not in table


def test_text_forms():
    assert text.format_bytes(999) == "999 B"
    assert text.format_bytes(1500) == "1.5 kB"
    assert text.format_bytes(3_200_000_000) == "3.2 GB"
    assert text.format_bytes(None) == "-"
    lines = text.checkpoint_text(make_record(), tags=["a", "b"]).splitlines()
    assert lines[0] == "Checkpoint aifs-e2"
    assert "  tags        a, b" in lines
    assert "  parents     resumed-from 11111111-2222-3333-4444-555555555555" in lines


def test_table_shortens_ids_and_times_and_drops_empty_columns():
    rows = [{"uuid": "0b6f2a52-5c1e-4c3b-9a57-1d2c3e4f5a6b", "name": None, "kind": "training",
             "run_id": "d31f9cf8-b2bc-43f4-b4eb-6edd172140e7", "registered_at": "2026-11-28T13:53:54.224279+00:00"}]
    table = html.catalogue_table(rows)
    assert re.findall(r"<th>([^<]+)</th>", table) == ["uuid", "kind", "run_id", "registered_at"]
    assert "title='d31f9cf8-b2bc-43f4-b4eb-6edd172140e7'>d31f9cf8</td>" in table
    # To the minute, so that the listing fits; the second and the zone in the tooltip.
    assert "<td title='2026-11-28 13:53:54+00:00'>2026-11-28 13:53</td>" in table


def test_catalogue_table_view_keeps_its_frame():
    pandas = pytest.importorskip("pandas")
    frame = pandas.DataFrame([{"uuid": "u1", "kind": "training", "tags": [HOSTILE]}])
    view = html.CatalogueTable(frame, title="memory://x")
    assert view.frame is frame and len(view) == 1
    assert "<script" not in view._repr_html_()
    assert repr(view).splitlines()[0] == "memory://x: 1 checkpoint"


# --- widths: what keeps cards and tables inside the output (measured live in test_jupyterlab_live) --


def test_card_labels_carry_their_text_as_tooltip_and_hashes_break_in_groups_of_16():
    card = html.checkpoint_card(make_record())
    assert "<dt title='optimizer state'>optimizer state</dt>" in card
    # A sha256 may wrap only between groups of 16 (never 2 characters alone on a line).
    group = "<span class='ackpt-nobr'>" + "ab" * 8 + "</span>"
    assert f"<dd><span class='ackpt-mono'>{group * 4}</span></dd>" in card
    assert f"blobs/sha256/{group * 4}" in card
    css = html.stylesheet()
    # One label column for every field list, so that the values of all sections start at one x,
    # and JupyterLab's 20% / 80% widths of dt and dd undone.
    assert "grid-template-columns: 12em minmax(0, 1fr)" in css
    assert re.search(r"dl\.ackpt-fields dt, dl\.ackpt-fields dd \{ float: none; width: auto; \}", css)


def test_locations_table_wraps_its_places_inside_a_scroll_box():
    location = {"site": "hpc", "kind": "filesystem", "url": "/scratch/" + "x" * 200, "verified_at": None}
    card = html.checkpoint_card(make_record(), locations=[location])
    assert "<div class='ackpt-scroll'><table class='ackpt-table'>" in card
    assert "<td class='ackpt-cell-wrap'><span class='ackpt-mono'>/scratch/" in card


def test_listing_cuts_free_text_with_a_tooltip_and_wraps_lists():
    rows = [{"uuid": "0b6f2a52-5c1e-4c3b-9a57-1d2c3e4f5a6b", "kind": "training", "tags": ["a-very-long-tag"],
             "dataset": "aifs-ea-an-oper-0001-mars-o96-2020-2020-6h-v1", "sites": ["catalogue", "hpc-scratch"]}]
    table = html.catalogue_table(rows)
    assert "<div class='ackpt-scroll'><table class='ackpt-table ackpt-wide'>" in table
    assert ("<span class='ackpt-cut' title='aifs-ea-an-oper-0001-mars-o96-2020-2020-6h-v1'>"
            "aifs-ea-an-oper-0001-mars-o96-2020-2020-6h-v1</span>") in table
    assert "<td class='ackpt-cell-words'>catalogue, hpc-scratch</td>" in table
    assert "<td class='ackpt-cell-tags'><span class='ackpt-tag' title='a-very-long-tag'>" in table


def test_browser_rows_are_padded_into_columns():
    entries = [
        {"uuid": "aaaaaaaa-1", "kind": "training", "filename": "last.ckpt", "global_step": 500, "tags": ["candidate"]},
        {"uuid": "bbbbbbbb-2", "kind": "inference", "name": "inference-last.ckpt", "global_step": 50},
        {"uuid": "cccccccc-3", "kind": "training", "filename": "x" * 80},
    ]
    labels = text.row_labels(entries[:2])
    assert labels[0] == "aaaaaaaa  training   last.ckpt            step 500  [candidate]"
    assert labels[1] == "bbbbbbbb  inference  inference-last.ckpt  step 50"
    labels = text.row_labels(entries)  # a long name is cut at 48 characters, the columns still line up
    assert labels[2] == "cccccccc  training   " + "x" * 45 + "..."
    assert len({label.index("step") for label in labels[:2]}) == 1
