"""convert_many from Python: a report that displays, a progress bar (the widget in a real kernel)."""

from __future__ import annotations

import json
import sys

import pytest

import anemoi_ckpt_nb
from anemoi_ckpt_nb import examples
from anemoi_ckpt_nb.api.batch import ConvertReport, convert_many


@pytest.fixture
def inputs(tmp_path):
    good = [examples.write_training_checkpoint(tmp_path / "in" / f"e{i}.ckpt", seed=i).path for i in range(2)]
    bad = tmp_path / "in" / "<corrupt>.ckpt"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    return good, bad


def test_a_report_lists_each_input_and_counts_the_failures(tmp_path, inputs, capsys):
    good, bad = inputs
    report = convert_many([good[0], bad, str(tmp_path / "in" / "e1.ckpt")], tmp_path / "out", progress=False)

    assert isinstance(report, ConvertReport) and len(report) == 3
    assert not report.ok
    assert [r.source for r in report.results] == [good[0], good[1]]
    assert [o.source for o in report.failed] == [bad]
    assert all(r.destination.is_file() for r in report.results)

    text = str(report).splitlines()
    assert text[0].startswith("converted ") and str(good[0]) in text[0]
    assert text[1].startswith("FAILED") and str(bad) in text[1]
    assert text[-1] == "2 converted, 1 failed"
    assert repr(report) == f"<ConvertReport {tmp_path / 'out'}: 2 converted, 1 failed>"

    html = report._repr_html_()
    assert html.count("<tr>") == 1 + 3  # the header, then one row per input
    assert "&lt;corrupt&gt;.ckpt" in html and "<corrupt>" not in html.split("<pre")[0]
    assert "2 converted, 1 failed" in html

    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""  # progress=False and no echo: silent


def test_one_pattern_as_a_string_and_the_top_level_name(tmp_path, inputs):
    good, _ = inputs
    report = anemoi_ckpt_nb.convert_many(str(tmp_path / "in" / "e*.ckpt"), tmp_path / "out", progress=False)
    assert report.ok and sorted(r.source.name for r in report.results) == ["e0.ckpt", "e1.ckpt"]


def test_echo_prints_each_line_and_progress_draws_a_bar(tmp_path, inputs, capsys):
    good, _ = inputs
    report = convert_many(good, tmp_path / "out", progress=True, echo=True)
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert len(lines) == 2 and all(line.startswith("converted ") for line in lines)
    assert "convert:" in captured.err and "B/s" in captured.err  # tqdm's byte bar
    assert report.ok


def test_in_a_real_kernel_the_bar_is_a_widget_and_the_report_a_table(tmp_path, inputs):
    """What a notebook user sees: tqdm's notebook bar (a widget), then the report's HTML table."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    good, bad = inputs
    code = (
        "from anemoi_ckpt_nb import convert_many\n"
        f"report = convert_many({[str(p) for p in (*good, bad)]!r}, {str(tmp_path / 'out')!r})\n"
        "report"
    )
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()

    outputs = notebook.cells[0].outputs
    kinds = [set(out.get("data", {})) for out in outputs]
    assert any("application/vnd.jupyter.widget-view+json" in k for k in kinds), json.dumps(outputs)[:2000]
    (result,) = [out for out in outputs if out["output_type"] == "execute_result"]
    assert "ackpt-table" in result["data"]["text/html"] and "2 converted, 1 failed" in result["data"]["text/html"]
    assert "2 converted, 1 failed" in result["data"]["text/plain"]
    assert sys.executable  # the kernel is this environment's python3 (ipykernel's native kernel)
