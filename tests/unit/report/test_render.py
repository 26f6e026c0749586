"""The report's two renderings of one block list: Markdown and self-contained HTML."""

import base64
import re

from bench.format import money
from bench.report.render import Figure, Heading, Paragraph, Table, html_page, markdown

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)
BLOCKS = [
    Heading(1, "Report"),
    Paragraph("cost <b>& more</b>"),
    Table(["offer", "price"], [["a|b", "$1"], ["<script>", "$2"]]),
    Figure("plot.png", "A plot"),
]


def test_markdown_escapes_table_pipes_and_links_figures():
    text = markdown(BLOCKS)
    assert "# Report" in text and "| a\\|b | $1 |" in text and "![A plot](plots/plot.png)" in text
    assert text.count("|---|---|") == 1


def test_html_escapes_text_and_embeds_figures():
    page = html_page(BLOCKS, {"plot.png": PNG}, "Report")
    assert "<script>" not in page and "&lt;script&gt;" in page and "&lt;b&gt;&amp; more" in page
    (src,) = re.findall(r"src='data:image/png;base64,([^']+)'", page)
    assert base64.b64decode(src) == PNG
    assert not re.search(r"(src|href)=['\"]?https?:", page)  # self-contained: nothing to fetch


def test_money_keeps_three_significant_digits_below_a_dollar():
    assert (money(None), money(0), money(1234.5), money(0.7069), money(0.00001131)) == (
        "-",
        "$0.00",
        "$1,234.50",
        "$0.707",
        "$0.0000113",
    )


def test_telemetry_plot_adds_gpu_panels_when_gpus_were_sampled():
    import io

    from PIL import Image

    from bench.report import _telemetry_series
    from bench.report.plots import telemetry

    rows = [
        {
            "t_ns": i * 10**9,
            "engine_cpu_percent": 50.0,
            "client_cpu_percent": 2.0,
            "engine_rss_bytes": 2**30,
            "gpus": [
                {"index": 0, "utilization_percent": 90, "memory_used_bytes": 40 * 2**30, "power_w": 500.0},
                {"index": 1, "utilization_percent": 70, "memory_used_bytes": 30 * 2**30, "power_w": 400.0},
            ],
        }
        for i in range(5)
    ]
    from bench.records import TelemetrySample

    series = _telemetry_series([TelemetrySample.from_row(r) for r in rows])
    assert series["gpu_util_percent"][0] == 80 and series["gpu_memory_mib"][0] == 70 * 1024
    assert series["gpu_power_w"][0] == 900.0
    cpu_only = _telemetry_series([TelemetrySample.from_row({k: v for k, v in r.items() if k != "gpus"}) for r in rows])
    run = {"label": "r", "stage_starts_s": [0.0]}
    with_gpu = Image.open(io.BytesIO(telemetry([{**run, "telemetry": series}])))
    without = Image.open(io.BytesIO(telemetry([{**run, "telemetry": cpu_only}])))
    assert with_gpu.height > 1.6 * without.height  # six panels against three
