import base64
import re

import pytest

from attnlab.core.errors import AttnlabError
from attnlab.core.plots import plt, save_figure
from attnlab.core.records import RunRecord, find_records
from attnlab.core.report import format_value, render_markdown, write_report


def _record(tmp_path, name, with_png):
    rec = RunRecord(name=name, title=f"{name} title", command=f"attnlab {name} run --seed 3", seed=3,
                    config={"window": 13, "executor": "kv"})
    rec.metrics.update({"tm_steps": 107, "tokens_per_s": 1.5e6})
    with rec.timed("run"):
        pass
    rec.add_table("sizes", ["machine", "params"], [["bb4", 25084], ["binc", 300]], command="attnlab machines list")
    if with_png:
        fig, ax = plt.subplots()
        ax.plot([0, 1], [1, 0])
        rec.add_figure(save_figure(fig, tmp_path / name / "curve.png").resolve(), "a falling line")
    return rec


def test_record_round_trip(tmp_path):
    rec = _record(tmp_path, "alpha", with_png=True)
    path = rec.save(tmp_path / "alpha" / "record.json")
    back = RunRecord.load(path)
    assert back.to_dict() == {**rec.to_dict(), "figures": [{"path": "curve.png", "caption": "a falling line",
                                                            "command": None}]}
    assert back.seed == 3 and back.env["versions"]["torch"]
    assert back.timings["run"] >= 0


def test_load_rejects_bad_files(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(AttnlabError, match="not valid JSON"):
        RunRecord.load(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text('{"schema": "something else"}')
    with pytest.raises(AttnlabError, match="not an attnlab run record"):
        RunRecord.load(tmp_path / "other.json")
    with pytest.raises(AttnlabError, match="record not found"):
        RunRecord.load(tmp_path / "absent.json")


def test_report_from_two_records_with_png(tmp_path):
    a = _record(tmp_path, "alpha", with_png=True)
    b = _record(tmp_path, "beta", with_png=False)
    b.status, b.error = "failed", "ValueError: boom"
    a.save(tmp_path / "alpha" / "record.json")
    b.save(tmp_path / "beta" / "record.json")
    (tmp_path / "unrelated.json").write_text('{"x": 1}')  # ignored: not a record
    records = find_records(tmp_path)
    assert [r.name for _, r in records] == ["alpha", "beta"]
    out = write_report(records, tmp_path / "report")
    html = out.read_text()
    # the PNG is embedded, byte for byte, so the page stands alone
    png = (tmp_path / "alpha" / "curve.png").read_bytes()
    assert base64.b64encode(png).decode() in html
    assert "src=\"curve.png\"" not in html
    for text in ("alpha title", "beta title", "attnlab alpha run --seed 3", "25,084", "ValueError: boom",
                 "[failed]", "[ok]", "attnlab machines list"):
        assert text in html
    md = (tmp_path / "report" / "index.md").read_text()
    assert md == render_markdown(records)
    assert "## beta title — failed" in md and "| tm_steps | 107 |" in md


def test_format_value():
    assert format_value(25084) == "25,084" and format_value(1234) == "1,234"
    assert format_value(0.5) == "0.5"
    assert format_value(1.5e6) == "1.5e+06"
    assert format_value(float("nan")) == "nan"
    assert re.fullmatch(r"1\.235", format_value(1.23456))


def test_a_column_of_floats_shares_its_decimals():
    from attnlab.core.report import column_decimals

    assert column_decimals([3.536, 0.8257, 10.38]) == 2
    assert column_decimals([17.33, 0.0006]) is None  # scales too far apart: each value alone
    assert column_decimals(["a", 1.5]) is None
    assert format_value({"4": 1, "8": 2}) == "4: 1, 8: 2" and format_value([1.0, 1.4594]) == "[1, 1.459]"
    assert format_value(0.5, decimals=3) == "0.500"
